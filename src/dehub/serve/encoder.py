"""The text encoder of ``dehub serve``: loaded and warmed at start, one thread, one torch thread.

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

import numpy as np

from ..datasets.encoder import embed_texts
from ..embed.encoders import OnnxEncoder

__all__ = ["TextEncoder"]

_log = logging.getLogger("dehub.serve")


class TextEncoder:
    """The bundled MiniLM on one thread of its own: torch (``dehub.datasets.encoder``), or its
    ONNX export (``onnx_dir``, written by :func:`dehub.embed.encoders.export_onnx`) run by
    ONNX Runtime with one intra-op thread — measured 2.3x faster per text than torch with
    one thread (16 ms vs 39 ms, median of 7 paired rounds, load 15-21 on 2 cores), same
    vectors to 1.3e-7."""

    def __init__(self, onnx_dir: str | None = None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dehub-encoder")
        self.onnx_dir = onnx_dir
        self._onnx: object | None = None
        self.loaded = False
        self.warm_seconds: float | None = None

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.onnx_dir is not None:
            if self._onnx is None:
                self._onnx = OnnxEncoder(self.onnx_dir, threads=1)
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
