"""What an index built from a ``dehub embed`` folder records about it (one pipeline).

``dehub build --gallery DIR`` on a folder written by ``dehub embed`` (or any
clip-retrieval / embedding-reader folder with ``metadata/``) keeps:

* the encoder and its settings, from the folder's ``dehub_embed.json``: the index's
  ``metadata["encoder"]`` (the model name ``dehub serve`` loads for text queries, e.g.
  ``sentence-transformers/all-MiniLM-L6-v2``) and ``metadata["embedding"]`` (model, dim,
  modality, shard size, input digest);
* the metadata columns (``url``, ``caption``, ``text``...), aligned with the gallery rows,
  as the index's item metadata (:meth:`dehub.Index.metadata_rows`,
  ``<index>.items.parquet``), which ``dehub serve`` answers with and ``dehub export``
  writes into the stores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._errors import InputError
from .._json import JSONReadError, read_json
from ..datasets.layouts import read_metadata

__all__ = ["embedding_folder_info", "build_records"]

_CONFIG = "dehub_embed.json"
_MAX_CONFIG_BYTES = 1 << 20
_KEEP = ("model", "dim", "modality", "n_items", "shard_size", "input_sha256")


def embedding_folder_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """The settings ``dehub embed`` recorded for the folder ``path`` (or its ``text_emb/`` /
    ``img_emb/`` sub-folder), or ``None`` when ``path`` is not a local ``dehub embed`` folder."""
    p = Path(os.fspath(path))
    for root in (p, p.parent):
        cfg = root / _CONFIG
        if cfg.is_file():
            if cfg.stat().st_size > _MAX_CONFIG_BYTES:
                raise InputError(f"{cfg}: {cfg.stat().st_size} bytes; a dehub embed record is under 1 MiB")
            try:
                data = read_json(cfg)
            except JSONReadError as exc:
                raise InputError(f"{cfg}: not valid JSON ({exc}); expected dehub embed's record") from None
            kind = data.get("kind") if isinstance(data, dict) else type(data).__name__
            if kind != "dehub.embed":
                raise InputError(f"{cfg}: not a dehub embed record (kind={kind!r})")
            return {k: data[k] for k in _KEEP if k in data}
    return None


def build_records(gallery: str | os.PathLike) -> tuple[dict[str, Any], Any]:
    """``(index metadata, item metadata table or None)`` that ``dehub build`` keeps for a
    gallery read from ``gallery`` (see the module docstring)."""
    meta: dict[str, Any] = {}
    info = embedding_folder_info(gallery) if Path(os.fspath(gallery)).exists() else None
    if info is not None:
        meta["encoder"] = info.get("model")
        meta["embedding"] = info
    table = None
    p = Path(os.fspath(gallery))
    if p.is_dir() and ((p / "metadata").is_dir() or (p.parent / "metadata").is_dir()):
        table = read_metadata(gallery)
    return meta, table
