"""Helpers of the serve tests (imported by conftest and the test modules)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_ITEMS, DIM = 600, 16


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build_index(path: Path, *, alpha: float = 0.75, method: str = "nnn", seed: int = 7, n: int = N_ITEMS):
    import dehub

    rng = np.random.default_rng(seed)
    gallery = unit_rows(rng, n, DIM)
    reference = unit_rows(rng, 2000, DIM)
    ids = rng.permutation(10 * n)[:n].astype(np.int64) * 3 + 1000  # external ids, not row numbers
    params = {"k": 8, "alpha": alpha} if method == "nnn" else {}
    index = dehub.Index.build(
        gallery,
        reference,
        method=method,
        ids=ids,
        keep_reference=True,
        metadata={"item_text": [f"item {int(i)}" for i in ids]},
        **params,
    )
    index.save(path)
    return index


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A real ``dehub serve`` on 127.0.0.1:port, stopped at teardown."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 120.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        src = str(Path(__file__).resolve().parents[2] / "src")
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = src + os.pathsep + full_env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dehub.cli",
                "serve",
                *args,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"dehub serve exited with {self.proc.returncode}: {self.proc.stdout.read()}"
                )
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dehub serve did not answer /health within {timeout} s")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stdout.read() if self.proc.stdout else ""
