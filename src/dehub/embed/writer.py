"""``embed``: inputs -> a clip-retrieval embedding folder, resumable shard by shard.

Layout written (the one clip-retrieval writes and :mod:`dehub.datasets.layouts` reads)::

    DIR/text_emb/text_emb_00000.npy, text_emb_00001.npy, ...   (or img_emb/img_emb_{i}.npy)
    DIR/metadata/metadata_00000.parquet, ...                   (id, text | path | url)

Shard numbers are zero-padded (:func:`dehub.datasets.shards.shard_name`, five digits or
more): embedding-reader, autofaiss and dehub read shards in file-name string order, which
is then the numeric order, so row ``i`` is the same item for all of them.
    DIR/dehub_embed.json                                 (model, dim, shard size, input digest)

Shard ``i`` holds rows ``i*shard_size ... (i+1)*shard_size - 1`` in input order; ``id``
is the row number. Each shard is written atomically (metadata first, then the ``.npy``,
both temporary file + rename): a shard whose ``.npy`` exists is finished. A rerun with the
same input, model and shard size skips finished shards, so a killed run loses at most the
shard it was encoding; a rerun with different settings is refused (a new ``-o`` is
needed), so shards of two models never mix.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._errors import InputError
from .._io import atomic_path
from .._json import read_json
from .._progress import progress_bar
from ..datasets.shards import shard_name
from .encoders import DEFAULT_MODEL, Encoder, get_encoder
from .inputs import read_inputs

__all__ = ["embed", "EmbedResult", "DEFAULT_SHARD_SIZE"]

DEFAULT_SHARD_SIZE = 100_000
_CONFIG = "dehub_embed.json"


@dataclass(frozen=True)
class EmbedResult:
    output: Path
    kind: str
    n_items: int
    dim: int
    shards_written: int
    shards_skipped: int


def _digest(items: list[str]) -> str:
    h = hashlib.sha256()
    for s in items:
        b = s.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _order_by_length(items: list[str]) -> np.ndarray:
    return np.argsort([len(s) for s in items], kind="stable")


def _refuse_other_run(out: Path, old: dict, config: dict) -> None:
    diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
    if diff:
        raise InputError(
            f"{out} holds an embedding run with other settings ({', '.join(f'{k}: {a!r} != {b!r}' for k, (a, b) in diff.items())}); "
            "resume with the same input, model and shard size, or choose a new -o"
        )


def _pad_legacy_names(emb_dir: Path, meta_dir: Path, prefix: str, paths: list[tuple[Path, Path]]) -> None:
    """Rename shards an earlier dehub wrote unpadded (``text_emb_3.npy``) to the padded
    names, so a resumed run neither re-encodes them nor leaves two copies of their rows."""
    for s, (npy, meta) in enumerate(paths):
        for old, new in ((emb_dir / f"{prefix}_{s}.npy", npy), (meta_dir / f"metadata_{s}.parquet", meta)):
            if old != new and old.is_file() and not new.exists():
                old.rename(new)


def _finished(npy: Path, meta: Path, rows: int, dim) -> bool:
    """A shard is finished when both files exist and the ``.npy`` has its full shape."""
    if not (npy.is_file() and meta.is_file()) or dim is None:
        return False
    try:
        return np.load(npy, mmap_mode="r").shape == (rows, int(dim))
    except (ValueError, OSError):
        return False


def embed(
    input,
    output: str | os.PathLike,
    *,
    model: str | None = None,
    encoder: Encoder | None = None,
    kind: str | None = None,
    column: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int = 64,
    device: str = "cpu",
    fp16: bool = False,
    progress: bool = True,
) -> EmbedResult:
    """Embed ``input`` (:mod:`dehub.embed.inputs`) into the clip-retrieval folder ``output``.

    ``model``: an encoder name (:func:`dehub.embed.get_encoder`; default the bundled
    MiniLM) or pass a ready ``encoder``. ``shard_size`` rows per shard; ``batch_size``
    rows per encoder call (texts sorted by length within a shard: less padding).
    """
    if shard_size < 1 or batch_size < 1:
        raise InputError(f"shard_size and batch_size must be >= 1; received {shard_size} and {batch_size}")
    kind, items, meta_cols = read_inputs(input, kind=kind, column=column)
    out = Path(output)
    cfg_path = out / _CONFIG
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"-o {out} is a file; expected a directory (new, or one this command wrote)")
    if out.is_dir() and any(out.iterdir()) and not cfg_path.is_file():
        raise FileExistsError(
            f"-o {out} is a non-empty directory not written by dehub embed; choose a new one"
        )
    # Everything that can refuse is checked before the model loads (loading takes minutes).
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(
            "dehub embed writes parquet metadata and needs pyarrow, in dehub's 'embed' extra: from a "
            "clone of dehub, pip install -e '.[embed]'"
        ) from exc
    early = {
        "modality": kind,
        "n_items": len(items),
        "shard_size": int(shard_size),
        "input_sha256": _digest(items),
    }
    old = read_json(cfg_path) if cfg_path.is_file() else None
    if old is not None and not isinstance(old, dict):
        raise InputError(
            f"{cfg_path}: expected the JSON object dehub embed writes; found {type(old).__name__}"
        )
    if old is not None:
        _refuse_other_run(out, old, early)
    prefix = "text_emb" if kind == "text" else "img_emb"
    emb_dir, meta_dir = out / prefix, out / "metadata"
    n_shards = -(-len(items) // shard_size)
    bounds = [(s * shard_size, min((s + 1) * shard_size, len(items))) for s in range(n_shards)]
    paths = [
        (
            emb_dir / shard_name(prefix, s, n_shards, ".npy"),
            meta_dir / shard_name("metadata", s, n_shards, ".parquet"),
        )
        for s in range(n_shards)
    ]
    if old is not None:
        _pad_legacy_names(emb_dir, meta_dir, prefix, paths)
    dim = old.get("dim") if old is not None else None
    done = [
        old is not None and _finished(npy, meta, hi - lo, dim) for (npy, meta), (lo, hi) in zip(paths, bounds)
    ]
    asked = "sentence-transformers/all-MiniLM-L6-v2" if model in (None, DEFAULT_MODEL) else str(model)
    if all(done) and old is not None and encoder is None and asked == old.get("model"):
        # nothing to encode with the same model: no model to load
        return EmbedResult(out, kind, len(items), int(old["dim"]), 0, n_shards)
    enc = encoder or get_encoder(model, device=device, fp16=fp16)
    if kind not in enc.modalities:
        raise InputError(
            f"encoder {enc.name!r} embeds {sorted(enc.modalities)}, not {kind}s; for images use "
            "open_clip:ARCH[:PRETRAINED] or a sentence-transformers CLIP model (clip-ViT-B-32)"
        )
    config = {"kind": "dehub.embed", "version": 1, "model": enc.name, "dim": int(enc.dim), **early}
    if old is not None:
        _refuse_other_run(out, old, config)
    else:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(cfg_path) as tmp:
            Path(tmp).write_text(json.dumps(config, indent=1, sort_keys=True), encoding="utf-8")
    emb_dir.mkdir(exist_ok=True)
    meta_dir.mkdir(exist_ok=True)
    written = skipped = 0
    todo = sum(hi - lo for (lo, hi), d in zip(bounds, done) if not d)  # the rate counts new rows only
    with progress_bar(total=todo, desc=f"embedding {kind}s", enable=progress, unit=kind) as bar:
        for s in range(n_shards):
            (lo, hi), (npy, meta) = bounds[s], paths[s]
            if done[s]:
                skipped += 1
                continue
            chunk = items[lo:hi]
            vectors = np.empty((hi - lo, enc.dim), dtype=np.float32)
            order = _order_by_length(chunk)
            for b in range(0, len(chunk), batch_size):
                rows = order[b : b + batch_size]
                batch = [chunk[i] for i in rows]
                vectors[rows] = (
                    enc.encode_texts(batch, batch_size)
                    if kind == "text"
                    else enc.encode_images(batch, batch_size)
                )
                bar.update(len(rows))
            table = pa.table(
                {"id": pa.array(np.arange(lo, hi), pa.int64()), **{k: v[lo:hi] for k, v in meta_cols.items()}}
            )
            with atomic_path(meta) as tmp:
                pq.write_table(table, tmp)
            with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
                np.save(fh, vectors)
            written += 1
    return EmbedResult(out, kind, len(items), int(enc.dim), written, skipped)
