"""Parameters come from the __init__ signature; unknown and inapplicable ones are errors."""

from __future__ import annotations

import pytest

import dehub
from dehub.methods import METHODS, InvalidParameterError, get_method
from dehub.methods._cli import method_params_from_args


def test_get_method_takes_every_signature_parameter():
    model = get_method("robust_nnn", engine="ivf", engine_params={"nprobe": 4})
    assert model.engine == "ivf" and model.engine_params == {"nprobe": 4}
    assert set(get_method("soft_nnn").get_params()) == {
        "k",
        "alpha",
        "temperature",
        "engine",
        "engine_params",
        "precision",
    }


def test_inapplicable_parameter_names_the_real_ones():
    with pytest.raises(
        InvalidParameterError, match=r"method 'plain' has no parameter 'k'; its parameters are: none"
    ):
        get_method("plain", k=3)
    with pytest.raises(TypeError, match=r"'csls' has no parameter 'alpha'; its parameters are: k"):
        get_method("csls", alpha=0.5)
    with pytest.raises(ValueError, match=r"has no parameter 'alhpa'; its parameters are: k, alpha, engine"):
        dehub.NNN().set_params(alhpa=0.5)


def test_misspelt_grid_key_is_an_error(rng, unit):
    g, r = unit(rng, 20, 8), unit(rng, 30, 8)
    for name in sorted(METHODS):
        cls = METHODS[name]
        with pytest.raises(InvalidParameterError, match="has no grid parameter 'alhpa'; its parameters are"):
            next(iter(cls().fit_grid(g, r, {"alhpa": [0.5]})))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_get_params_clone_round_trip(name):
    cls = METHODS[name]
    model = cls()
    params = model.get_params()
    assert list(params) == list(cls._get_param_names())
    twin = model.clone()
    assert type(twin) is cls and twin is not model and twin.get_params() == params
    assert cls(**params).get_params() == params
    # every parameter has a declared constraint, checked in one place
    assert set(cls._parameter_constraints) == set(params), name
    model._check_params()  # the defaults are valid


def test_clone_deep_copies_mutable_parameters():
    model = dehub.NNN(engine="ivf", engine_params={"nprobe": 2})
    twin = model.clone(alpha=0.1)
    twin.engine_params["nprobe"] = 8
    assert model.engine_params == {"nprobe": 2} and twin.alpha == 0.1


def test_cli_flags_come_from_the_signatures():
    import argparse

    from dehub.methods._cli import add_method_param_options

    parser = argparse.ArgumentParser()
    add_method_param_options(parser)
    args = parser.parse_args(["--alpha", "0.5", "--engine-params", '{"nprobe": 3}', "--dynamic", "true"])
    assert args.engine_params == {"nprobe": 3} and args.dynamic is True
    assert method_params_from_args(parser.parse_args(["--k", "4", "--alpha", "0.5"]), "robust_nnn") == {
        "k": 4,
        "alpha": 0.5,
    }
    with pytest.raises(
        InvalidParameterError,
        match=r"--alpha, --dynamic, --engine-params do not apply to method 'csls'; its options are: --k",
    ):
        method_params_from_args(args, "csls")
