"""Helpers of the serve tests (imported by conftest and the test modules)."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
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


_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/")


class ServerProcess:
    """A real ``dehub serve`` on 127.0.0.1, stopped at teardown.

    The server binds port 0 itself and prints the port it got (``listening on
    http://127.0.0.1:PORT/``): no port is picked here and bound later (no race between
    concurrent tests). Its output is collected by a reader thread (``output()``).
    """

    def __init__(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 180.0) -> None:
        src = str(Path(__file__).resolve().parents[2] / "src")
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = src + os.pathsep + full_env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dehub.cli", "serve", *args, "--host", "127.0.0.1", "--port", "0"],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._port: queue.Queue[int] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        try:
            self.port = self._port.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"dehub serve printed no port within {timeout} s: {self.output()}") from None
        if self.port == 0:
            self.stop()
            raise RuntimeError(f"dehub serve exited before listening: {self.output()}")
        self.url = f"http://127.0.0.1:{self.port}"
        import httpx

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dehub serve exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=60.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dehub serve did not answer /health within {timeout} s")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)
            m = _LISTENING.search(line)
            if m:
                self._port.put(int(m.group(1)))
        self._port.put(0)  # exited

    def output(self) -> str:
        return "".join(self._lines)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10)
        return self.output()
