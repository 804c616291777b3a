"""Load a user's own embeddings and relevance into dehub's paired containers.

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

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._json import JSONLimits, read_json, read_jsonl
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
    "read_npy",
    "row_hashes",
    "content_fingerprint",
    "count_shared_rows",
    "check_content_disjoint",
    "MAX_OVERLAP_SHARE",
]

#: Share of the smaller set's rows that two sets may share before
#: :func:`check_content_disjoint` refuses them (identical rows do occur by chance in real
#: data, e.g. a caption that appears in two splits; copies of a whole file do not).
MAX_OVERLAP_SHARE = 0.01

_NPY_MAGIC = b"\x93NUMPY"
#: One line of a pairs file; a Karpathy split file (dataset_coco.json is about 140 MB).
_PAIR_LIMITS = JSONLimits(max_bytes=16 << 20, max_depth=8, max_values=1 << 20)
_KARPATHY_LIMITS = JSONLimits(max_bytes=2 << 30, max_depth=16, max_values=1 << 28)
_ZIP_MAGIC = b"PK\x03\x04"


def read_npy(path: str | Path, name: str, *, mmap: bool = True) -> np.ndarray:
    """A numeric ``.npy`` array, with one clear error for anything else.

    Text/CSV files, ``.npz`` archives and object (pickled) arrays are refused with a
    message naming the file and what it holds; the file is never unpickled.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{name} file not found: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"{name}: {p} is a directory; expected a .npy file")
    with open(p, "rb") as fh:
        head = fh.read(8)
    if head.startswith(_ZIP_MAGIC):
        raise ValueError(
            f"{name} file {p} is an .npz archive; expected a single .npy array (save it with np.save)"
        )
    if not head.startswith(_NPY_MAGIC):
        kind = "an empty file" if not head else f"a file beginning with {head!r}"
        raise ValueError(
            f"{name} file {p} is not a .npy array ({kind}); expected an array saved with "
            "numpy.save (text or CSV files are not read as arrays: convert with "
            "np.save(path, np.loadtxt(text_file)))"
        )
    try:
        arr = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc) or "Python objects" in str(exc):
            raise ValueError(
                f"{name} file {p} holds Python objects (an object-dtype array), not numbers; "
                "expected a numeric array (save it with np.save(path, arr.astype(np.float32)))"
            ) from None
        raise ValueError(f"{name} file {p} is not a readable .npy array: {exc}") from None
    except (EOFError, OSError) as exc:
        raise ValueError(f"{name} file {p} is truncated or unreadable: {exc}") from None
    return arr


def row_hashes(x, *, block_rows: int = 65536) -> np.ndarray:
    """A uint64 hash of every row (after a cast to float32), read in row blocks.

    Rows with equal float32 values get equal hashes; different rows collide with
    probability about 2**-64 per pair (a random odd multiplier per 64-bit word, summed
    mod 2**64). :func:`count_shared_rows` confirms every hash match on the rows
    themselves, so the overlap it reports is exact.
    """
    n, d = int(x.shape[0]), int(x.shape[1])
    words = -(-d // 2)  # two float32 per uint64 word
    rng = np.random.default_rng(0x5EED)
    mult = rng.integers(1, 2**63, size=words, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    out = np.empty(n, dtype=np.uint64)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        block = np.zeros((stop - start, 2 * words), dtype=np.float32)
        block[:, :d] = np.asarray(x[start:stop], dtype=np.float32)
        block += 0.0  # -0.0 -> +0.0: equal values, equal bytes
        w = block.view(np.uint64)
        with np.errstate(over="ignore"):
            out[start:stop] = (w * mult).sum(axis=1, dtype=np.uint64)
    return out


def content_fingerprint(x, *, n_sample: int = 256) -> str:
    """A cheap fingerprint of an embedding matrix: shape + hash of evenly sampled rows."""
    import hashlib

    n = int(x.shape[0])
    rows = np.unique(np.linspace(0, max(n - 1, 0), num=min(n, n_sample)).astype(np.int64))
    h = hashlib.sha256(repr(tuple(int(s) for s in x.shape)).encode())
    h.update(row_hashes(np.asarray(x[rows]) if n else np.zeros((0, x.shape[1]))).tobytes())
    return h.hexdigest()[:16]


def count_shared_rows(x, y) -> tuple[int, np.ndarray]:
    """(number of rows of ``x`` equal to some row of ``y``, up to 5 of those rows of ``x``)."""
    hx, hy = row_hashes(x), row_hashes(y)
    cand = np.flatnonzero(np.isin(hx, hy))
    if cand.size == 0:
        return 0, cand
    order = np.argsort(hy, kind="stable")
    sorted_h = hy[order]
    confirmed = []
    for i in cand.tolist():  # confirm every hash match on the values (exact)
        lo, hi = np.searchsorted(sorted_h, hx[i], "left"), np.searchsorted(sorted_h, hx[i], "right")
        xi = np.asarray(x[i], dtype=np.float32)
        if any(np.array_equal(xi, np.asarray(y[int(j)], dtype=np.float32)) for j in order[lo:hi]):
            confirmed.append(i)
    return len(confirmed), np.asarray(confirmed[:5], dtype=np.int64)


def check_content_disjoint(
    sets: dict[str, object],
    pairs: list[tuple[str, str, str]],
    *,
    allow_overlap: bool = False,
    max_share: float = MAX_OVERLAP_SHARE,
) -> dict[str, int]:
    """Refuse data sets that share rows: ``pairs`` are ``(name_1, name_2, why it matters)``.

    An overlap above ``max_share`` of the smaller set's rows is a ``ValueError`` unless
    ``allow_overlap``; a smaller one (or an allowed one) is a warning. Returns
    ``{"name_1 ~ name_2": shared rows}`` for every pair checked.
    """
    import warnings

    counts = {}
    for a, b, why in pairs:
        x, y = sets[a], sets[b]
        n, examples = count_shared_rows(x, y)
        counts[f"{a} ~ {b}"] = n
        if n == 0:
            continue
        smaller = min(int(x.shape[0]), int(y.shape[0]))  # type: ignore[attr-defined]
        msg = f"{a} and {b} share {n} identical rows (e.g. rows {examples.tolist()} of {a}); {why}"
        if n > max_share * smaller and not allow_overlap:
            raise ValueError(
                msg
                + ". Provide disjoint data, or pass --allow-overlap (allow_overlap=True) if this is intended."
            )
        warnings.warn(msg, UserWarning, stacklevel=2)
    return counts


def load_embeddings(path: str | Path, *, mmap: bool = True, name: str = "embeddings"):
    """A 2-D float ``.npy`` array (memory-mapped unless ``mmap=False``), or a shard directory.

    A directory of ``.npy`` shards (``img_emb_0.npy``, ``img_emb_1.npy``, ...) is read as
    one :class:`~dehub.datasets.ShardedArray` (rows in natural file-name order).
    """
    p = Path(path)
    arr: Any
    if p.is_dir():
        from .shards import ShardedArray

        try:
            arr = ShardedArray(p)
        except (FileNotFoundError, ValueError) as exc:
            raise ValueError(f"{name} directory {p}: {exc}") from None
    else:
        arr = read_npy(p, name, mmap=mmap)
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
        raw = read_npy(p, name, mmap=False)
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
        for line_no, obj in read_jsonl(p, limits=_PAIR_LIMITS, strict=False):
            try:
                q, g = obj["query_id"], obj["gallery_id"]
            except (KeyError, TypeError, IndexError) as exc:
                raise ValueError(
                    f"{p}:{line_no}: expected a JSON object with 'query_id' and "
                    f"'gallery_id'; received {json.dumps(obj)[:80]!r} ({exc!r})"
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
