"""The text encoder of ``dehub serve``: loaded and warmed at start, one thread, ONNX where available.

A 2-thread torch encode of one text took 5.6 s against 0.33 s with one thread on the
2-core machine under load (issue 22): torch's intra-op pool fights the engine and the
other processes for the cores. The encoder therefore runs on its own single thread
(``dehub-encoder``, a bounded pool of one: requests queue there, never on the event loop)
with torch limited to one intra-op thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np

from ..datasets.encoder import embed_texts
from ..embed.encoders import OnnxEncoder, export_onnx
from ..engine.tuning import tuning_path

__all__ = ["TextEncoder", "EncoderKind", "onnx_cache_dir"]

_log = logging.getLogger("dehub.serve")


EncoderKind = Literal["auto", "torch", "onnx"]


def onnx_cache_dir() -> Path:
    """Where ``kind="auto"`` keeps its ONNX export of the bundled MiniLM (next to dehub's
    other cached measurements: ``$DEHUB_CACHE_DIR``, else ``$XDG_CACHE_HOME/dehub``, else
    ``~/.cache/dehub``)."""
    return tuning_path().parent / "minilm-onnx"


class TextEncoder:
    """The bundled MiniLM on one thread of its own: its ONNX export run by ONNX Runtime with
    one intra-op thread, or torch (``dehub.datasets.encoder``) with one thread.

    ONNX measured faster per text than torch (16 ms vs 39 ms, median of 7 paired rounds,
    load 15-21 on 2 cores; the page's whole text query: docs/serve.md), same vectors to
    1.3e-7. ``onnx_dir``: an export written by :func:`dehub.embed.encoders.export_onnx`.
    ``kind="auto"`` (default) uses ``onnx_dir``, else the export cached in
    :func:`onnx_cache_dir` (written there at the first start where onnxruntime, onnx and
    torch are installed), else torch; ``"onnx"`` insists (an error says what is missing);
    ``"torch"`` never uses ONNX. :attr:`backend` says which one runs.
    """

    def __init__(self, onnx_dir: str | None = None, *, kind: EncoderKind = "auto") -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dehub-encoder")
        self.onnx_dir = onnx_dir
        self.kind = kind
        self._onnx: object | None = None
        self.backend: str | None = None  # "onnx" or "torch" once loaded
        self.loaded = False
        self.warm_seconds: float | None = None

    def _onnx_encoder(self) -> object:
        if self.onnx_dir is not None:
            return OnnxEncoder(self.onnx_dir, threads=1)
        cached = onnx_cache_dir()
        if not (cached / "model.onnx").is_file():
            import onnxruntime  # noqa: F401  (no export where it could not run)

            _log.warning("dehub serve: exporting the MiniLM encoder to ONNX once, into %s", cached)
            export_onnx(cached)
        return OnnxEncoder(cached, threads=1)

    def _choose(self) -> None:
        if self.kind == "onnx" or (self.kind == "auto" and self.onnx_dir is not None):
            self._onnx, self.backend = self._onnx_encoder(), "onnx"
        elif self.kind == "auto":
            try:
                self._onnx, self.backend = self._onnx_encoder(), "onnx"
            except (ImportError, OSError, RuntimeError, ValueError) as exc:
                _log.warning("dehub serve: the ONNX encoder is not available (%s); using torch", exc)
                self.backend = "torch"
        else:
            self.backend = "torch"

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.backend is None:
            self._choose()
        if self._onnx is not None:
            self.loaded = True
            return np.asarray(self._onnx.encode_texts(list(texts)), dtype=np.float32)  # type: ignore[attr-defined]
        if not self.loaded:
            try:
                import torch

                torch.set_num_threads(1)
            except ImportError:  # embed_texts names what is missing
                pass
        out = embed_texts(texts, progress=False, batch_size=64)
        self.loaded = True
        return out

    async def encode_async(self, texts: list[str]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._encode, list(texts))

    def warm_up(self) -> None:
        """Load the model and encode once (the first encode allocates), on the encoder thread."""

        def run() -> None:
            t0 = time.perf_counter()
            self._encode(["warm up the encoder"])
            self.warm_seconds = time.perf_counter() - t0

        try:
            self._executor.submit(run).result()
        except Exception as exc:  # an uninstalled encoder answers 501 per request, not at start
            _log.warning("dehub serve: the text encoder could not be warmed up: %s", exc)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
