"""The shape of the library (docs/architecture.md): layers, imports, one opening function."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dehub
from dehub import Index, IndexFormatError, _extras
from dehub.evaluation import EvaluationResult, check_benchmark, protocol, run_evaluation
from dehub.evaluation.findings import duplicate_groups
from dehub.evaluation.inputs import gallery_bank_for, method_parameters
from dehub.evaluation.result import EvaluationResult as Result

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(ROOT / "scripts"))
import import_audit  # noqa: E402


def test_function_level_imports_are_only_optional_extras():
    report = import_audit.audit(SRC)
    assert report["function_level_not_extras"] == [], (
        "function-level imports outside dehub._extras: " + "; ".join(report["function_level_not_extras"])
    )
    assert report["function_level_internal"] == 0
    # and no import hidden from the audit: dehub._extras is the one place that imports by name
    assert report["dynamic_imports"] == []


def test_no_import_cycle():
    assert import_audit.audit(SRC)["cycles"] == []


def test_the_heavy_feature_modules_load_through_the_extras_guard():
    with pytest.raises(LookupError, match=r"'dehub.index' is not in dehub._extras.FEATURE_MODULES"):
        _extras.load_feature("dehub.index", "a test")
    for module, needs in _extras.FEATURE_MODULES.items():
        assert module.startswith("dehub.") and set(needs) <= set(_extras.OPTIONAL_PACKAGES)
    # importing the serve package, or the whole CLI, does not load the FastAPI app
    code = "import sys, dehub.serve, dehub.cli; print('fastapi' in sys.modules, 'dehub.serve.app' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(SRC)}
    )
    assert out.stdout.split() == ["False", "False"]


def test_dehub_serve_without_the_serve_extra_names_it():
    """The lazily loaded app goes through the extras guard: a missing FastAPI is a user error."""
    code = "import sys; sys.modules['fastapi'] = None; from dehub.cli import main; sys.exit(main(['serve']))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(SRC)},
    )
    assert out.returncode != 0
    assert "fastapi" in out.stderr and "serve" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_import_dehub_loads_only_the_core():
    code = (
        "import sys, json, dehub; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('dehub', 'ray', 'fastapi', 'torch', 'faiss', 'matplotlib', 'sentence_transformers', 'lancedb'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(SRC)}
    )
    loaded = json.loads(out.stdout)
    features = (
        "dehub.evaluation",
        "dehub.export",
        "dehub.serve",
        "dehub.embed",
        "dehub.studies",
        "dehub.cli",
        "dehub.distributed",  # dehub.load reads run directories with dehub.rundir, not the runner
    )
    assert [m for m in loaded if m.startswith(features)] == []
    assert [m for m in loaded if not m.startswith("dehub")] == []  # no heavy optional package either


@pytest.mark.parametrize("contract", ["layers", "acyclic", "evaluation"])
def test_import_contracts_are_kept(contract):
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(lint).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    out = subprocess.run(
        [lint, "--no-cache", "--config", str(ROOT / ".importlinter"), "--contract", contract],
        capture_output=True,
        text=True,
        cwd=SRC,
    )
    assert "KEPT" in out.stdout and "BROKEN" not in out.stdout, out.stdout[-3000:]


def test_public_evaluation_import_paths_still_work():
    """The split of evaluation/protocol.py keeps the names users imported from it."""
    assert protocol.EvaluationResult is EvaluationResult is Result
    assert protocol.check_benchmark is check_benchmark and protocol.run_evaluation is run_evaluation
    assert protocol.gallery_bank_for is gallery_bank_for and protocol.method_parameters is method_parameters
    assert protocol.duplicate_groups is duplicate_groups
    assert duplicate_groups(np.array([[1, 2], [3, 4], [1, 2]])) == [[0, 2]]


def test_dehub_load_opens_files_and_refuses_what_is_not_an_index(tmp_path):
    rng = np.random.default_rng(0)
    g = rng.standard_normal((20, 4)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    path = Index.build(g, g, k=2).save(tmp_path / "i.dehub")
    assert isinstance(dehub.load(path), Index)
    with pytest.raises(FileNotFoundError, match="index file not found"):
        dehub.load(tmp_path / "missing.dehub")
    with pytest.raises(ValueError, match="is a directory without manifest.json"):
        dehub.load(tmp_path)
    with pytest.raises(IndexFormatError, match=r"is a directory.*dehub.load\(path\)"):
        Index.load(tmp_path)
