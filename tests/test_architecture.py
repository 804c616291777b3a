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
from dehub import Index, IndexFormatError

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(ROOT / "scripts"))
import import_audit  # noqa: E402

#: Files other branches are rewriting (serve into routers, export/embed stores, evaluation's
#: split, the low-precision engine): their function-level imports of dehub or the standard
#: library are theirs to remove. Every other file holds none.
PENDING = (
    "dehub/serve/",
    "dehub/export/",
    "dehub/embed/",
    "dehub/evaluation/",
    "dehub/engine/exact.py",
    "dehub/engine/lowp.py",
)


def test_function_level_imports_are_only_optional_extras():
    report = import_audit.audit(SRC)
    outside = [w for w in report["function_level_not_extras"] if not w.startswith(PENDING)]
    assert outside == [], "function-level imports outside dehub._extras: " + "; ".join(outside)


def test_no_import_cycle_outside_the_pending_files():
    cycles = import_audit.audit(SRC)["cycles"]
    pending = [{"dehub.engine.exact", "dehub.engine.lowp"}, {"dehub.serve.app", "dehub.serve.clip_compat"}]
    assert [c for c in cycles if set(c) not in pending] == []


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
    )
    assert [m for m in loaded if m.startswith(features)] == []
    assert [m for m in loaded if not m.startswith("dehub")] == []  # no heavy optional package either


def test_layers_contract_is_kept():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(lint).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    out = subprocess.run(
        [lint, "--no-cache", "--config", str(ROOT / ".importlinter"), "--contract", "layers"],
        capture_output=True,
        text=True,
        cwd=SRC,
    )
    assert "KEPT" in out.stdout and "BROKEN" not in out.stdout, out.stdout[-3000:]


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
