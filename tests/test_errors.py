"""Structured errors (dehub._errors): parts kept, each surface's spelling, picklable."""

from __future__ import annotations

import pickle

import pytest

from dehub._errors import (
    PYTHON,
    Command,
    InputError,
    InputTypeError,
    InputWarning,
    MissingExtraError,
    Param,
    Surface,
    UnknownIdsError,
    UserError,
)

_CLI = Surface(
    param=lambda name, value: (
        f"--{name.replace('_', '-')}" + ("" if value == "True" else f" {value!s}".replace("'", ""))
    ),
    install=lambda extra: f"clone+{extra}",
    command=lambda c: c.cli,
)


def _error() -> InputError:
    return InputError(
        "the index keeps no reference",
        expected="the reference set",
        received="none",
        fix="Pass {reference}, keep it with {keep}, or {l2} / {none}; or {build}",
        params={
            "reference": "r",
            "keep": Param("keep_reference", "True"),
            "l2": Param("normalize", "'l2'"),
            "none": Param("normalize", "'none'"),
            "build": Command("Index.build", "dehub build"),
        },
    )


def test_each_surface_spells_the_same_parts():
    err = _error()
    assert str(err) == (
        "the index keeps no reference; expected the reference set; received none. Pass reference=r, "
        "keep it with keep_reference=True, or normalize='l2' / normalize='none'; or Index.build"
    )
    assert err.render(_CLI) == (
        "the index keeps no reference; expected the reference set; received none. Pass --reference r, "
        "keep it with --keep-reference, or --normalize l2 / --normalize none; or dehub build"
    )
    assert (err.what, err.expected, err.received) == (
        "the index keeps no reference",
        "the reference set",
        "none",
    )
    assert err.render(PYTHON) == str(err)


def test_errors_cross_a_process_boundary_with_their_parts():
    for err in (_error(), UnknownIdsError("2 ids are not in the index", expected="ids of items")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and back.render(_CLI) == err.render(_CLI)
    missing = MissingExtraError("reading URLs", "fsspec", "io", instead="use {path}", params={"path": None})
    back = pickle.loads(pickle.dumps(missing))
    assert back.render(_CLI) == missing.render(_CLI) and back.name == "fsspec"


def test_the_kinds_are_the_builtin_kinds_callers_catch():
    assert isinstance(InputError("x"), ValueError)
    assert isinstance(InputTypeError("x"), TypeError) and isinstance(InputTypeError("x"), ValueError)
    with pytest.raises(KeyError) as info:
        raise UnknownIdsError("3 ids are not in the index")
    assert str(info.value) == "3 ids are not in the index"  # not KeyError's quoted repr
    missing = MissingExtraError("this engine", "FAISS", "faiss", module="faiss")
    assert isinstance(missing, ImportError) and missing.name == "faiss"
    assert "pip install dehub[faiss]" in str(missing) and "clone+faiss" in missing.render(_CLI)
    for err in (InputError("x"), missing):
        assert isinstance(err, UserError)


def test_every_user_facing_error_class_of_dehub_is_a_user_error():
    from dehub._format import IndexFormatError
    from dehub._json import JSONReadError, SealError
    from dehub.datasets.wordnet import DatasetIntegrityError
    from dehub.item_metadata import ItemMetadataError
    from dehub.methods._params import InvalidParameterError
    from dehub.methods.base import StaleFitError
    from dehub.rundir import ManifestError

    for cls in (
        IndexFormatError,
        JSONReadError,
        SealError,
        ManifestError,
        ItemMetadataError,
        InvalidParameterError,
        StaleFitError,
        DatasetIntegrityError,
    ):
        err = cls("something about the input")
        assert isinstance(err, UserError) and str(err) == "something about the input", cls


def test_a_warning_keeps_its_parts():
    w = InputWarning("rows are not unit-norm.", fix="Pass {normalize}", params={"normalize": "'l2'"})
    assert str(w) == "rows are not unit-norm. Pass normalize='l2'"
    assert w.render(_CLI) == "rows are not unit-norm. Pass --normalize l2"


def test_a_subject_is_spelled_by_each_surface_in_front_of_what():
    """The k clamp: one warning, the parameter in each surface's words (`dehub search`
    calls k `--top`: tests/test_cli.py)."""
    w = InputWarning("exceeds the 40 gallery items", subject=Param("k", "500"))
    assert str(w) == "k=500 exceeds the 40 gallery items"
    assert w.render(_CLI) == "--k 500 exceeds the 40 gallery items"
    assert pickle.loads(pickle.dumps(w)).render(_CLI) == w.render(_CLI)
