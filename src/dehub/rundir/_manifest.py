"""What a distributed run writes, how a restart validates it, and how an index is read back.

Layout of the output directory (a path every worker can write: local disk for a local
cluster, a shared file system such as NFS/EFS/Lustre on a real one)::

    OUT/manifest.json                  written last by the driver: the whole run
    OUT/parts/part-00007.json          one sidecar per part, written last by its worker
    OUT/parts/part-00007.<stat>.npy    the part's statistics (e.g. topk_scores, topk_ids)
    OUT/claims/part-00007.<pid>.<tag>  one empty file per attempt (counts retries)
    OUT/ids.npy                        external gallery ids, when given

Every file is written atomically (:func:`dehub._io.atomic_path`) and read back by the
bounded JSON reader (:func:`dehub._json.read_json`). The manifest is sealed
(:class:`dehub._json.Seal`: kind, format version 2, ``manifest_sha256`` over every other
field), so a hand edit (``alpha`` 0.75 -> 9) or a version-1 manifest (no checksum) is
refused. A part's sidecar is its commit record: it names the run, the input rows, and the SHA-256 of each statistic file,
so a restarted job keeps exactly the parts whose sidecar and files validate and
recomputes the rest. A part is a fixed row range of one input file, so rows can never be
counted twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError
from .._io import atomic_path, atomic_write_text, sha256_file
from .._json import JSONLimits, JSONReadError, Seal, SealError, read_json
from .._shards import ShardedArray
from .._version import __version__
from ..index import Index
from ..methods import get_method
from ._inputs import Part, Source, list_sources, open_matrix

__all__ = [
    "MANIFEST",
    "save_npy",
    "FORMAT_VERSION",
    "ManifestError",
    "run_key",
    "write_part",
    "validate_part",
    "claim",
    "count_claims",
    "write_manifest",
    "read_manifest",
    "load_index",
    "is_manifest_dir",
]

MANIFEST = "manifest.json"
FORMAT_VERSION = 2
_KIND = "dehub.distributed.manifest"
_SEAL = Seal(_KIND, FORMAT_VERSION, checksum_key="manifest_sha256")
#: A manifest lists every part (about 40 values each) and its input files.
_MANIFEST_LIMITS = JSONLimits(max_bytes=256 << 20, max_depth=32, max_values=1 << 24)
_PART_LIMITS = JSONLimits(max_bytes=1 << 20, max_depth=16, max_values=1 << 12)


class ManifestError(InputError):
    """A manifest directory that is missing, of another kind, or inconsistent with its files."""


def run_key(config: dict[str, Any]) -> str:
    """A digest of everything that determines the statistics (method, parameters, engine,
    reference files): parts written under another key are recomputed, never mixed."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _parts_dir(out: Path) -> Path:
    return out / "parts"


def save_npy(path: Path, arr: np.ndarray) -> str:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
    return sha256_file(path)


def write_part(
    out: Path, part: Part, key: str, stats: dict[str, np.ndarray], *, seconds: float
) -> dict[str, Any]:
    """Write one part's statistics, then its sidecar (the commit record); return the record."""
    pdir = _parts_dir(out)
    files = {}
    for name, arr in stats.items():
        if arr.shape[0] != part.rows:
            raise InputError(
                f"{part.describe()}: statistic {name!r} has {arr.shape[0]} rows, expected {part.rows}"
            )
        fname = f"{part.name}.{name}.npy"
        digest = save_npy(pdir / fname, arr)
        files[name] = {"file": fname, "sha256": digest, "shape": list(arr.shape), "dtype": arr.dtype.str}
    record = {
        "part": part.number,
        "run": key,
        "input": part.key(),
        "rows": part.rows,
        "first": part.first,
        "files": files,
        "seconds": round(float(seconds), 4),
        "pid": os.getpid(),
    }
    atomic_write_text(pdir / f"{part.name}.json", json.dumps(record, sort_keys=True))
    return record


def validate_part(out: Path, part: Part, key: str, *, check_files: bool = True) -> dict[str, Any] | None:
    """The part's record if its sidecar matches this run and input and its files check out."""
    pdir = _parts_dir(out)
    try:
        record = read_json(pdir / f"{part.name}.json", limits=_PART_LIMITS)
    except (OSError, JSONReadError):
        return None
    if not isinstance(record, dict) or record.get("run") != key or record.get("input") != part.key():
        return None
    if record.get("rows") != part.rows or not isinstance(record.get("files"), dict):
        return None
    for meta in record["files"].values():
        path = pdir / str(meta.get("file"))
        if not path.is_file() or not meta.get("shape") or meta["shape"][0] != part.rows:
            return None
        if check_files and sha256_file(path) != meta.get("sha256"):
            return None
    return record


def claim(out: Path, part: Part) -> None:
    """Record one attempt at a part (an empty file named by part, pid and a random tag)."""
    cdir = out / "claims"
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / f"{part.name}.{os.getpid()}.{secrets.token_hex(4)}").touch()


def count_claims(out: Path) -> dict[str, int]:
    """Attempts per part name in this run's claims directory."""
    counts: dict[str, int] = {}
    cdir = out / "claims"
    if cdir.is_dir():
        for f in cdir.iterdir():
            name = f.name.split(".", 1)[0]
            counts[name] = counts.get(name, 0) + 1
    return counts


def write_manifest(
    out: Path,
    *,
    config: dict[str, Any],
    key: str,
    gallery: list[Source],
    reference: list[Source],
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    ids_sha256: str | None,
) -> Path:
    """Write ``OUT/manifest.json`` (atomically), after every part has committed."""
    records = sorted(records, key=lambda r: int(r["part"]))
    expected = 0
    for r in records:  # the parts tile the gallery: no gap, no overlap, no duplicate
        if int(r["first"]) != expected:
            raise ManifestError(f"part {r['part']} starts at row {r['first']}, expected {expected}")
        expected += int(r["rows"])
    manifest = {
        "created_by": f"dehub {__version__}",
        "run": key,
        **config,
        "n_rows": expected,
        "gallery": [s.as_dict() for s in gallery],
        "reference_files": [s.as_dict() for s in reference],
        "statistics": sorted(records[0]["files"]) if records else [],
        "ids": None if ids_sha256 is None else {"file": "ids.npy", "sha256": ids_sha256},
        "parts": records,
        "summary": summary,
    }
    path = out / MANIFEST
    atomic_write_text(path, json.dumps(_SEAL.apply(manifest), indent=1, sort_keys=True))
    return path


def is_manifest_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding a distributed run's manifest."""
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).is_file()


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a run directory, checked for kind and version."""
    p = Path(path)
    mpath = p / MANIFEST if p.is_dir() else p
    try:
        manifest = read_json(mpath, limits=_MANIFEST_LIMITS)
    except FileNotFoundError:
        raise ManifestError(
            f"{p}: no {MANIFEST}; expected the output directory of dehub.distributed.fit "
            "(an unfinished run has parts but no manifest: rerun it to finish)"
        ) from None
    except JSONReadError as exc:
        raise ManifestError(str(exc)) from None
    try:
        return _SEAL.check(manifest, source=str(mpath))
    except SealError as exc:
        raise ManifestError(str(exc)) from None


def _statistic_view(paths: list[Path]) -> Any:
    """The statistic of every part as one array: memory-mapped shards for 2-D statistics."""
    if all(np.load(p, mmap_mode="r").ndim == 2 for p in paths):
        return ShardedArray(paths)
    return np.concatenate([np.load(p, mmap_mode="r") for p in paths], axis=0)


def load_index(manifest_dir: str | os.PathLike, *, verify: bool = True) -> Any:
    """A :class:`dehub.Index` over a distributed run's output, without loading it whole.

    The gallery stays in the run's input files (memory-mapped when local: nothing is
    copied). The statistics are memory-mapped part by part and handed to the method's
    ``from_statistics``, which holds them as arrays (NNN: ``n x k x 12`` bytes, 192 MB
    for 1M items at k=16). ``verify`` checks each part file's SHA-256 against the
    manifest (reads the statistics once).
    """

    root = Path(manifest_dir)
    manifest = read_manifest(root)
    pdir = _parts_dir(root)
    parts = sorted(manifest["parts"], key=lambda r: int(r["part"]))
    names = manifest["statistics"]
    files: dict[str, list[Path]] = {n: [] for n in names}
    for r in parts:
        for n in names:
            meta = r["files"].get(n)
            if meta is None:
                raise ManifestError(f"{root}: part {r['part']} has no statistic {n!r}")
            path = pdir / meta["file"]
            if not path.is_file():
                raise ManifestError(f"{root}: missing part file {path}")
            if verify and sha256_file(path) != meta["sha256"]:
                raise ManifestError(
                    f"{root}: part file {path} does not match its checksum (corrupt or changed)"
                )
            files[n].append(path)
    gallery_sources = [Source(**s) for s in manifest["gallery"]]
    current = list_sources([s.url for s in gallery_sources], "gallery")
    for old, new in zip(gallery_sources, current):
        if (old.rows, old.dim, old.fingerprint) != (new.rows, new.dim, new.fingerprint):
            raise ManifestError(
                f"{root}: the gallery file {old.url} changed after the run (size or time differs)"
            )
    gallery = open_matrix(gallery_sources)
    stats = {n: _statistic_view(p) for n, p in files.items()}
    # row_decomposable (the runner refused any other method): its from_statistics hook
    model: Any = get_method(manifest["method"], **manifest["params"])
    try:
        model = model.from_statistics(gallery, stats, n_reference=int(manifest["n_reference"]))
    except (KeyError, ValueError) as exc:
        raise ManifestError(
            f"{root}: stored statistics do not fit method {manifest['method']!r}: {exc}"
        ) from None
    ids = None
    if manifest.get("ids"):
        ids_path = root / manifest["ids"]["file"]
        if verify and sha256_file(ids_path) != manifest["ids"]["sha256"]:
            raise ManifestError(f"{root}: {ids_path} does not match its checksum")
        ids = np.load(ids_path, allow_pickle=False)
    metadata = {"distributed_run": str(root), "run": manifest["run"], "engine": manifest.get("engine")}
    if manifest.get("gallery_bank"):
        metadata["gallery_bank_files"] = [entry[0] for entry in manifest["gallery_bank"]]
    return Index(model, ids=ids, metadata=metadata, n_reference=int(manifest["n_reference"]))
