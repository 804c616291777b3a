"""``dehub build --method NAME`` for every registered method, with its own options."""

from __future__ import annotations

import numpy as np
import pytest

import dehub
from dehub.cli import main
from dehub.methods import METHODS

OPTIONS = {
    "csls": ["--k", "5"],
    "qbnorm": ["--beta", "10"],
    "qbnorm_dis": ["--beta", "10", "--k", "2"],
    "dbnorm": ["--beta1", "10", "--beta2", "5"],
    "dbnorm_dis": ["--beta1", "10", "--beta2", "5", "--dynamic", "true"],
    "dn": ["--lambda", "0.25"],
    "robust_nnn": ["--k", "8", "--statistic", "median"],
    "soft_nnn": ["--k", "8", "--temperature", "0.1"],
    "nnn": [],
    "plain": [],
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_build_and_search_every_method(data, tmp_path, name, capsys):
    g, r, q = tmp_path / "g.npy", tmp_path / "r.npy", tmp_path / "q.npy"
    np.save(g, data["gallery"])
    np.save(r, data["reference"])
    np.save(q, data["queries"])
    out = tmp_path / f"{name}.dehub"
    argv = ["build", "--gallery", str(g), "--reference", str(r), "-o", str(out), "--method", name]
    assert main(argv + OPTIONS.get(name, [])) == 0
    index = dehub.Index.load(out)
    assert index.model.name == name
    params = index.model.get_params()
    opts = OPTIONS.get(name, [])
    for flag, value in zip(opts[::2], opts[1::2]):
        key = "lambda_" if flag == "--lambda" else flag[2:]
        assert str(params[key]).lower() == value or float(params[key]) == float(value)
    # untouched parameters keep the method's defaults (e.g. QB-Norm's k=1, not NNN's 16)
    defaults = type(index.model)().get_params()
    given = {("lambda_" if f == "--lambda" else f[2:]) for f in opts[::2]}
    for key, value in defaults.items():
        if key not in given:
            assert params[key] == value
    expect = index.model.search(data["queries"], 4)
    assert main(["search", str(out), "--queries", str(q), "--top", "4", "-o", str(tmp_path / "res.npz")]) == 0
    res = np.load(tmp_path / "res.npz")
    np.testing.assert_array_equal(res["ids"], expect[1])


def test_bad_value_is_a_clear_cli_error(data, tmp_path, capsys):
    g, r = tmp_path / "g.npy", tmp_path / "r.npy"
    np.save(g, data["gallery"])
    np.save(r, data["reference"])
    rc = main(
        [
            "build",
            "--gallery",
            str(g),
            "--reference",
            str(r),
            "-o",
            str(tmp_path / "x.dehub"),
            "--method",
            "qbnorm",
            "--beta",
            "-3",
        ]
    )
    assert rc == 2
    assert "beta must be a finite real number > 0" in capsys.readouterr().err
