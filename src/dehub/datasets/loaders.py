"""Load a user's own embeddings and relevance into dehub's paired containers.

One module per concern: :mod:`~dehub.datasets.npy` (embedding files),
:mod:`~dehub.datasets.overlap` (content overlap between sets),
:mod:`~dehub.datasets.pairs` (ids, relevance pairs, paired splits); this module builds
whole benchmarks from them (user files, Karpathy splits) and re-exports their names.

Formats (documented in ``docs/evaluation.md``):

* **Embeddings**: ``.npy`` float16/32/64 arrays of shape (n, d), memory-mapped by default,
  or a directory of ``.npy`` shards (the clip-retrieval layout, read as one
  :class:`~dehub.datasets.ShardedArray`).
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
that overlap the test ids, files that are not ``.npy`` arrays (a text or CSV file gets
that message, not numpy's ``allow_pickle`` advice), and **content overlap**: the
validation queries or the reference set sharing rows with the test queries, found by
hashing every row (:func:`row_hashes`, :func:`check_content_disjoint`) whatever the file
names; ``allow_overlap=True`` (``dehub eval --allow-overlap``) turns that error into a
warning for users who mean it. Queries without any relevant item are kept (never dropped);
the evaluation applies its documented ``no_positive`` policy and reports their count.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from .._errors import InputError
from .._json import JSONLimits, read_json
from .base import PairedBenchmark, PairedSplit
from .npy import load_embeddings, read_npy
from .overlap import (
    MAX_OVERLAP_SHARE,
    check_content_disjoint,
    content_fingerprint,
    count_shared_rows,
    row_hashes,
)
from .pairs import check_disjoint, load_ids, load_paired_split, load_relevance, read_pairs

__all__ = [
    "load_embeddings",
    "load_ids",
    "read_pairs",
    "load_relevance",
    "load_paired_split",
    "load_file_benchmark",
    "load_karpathy_benchmark",
    "check_disjoint",
    "read_npy",
    "row_hashes",
    "content_fingerprint",
    "count_shared_rows",
    "check_content_disjoint",
    "MAX_OVERLAP_SHARE",
]

#: A Karpathy split file (dataset_coco.json is about 140 MB).
_KARPATHY_LIMITS = JSONLimits(max_bytes=2 << 30, max_depth=16, max_values=1 << 28)


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
    allow_overlap: bool = False,
) -> PairedBenchmark:
    """A one-direction benchmark (``a2b`` only) from query/gallery/reference ``.npy`` files.

    Side ``a`` holds the queries, side ``b`` the gallery; the reference split has only
    an ``a`` side (the reference queries), so only direction ``"a2b"`` can be run.
    With both ``query_ids`` and ``val_query_ids`` given, validation queries must not
    share ids with test queries. Whatever the ids, the validation queries and the
    reference set must not share rows with the test queries (content hashes, see
    :func:`check_content_disjoint`; ``allow_overlap=True`` makes that a warning).
    Embedding arguments may be ``.npy`` files or shard directories.
    """
    test, tqa, tgb = load_paired_split(queries, gallery, pairs, a_ids=query_ids, b_ids=gallery_ids, mmap=mmap)
    val, vqa, vgb = load_paired_split(
        val_queries, val_gallery, val_pairs, a_ids=val_query_ids, b_ids=val_gallery_ids, mmap=mmap
    )
    if query_ids and val_query_ids:
        check_disjoint(tqa, vqa, "test and validation queries")
    ref = load_embeddings(reference, mmap=mmap, name="reference embeddings")
    sets = {
        "the test queries": test.a,
        "the validation queries": val.a,
        "the reference set": ref,
        "the test gallery": test.b,
        "the validation gallery": val.b,
    }
    overlap = check_content_disjoint(
        sets,
        [
            (
                "the validation queries",
                "the test queries",
                "hyperparameters would be chosen on test queries",
            ),
            (
                "the reference set",
                "the test queries",
                "the correction would be fitted on the test queries themselves (transductive)",
            ),
        ],
        allow_overlap=allow_overlap,
    )
    fingerprints = {k: content_fingerprint(v) for k, v in sets.items()}
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
            "fingerprints": fingerprints,
            "shared_rows": overlap,
            "allow_overlap": allow_overlap,
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
    allow_overlap: bool = False,
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
    data = read_json(p, limits=_KARPATHY_LIMITS, strict=False)
    images = data.get("images") if isinstance(data, dict) else None
    if not images:
        raise InputError(f"{p}: expected a JSON object with a non-empty 'images' list")
    if not 0 < reference_fraction <= 1:
        raise InputError(f"reference_fraction must be in (0, 1]; received {reference_fraction}")
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
        raise InputError(
            f"{p} lists {len(images)} images but the image embeddings have {img.shape[0]} rows; "
            "expected one row per image, in the JSON's order"
        )
    n_sent = [len(im.get("sentids", im.get("sentences", []))) for im in images]
    total = int(sum(n_sent))
    if caption_order == "file":
        if cap.shape[0] != total:
            raise InputError(
                f"{p} lists {total} captions but the caption embeddings have {cap.shape[0]} "
                "rows; expected one row per caption, image by image in the JSON's order"
            )
        starts = np.concatenate([[0], np.cumsum(n_sent)[:-1]]).astype(np.int64)
        cap_rows = [np.arange(s, s + c, dtype=np.int64) for s, c in zip(starts, n_sent)]
    elif caption_order == "sentid":
        cap_rows = [np.asarray(im["sentids"], dtype=np.int64) for im in images]
        mx = max((int(r.max()) for r in cap_rows if r.size), default=-1)
        if mx >= cap.shape[0]:
            raise InputError(f"{p} has sentid {mx} but the caption embeddings have only {cap.shape[0]} rows")
    else:
        raise InputError(f"caption_order must be 'file' or 'sentid'; received {caption_order!r}")
    split_of = np.array([im.get("split", "") for im in images])

    def make(image_rows: np.ndarray, label: str) -> PairedSplit:
        if image_rows.size == 0:
            raise InputError(
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
    test, val, ref = make(test_rows, "test"), make(val_rows, "validation"), make(ref_rows, "reference")
    overlap = check_content_disjoint(
        {
            "the test captions": test.a,
            "the validation captions": val.a,
            "the reference captions": ref.a,
            "the test images": test.b,
            "the validation images": val.b,
            "the reference images": ref.b,
        },
        [
            ("the validation captions", "the test captions", "hyperparameters would be chosen on test"),
            ("the validation images", "the test images", "hyperparameters would be chosen on test"),
            ("the reference captions", "the test captions", "the correction would see the test queries"),
            ("the reference images", "the test images", "the correction would see the test queries"),
        ],
        allow_overlap=allow_overlap,
    )
    return PairedBenchmark(
        name=name or p.stem.replace("dataset_", ""),
        test=test,
        validation=val,
        reference=ref,
        a_name="caption",
        b_name="image",
        metadata={
            "source": str(p),
            "reference_fraction": reference_fraction,
            "seed": seed,
            "caption_order": caption_order,
            "shared_rows": overlap,
            "allow_overlap": allow_overlap,
        },
    )
