"""Load a user's own embeddings and relevance into dehub's paired containers.

Formats (documented in ``docs/evaluation.md``):

* **Embeddings**: ``.npy`` float16/32/64 arrays of shape (n, d), memory-mapped by default.
* **Ids** (optional, one per embedding row): ``.npy`` 1-D int or str array, or a text
  file with one id per line. Without ids, the id of a row is its row number.
* **Pairs / relevance**: CSV with a header holding ``query_id`` and ``gallery_id``
  columns (one relevant pair per line; other columns ignored), or JSONL with one object
  per line ``{"query_id": ..., "gallery_id": ...}`` where ``gallery_id`` may also be a
  list. Ids are compared as strings (``7`` in a CSV matches the int id 7 of a ``.npy``).
* **Karpathy split JSON** (``dataset_coco.json`` / ``dataset_flickr30k.json``):
  ``{"images": [{"split": "train"|"restval"|"val"|"test", "sentids": [...],
  "sentences": [...], ...}, ...]}`` with image embeddings in the order of ``images`` and
  caption embeddings in the order the captions appear (image by image, sentence by
  sentence; or by ``sentid`` with ``caption_order="sentid"``).

Errors name the file, what was expected and what was found: relevance ids absent from
the gallery, duplicate ids, embedding/id count mismatches, empty splits, validation ids
that overlap the test ids. Queries without any relevant item are kept (never dropped);
the evaluation applies its documented ``no_positive`` policy and reports their count.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from ..relevance import Relevance
from .base import PairedBenchmark, PairedSplit

__all__ = [
    "load_embeddings",
    "load_ids",
    "read_pairs",
    "load_relevance",
    "load_paired_split",
    "load_file_benchmark",
    "load_karpathy_benchmark",
    "check_disjoint",
]


def load_embeddings(path: str | Path, *, mmap: bool = True, name: str = "embeddings") -> np.ndarray:
    """A 2-D float ``.npy`` array (memory-mapped unless ``mmap=False``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{name} file not found: {p}")
    try:
        arr = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{name} file {p} is not a plain numeric .npy array: {exc}") from None
    if arr.ndim != 2 or arr.dtype.kind != "f":
        raise ValueError(
            f"{name} file {p} must hold a 2-D float array (n, d); received shape {arr.shape}, "
            f"dtype {arr.dtype}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} file {p} has no rows; expected at least one embedding")
    return arr


def load_ids(path: str | Path, n: int, *, name: str = "ids") -> np.ndarray:
    """Row ids as a 1-D array of ``n`` unique strings (from .npy or one-per-line text)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{name} file not found: {p}")
    if p.suffix == ".npy":
        raw = np.load(p, allow_pickle=False)
        if raw.ndim != 1:
            raise ValueError(f"{name} file {p} must hold a 1-D array; received shape {raw.shape}")
        ids = np.array([str(x) for x in raw.tolist()], dtype=object)
    else:
        lines = p.read_text(encoding="utf-8").splitlines()
        ids = np.array([ln.strip() for ln in lines if ln.strip()], dtype=object)
    return _check_unique(ids, n, f"{name} ({p})")


def _check_unique(ids: np.ndarray, n: int, name: str) -> np.ndarray:
    if ids.shape[0] != n:
        raise ValueError(f"{name}: {ids.shape[0]} ids for {n} embedding rows; expected one id per row")
    uniq, counts = np.unique(ids.astype(str), return_counts=True)
    if uniq.size != ids.size:
        dup = uniq[counts > 1][:5].tolist()
        raise ValueError(f"{name}: ids must be unique; duplicated e.g. {dup}")
    return ids


def _default_ids(n: int) -> np.ndarray:
    return np.array([str(i) for i in range(n)], dtype=object)


def read_pairs(path: str | Path) -> tuple[list[str], list[str]]:
    """(query ids, gallery ids) of every pair in a CSV or JSONL pairs file, as strings."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pairs file not found: {p}")
    qs: list[str] = []
    gs: list[str] = []
    if p.suffix in (".jsonl", ".json", ".ndjson"):
        with open(p, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    q, g = obj["query_id"], obj["gallery_id"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ValueError(
                        f"{p}:{line_no}: expected a JSON object with 'query_id' and "
                        f"'gallery_id'; received {line.strip()[:80]!r} ({exc})"
                    ) from None
                for gi in g if isinstance(g, list) else [g]:
                    qs.append(str(q))
                    gs.append(str(gi))
    else:
        with open(p, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            if "query_id" not in fields or "gallery_id" not in fields:
                raise ValueError(
                    f"{p}: a CSV pairs file needs a header with 'query_id' and 'gallery_id' "
                    f"columns; received columns {fields}"
                )
            for row in reader:
                qs.append(str(row["query_id"]).strip())
                gs.append(str(row["gallery_id"]).strip())
    if not qs:
        raise ValueError(f"pairs file {p} holds no pairs")
    return qs, gs


def _rows_of(ids: np.ndarray, wanted: Sequence[str], what: str, source: str) -> np.ndarray:
    keys = ids.astype(str)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    w = np.asarray(wanted, dtype=str)
    pos = np.searchsorted(sorted_keys, w)
    pos_c = np.minimum(pos, max(sorted_keys.size - 1, 0))
    found = (pos < sorted_keys.size) & (sorted_keys[pos_c] == w)
    if not found.all():
        missing = list(dict.fromkeys(w[~found].tolist()))
        raise ValueError(
            f"{source}: {int((~found).sum())} pairs name {what} ids that are not among the "
            f"{what} ids, e.g. {missing[:5]}. Check that the pairs file and the {what} "
            "embeddings/ids belong together."
        )
    return order[pos_c].astype(np.int64)


def load_relevance(
    pairs_path: str | Path,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
) -> Relevance:
    """A :class:`Relevance` from a pairs file; ids are mapped to rows via the id arrays."""
    qs, gs = read_pairs(pairs_path)
    q = _rows_of(np.asarray(query_ids, dtype=object), qs, "query", str(pairs_path))
    g = _rows_of(np.asarray(gallery_ids, dtype=object), gs, "gallery", str(pairs_path))
    return Relevance.from_pairs(q, g, len(query_ids), len(gallery_ids))


def load_paired_split(
    a: str | Path,
    b: str | Path,
    pairs: str | Path,
    *,
    a_ids: str | Path | None = None,
    b_ids: str | Path | None = None,
    mmap: bool = True,
) -> tuple[PairedSplit, np.ndarray, np.ndarray]:
    """A split from files: side ``a`` = queries, side ``b`` = gallery; returns (split, a ids, b ids)."""
    ea = load_embeddings(a, mmap=mmap, name="query embeddings")
    eb = load_embeddings(b, mmap=mmap, name="gallery embeddings")
    if ea.shape[1] != eb.shape[1]:
        raise ValueError(
            f"query embeddings {a} have dimension {ea.shape[1]} but gallery embeddings {b} "
            f"have {eb.shape[1]}; were they produced by the same encoder?"
        )
    ia = load_ids(a_ids, ea.shape[0], name="query ids") if a_ids else _default_ids(ea.shape[0])
    ib = load_ids(b_ids, eb.shape[0], name="gallery ids") if b_ids else _default_ids(eb.shape[0])
    rel = load_relevance(pairs, ia, ib)
    p = np.stack([rel.query_rows(), rel.indices], axis=1)
    return PairedSplit(a=ea, b=eb, pairs=p), ia, ib


def check_disjoint(ids_1: np.ndarray, ids_2: np.ndarray, what: str) -> None:
    """Raise if two id sets overlap (e.g. validation and test queries)."""
    common = np.intersect1d(np.asarray(ids_1, dtype=str), np.asarray(ids_2, dtype=str))
    if common.size:
        raise ValueError(
            f"{what} overlap: {common.size} ids occur in both, e.g. {common[:5].tolist()}. "
            "Hyperparameters must be chosen on data disjoint from the test split."
        )


def load_file_benchmark(
    *,
    queries: str | Path,
    gallery: str | Path,
    pairs: str | Path,
    reference: str | Path,
    val_queries: str | Path,
    val_gallery: str | Path,
    val_pairs: str | Path,
    query_ids: str | Path | None = None,
    gallery_ids: str | Path | None = None,
    val_query_ids: str | Path | None = None,
    val_gallery_ids: str | Path | None = None,
    name: str = "user",
    mmap: bool = True,
) -> PairedBenchmark:
    """A one-direction benchmark (``a2b`` only) from query/gallery/reference ``.npy`` files.

    Side ``a`` holds the queries, side ``b`` the gallery; the reference split has only
    an ``a`` side (the reference queries), so only direction ``"a2b"`` can be run.
    With both ``query_ids`` and ``val_query_ids`` given, validation queries must not
    share ids with test queries (likewise for the galleries when both id files exist).
    """
    test, tqa, tgb = load_paired_split(queries, gallery, pairs, a_ids=query_ids, b_ids=gallery_ids, mmap=mmap)
    val, vqa, vgb = load_paired_split(
        val_queries, val_gallery, val_pairs, a_ids=val_query_ids, b_ids=val_gallery_ids, mmap=mmap
    )
    if query_ids and val_query_ids:
        check_disjoint(tqa, vqa, "test and validation queries")
    ref = load_embeddings(reference, mmap=mmap, name="reference embeddings")
    empty_b = np.zeros((0, ref.shape[1]), dtype=np.float32)
    ref_split = PairedSplit(a=ref, b=empty_b, pairs=np.zeros((0, 2), dtype=np.int64))
    return PairedBenchmark(
        name=name,
        test=test,
        validation=val,
        reference=ref_split,
        a_name="query",
        b_name="gallery",
        metadata={
            "source": "files",
            "queries": str(queries),
            "gallery": str(gallery),
            "pairs": str(pairs),
            "reference": str(reference),
        },
    )


def load_karpathy_benchmark(
    json_path: str | Path,
    image_embeddings: str | Path | np.ndarray,
    caption_embeddings: str | Path | np.ndarray,
    *,
    reference_fraction: float = 0.2,
    seed: int = 0,
    caption_order: Literal["file", "sentid"] = "file",
    test_split: str = "test",
    validation_split: str = "val",
    reference_splits: Sequence[str] = ("train", "restval"),
    name: str | None = None,
) -> PairedBenchmark:
    """The paper's COCO/Flickr30k protocol from a Karpathy-split JSON and your embeddings.

    Side ``a`` = captions, side ``b`` = images: ``a2b`` is text-to-image retrieval (one
    relevant image per caption), ``b2a`` image-to-text (about five relevant captions per
    image). The reference split is a ``reference_fraction`` share
    of the ``reference_splits`` images (the paper uses 20% of the training set), drawn
    with ``seed``, with all their captions.

    Parameters
    ----------
    json_path : ``dataset_coco.json`` / ``dataset_flickr30k.json``
    image_embeddings : .npy path or array, one row per entry of ``images`` (file order)
    caption_embeddings : .npy path or array, one row per caption: in file order
        (image by image) or, with ``caption_order="sentid"``, row = ``sentid``.
    """
    p = Path(json_path)
    if not p.is_file():
        raise FileNotFoundError(f"Karpathy split file not found: {p}")
    data = json.loads(p.read_text(encoding="utf-8"))
    images = data.get("images") if isinstance(data, dict) else None
    if not images:
        raise ValueError(f"{p}: expected a JSON object with a non-empty 'images' list")
    if not 0 < reference_fraction <= 1:
        raise ValueError(f"reference_fraction must be in (0, 1]; received {reference_fraction}")
    img = (
        image_embeddings
        if isinstance(image_embeddings, np.ndarray)
        else load_embeddings(image_embeddings, name="image embeddings")
    )
    cap = (
        caption_embeddings
        if isinstance(caption_embeddings, np.ndarray)
        else load_embeddings(caption_embeddings, name="caption embeddings")
    )
    if img.shape[0] != len(images):
        raise ValueError(
            f"{p} lists {len(images)} images but the image embeddings have {img.shape[0]} rows; "
            "expected one row per image, in the JSON's order"
        )
    n_sent = [len(im.get("sentids", im.get("sentences", []))) for im in images]
    total = int(sum(n_sent))
    if caption_order == "file":
        if cap.shape[0] != total:
            raise ValueError(
                f"{p} lists {total} captions but the caption embeddings have {cap.shape[0]} "
                "rows; expected one row per caption, image by image in the JSON's order"
            )
        starts = np.concatenate([[0], np.cumsum(n_sent)[:-1]]).astype(np.int64)
        cap_rows = [np.arange(s, s + c, dtype=np.int64) for s, c in zip(starts, n_sent)]
    elif caption_order == "sentid":
        cap_rows = [np.asarray(im["sentids"], dtype=np.int64) for im in images]
        mx = max((int(r.max()) for r in cap_rows if r.size), default=-1)
        if mx >= cap.shape[0]:
            raise ValueError(f"{p} has sentid {mx} but the caption embeddings have only {cap.shape[0]} rows")
    else:
        raise ValueError(f"caption_order must be 'file' or 'sentid'; received {caption_order!r}")
    split_of = np.array([im.get("split", "") for im in images])

    def make(image_rows: np.ndarray, label: str) -> PairedSplit:
        if image_rows.size == 0:
            raise ValueError(
                f"{p}: the {label} split is empty (no images with split in the requested "
                f"names); splits present: {sorted(set(split_of.tolist()))}"
            )
        counts = np.array([cap_rows[i].size for i in image_rows], dtype=np.int64)
        crow = np.concatenate([cap_rows[i] for i in image_rows])
        pairs = np.stack(
            [
                np.arange(crow.size, dtype=np.int64),
                np.repeat(np.arange(image_rows.size, dtype=np.int64), counts),
            ],
            axis=1,
        )
        return PairedSplit(a=np.asarray(cap[crow]), b=np.asarray(img[image_rows]), pairs=pairs)

    test_rows = np.flatnonzero(split_of == test_split)
    val_rows = np.flatnonzero(split_of == validation_split)
    ref_all = np.flatnonzero(np.isin(split_of, list(reference_splits)))
    check_disjoint(test_rows, val_rows, f"the {test_split!r} and {validation_split!r} image sets")
    if ref_all.size:
        rng = np.random.default_rng(seed)
        n_ref = max(1, int(round(reference_fraction * ref_all.size)))
        ref_rows = np.sort(rng.choice(ref_all, size=n_ref, replace=False))
    else:
        ref_rows = ref_all
    return PairedBenchmark(
        name=name or p.stem.replace("dataset_", ""),
        test=make(test_rows, "test"),
        validation=make(val_rows, "validation"),
        reference=make(ref_rows, "reference"),
        a_name="caption",
        b_name="image",
        metadata={
            "source": str(p),
            "reference_fraction": reference_fraction,
            "seed": seed,
            "caption_order": caption_order,
        },
    )
