import json

import numpy as np
import pytest

from dehub._json import (
    JSONLimits,
    JSONReadError,
    Seal,
    SealError,
    jsonable,
    parse_json,
    read_json,
    read_jsonl,
)


def test_numpy_values_become_json():
    obj = {1: np.float32(0.5), "a": (np.int64(3), [np.bool_(True)]), "x": np.arange(3), "s": "t"}
    out = jsonable(obj)
    assert out == {"1": 0.5, "a": [3, [True]], "x": [0, 1, 2], "s": "t"}
    json.dumps(out)  # no numpy type left
    assert type(out["a"][0]) is int and type(out["1"]) is float


def test_limits_are_checked_before_parsing_and_name_the_source():
    small = JSONLimits(max_bytes=100, max_depth=3, max_values=5)
    with pytest.raises(JSONReadError, match=r"^doc: JSON of 101 bytes; expected at most 100 bytes$"):
        parse_json(b" " * 101, source="doc", limits=small)
    with pytest.raises(JSONReadError, match=r"^doc: JSON nested 4 levels deep; expected at most 3 levels$"):
        parse_json("[[[[]]]]", source="doc", limits=small)
    with pytest.raises(JSONReadError, match=r"^doc: JSON of up to 7 values; expected at most 5 values$"):
        parse_json("[1,2,3,4,5,6]", source="doc", limits=small)
    assert parse_json("[1,2,3,4]", source="doc", limits=small) == [1, 2, 3, 4]


def test_brackets_commas_and_escaped_quotes_inside_strings_do_not_count():
    tricky = '{"a": "[[[[,,,,\\"[[[[", "b": "\\\\", "c": ["]]]]"]}'
    limits = JSONLimits(max_bytes=1000, max_depth=2, max_values=5)
    assert parse_json(tricky, source="s", limits=limits) == {"a": '[[[[,,,,"[[[[', "b": "\\", "c": ["]]]]"]}


def test_depth_is_measured_across_scan_steps_without_recursion():
    deep = "[" * 1_000_000 + "]" * 1_000_000  # 2 MB: several scan steps
    with pytest.raises(JSONReadError, match="JSON nested 1000000 levels deep; expected at most 64"):
        parse_json(deep, source="deep", limits=JSONLimits(max_bytes=4 << 20))
    ok = '["' + "x" * 600_000 + '\\\\"]'  # a backslash run ending exactly at a string's end
    assert parse_json(ok, source="ok") == ["x" * 600_000 + "\\"]


def test_strict_refuses_constants_overflow_and_duplicates_lenient_does_not():
    for text, what in (
        ('{"x": NaN}', "NaN"),
        ('{"x": 1e400}', "overflows"),
        ('{"a": 1, "a": 2}', "duplicate"),
    ):
        with pytest.raises(JSONReadError, match=f"^t is not valid JSON: .*{what}"):
            parse_json(text, source="t")
    assert parse_json('{"a": 1, "a": 2}', source="t", strict=False) == {"a": 2}


def test_read_json_checks_the_file_size_before_reading(tmp_path):
    (tmp_path / "big.json").write_bytes(b"[" + b"0," * 100 + b"0]")
    with pytest.raises(JSONReadError, match=r"big\.json: a file of 203 bytes; expected at most 64 bytes"):
        read_json(tmp_path / "big.json", limits=JSONLimits(max_bytes=64))
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")


def test_read_jsonl_bounds_each_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n\n{"a": "' + b"y" * 500 + b'"}\n{"a": 3}\n')
    with pytest.raises(JSONReadError, match=r"x\.jsonl:3: a line longer than 100 bytes"):
        list(read_jsonl(p, limits=JSONLimits(max_bytes=100)))
    assert [n for n, _ in read_jsonl(p)] == [1, 3, 4]


def test_seal_detects_edits_other_kinds_and_downgrades():
    seal = Seal("dehub.test", 3, checksum_key="test_sha256")
    doc = seal.apply({"alpha": 0.75, "k": 16})
    assert doc["kind"] == "dehub.test" and doc["format_version"] == 3
    assert seal.check(json.loads(json.dumps(doc)), source="d") == doc
    with pytest.raises(SealError, match=r"^d: its content does not match its own checksum \(test_sha256\)"):
        seal.check({**doc, "alpha": 9}, source="d")
    old = {k: v for k, v in doc.items() if k != "test_sha256"} | {"format_version": 2}
    with pytest.raises(SealError, match=r"^d: format version 2; this dehub reads version 3 only \(older"):
        seal.check(old, source="d")
    with pytest.raises(SealError, match=r"^d: has no test_sha256"):
        seal.check({k: v for k, v in doc.items() if k != "test_sha256"}, source="d")
    with pytest.raises(ValueError, match=r"^d: holds 'other'; expected a 'dehub\.test' description"):
        seal.check({**doc, "kind": "other"}, source="d", error=ValueError)


def test_params_option_nested_100k_deep_is_a_usage_error(capsys):
    """Before: RecursionError traceback from json.loads in the option's parser."""
    from dehub.cli import main

    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(SystemExit) as exc:
        main(
            ["build", "--gallery", "g.npy", "--reference", "r.npy", "-o", "x.dehub", "--engine-params", deep]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "JSON nested 100000 levels deep; expected at most 16 levels" in err and "Traceback" not in err
