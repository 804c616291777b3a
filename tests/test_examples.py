"""The examples in examples/ run and print what the README says they show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(name: str) -> str:
    out = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_quickstart_fits_searches_and_round_trips():
    text = _run("quickstart.py")
    assert "identical results: True" in text
    r1 = {
        line.split(":")[0].strip(): float(line.split("R@1")[1].split()[0])
        for line in text.splitlines()
        if "R@1" in line
    }
    assert r1["NNN"] > r1["plain"]  # planted hubs: the correction must help


def test_plain_faiss_serves_the_exported_index():
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install dehub[faiss])")
    assert "same top-5: True" in _run("serve_with_plain_faiss.py")
