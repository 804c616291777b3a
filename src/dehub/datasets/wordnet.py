"""The bundled WordNet 3.0 reverse-dictionary benchmark (definition <-> lemma).

Each unit is a WordNet 3.0 noun synset. Side ``a`` ("definition") holds its gloss with
the usage examples removed and the synset's own lemmas masked as ``___``; side ``b``
("lemma") holds the distinct lemma strings of the split (underscores -> spaces,
lower-cased). Gloss ``i`` and lemma ``j`` are a pair when ``j`` is a lemma of the synset
of ``i``: synonyms give several lemmas per gloss and polysemous strings several glosses
per lemma, so relevance is multi-positive in both directions.

Splits (disjoint by synset, drawn with a fixed seed): test 5,000 synsets, validation
2,000, reference 20,000. A lemma *string* may occur in several splits (as a lemma of
different synsets); see docs/datasets.md.

The package ships the derived text and float16 all-MiniLM-L6-v2 embeddings, so loading
needs only numpy. Every file is checked against the sha256 in ``manifest.json``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .._errors import UserError
from .._io import sha256_file
from .._json import JSONLimits, JSONReadError, parse_json, read_json
from .base import PairedBenchmark, PairedSplit

__all__ = [
    "DATA_DIR",
    "FORMAT_VERSION",
    "DatasetIntegrityError",
    "load_wordnet_benchmark",
    "wordnet_manifest",
]

DATA_DIR = Path(__file__).resolve().parent / "data" / "wordnet"
FORMAT_VERSION = 1
#: The bundled texts (3.5 MB decompressed); the bound keeps a corrupt file from ballooning.
_TEXT_LIMITS = JSONLimits(max_bytes=256 << 20, max_depth=16, max_values=1 << 24)
SPLITS = ("test", "validation", "reference")
SIDES = ("definition", "lemma")

_REBUILD = (
    "Reinstall dehub, or rebuild the data from WordNet 3.0 (Debian package "
    "wordnet-base) with: PYTHONPATH=src python scripts/build_wordnet_benchmark.py "
    "(needs the embed extra: pip install -e '.[embed]' in the dehub clone)"
)


class DatasetIntegrityError(UserError, RuntimeError):
    """A bundled data file is missing, corrupt, or of an unknown format version."""


def wordnet_manifest(data_dir: str | Path | None = None) -> dict:
    """The parsed ``manifest.json`` of the benchmark (counts, seed, encoder, sha256s)."""
    path = Path(data_dir if data_dir is not None else DATA_DIR) / "manifest.json"
    if not path.is_file():
        raise DatasetIntegrityError(f"WordNet benchmark manifest missing: {path}. {_REBUILD}")
    try:
        manifest = read_json(path)
    except JSONReadError as exc:
        raise DatasetIntegrityError(
            f"WordNet benchmark manifest {path} is not valid JSON ({exc}). {_REBUILD}"
        ) from exc
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise DatasetIntegrityError(
            f"WordNet benchmark manifest {path} has format_version {version!r}; this "
            f"version of dehub reads format_version {FORMAT_VERSION}. {_REBUILD}"
        )
    return manifest


def _check_file(data_dir: Path, name: str, manifest: dict, verify: bool) -> Path:
    path = data_dir / name
    entry = manifest["files"].get(name)
    if entry is None:
        raise DatasetIntegrityError(
            f"WordNet benchmark: {name} is not listed in {data_dir / 'manifest.json'}. {_REBUILD}"
        )
    if not path.is_file():
        raise DatasetIntegrityError(
            f"WordNet benchmark file missing: {path} (expected sha256 {entry['sha256']}). {_REBUILD}"
        )
    if verify:
        received = sha256_file(path)
        if received != entry["sha256"]:
            raise DatasetIntegrityError(
                f"WordNet benchmark file corrupt: {path}\n"
                f"  expected sha256 {entry['sha256']} ({entry['bytes']} bytes)\n"
                f"  received sha256 {received} ({path.stat().st_size} bytes)\n"
                f"{_REBUILD}"
            )
    return path


def _load_embeddings(data_dir: Path, names: list[str], manifest: dict, verify: bool) -> np.ndarray:
    parts = []
    for name in names:
        path = _check_file(data_dir, name, manifest, verify)
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:  # unreadable header, or an object array
            raise DatasetIntegrityError(
                f"WordNet benchmark file {path} is not a readable .npy array ({exc}). {_REBUILD}"
            ) from exc
        parts.append(arr)
    emb = np.concatenate(parts, axis=0).astype(np.float32)
    # float16 storage perturbs the unit norms by ~1e-3: re-normalize in float32.
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), np.finfo(np.float32).tiny)
    return emb


def load_wordnet_benchmark(*, verify: bool = True, data_dir: str | Path | None = None) -> PairedBenchmark:
    """Load the bundled WordNet reverse-dictionary benchmark.

    Parameters
    ----------
    verify : bool
        Check the sha256 of every file against ``manifest.json`` (about 60 MB to hash;
        a fraction of a second). Missing files are reported either way.
    data_dir : path, optional
        Directory holding ``manifest.json`` and the data files; defaults to the copy
        shipped inside the package.

    Returns
    -------
    PairedBenchmark
        ``name="wordnet-reverse-dictionary"``, ``a_name="definition"``,
        ``b_name="lemma"``; splits ``test``/``validation``/``reference`` with float32,
        L2-normalized 384-d embeddings (stored as float16, re-normalized after the
        conversion), texts in ``a_text``/``b_text`` and int64 ``pairs``.
        ``metadata`` holds the manifest (``"manifest"``), the WordNet synset offsets of
        each split's definitions (``"synsets"``) and the ``"mask_token"``.

    Raises
    ------
    DatasetIntegrityError
        A file is missing or its sha256 differs from the manifest (the message gives
        the expected and received digests and how to rebuild).
    """
    data_dir = Path(data_dir if data_dir is not None else DATA_DIR)
    manifest = wordnet_manifest(data_dir)

    text_path = _check_file(data_dir, manifest["text_file"], manifest, verify)
    try:
        with gzip.open(text_path, "rb") as fh:
            text = parse_json(fh.read(_TEXT_LIMITS.max_bytes + 1), source=str(text_path), limits=_TEXT_LIMITS)
    except (OSError, EOFError, JSONReadError) as exc:
        raise DatasetIntegrityError(
            f"WordNet benchmark file {text_path} is not readable gzip JSON ({exc}). {_REBUILD}"
        ) from exc

    splits = {}
    for split in SPLITS:
        t = text["splits"][split]
        a = _load_embeddings(data_dir, manifest["embeddings"][split]["definition"], manifest, verify)
        b = _load_embeddings(data_dir, manifest["embeddings"][split]["lemma"], manifest, verify)
        for side, emb in (("definition", a), ("lemma", b)):
            if emb.shape[0] != len(t[side]):
                raise DatasetIntegrityError(
                    f"WordNet benchmark {split}/{side}: {emb.shape[0]} embeddings but "
                    f"{len(t[side])} texts. {_REBUILD}"
                )
        pairs = np.asarray(t["pairs"], dtype=np.int64).reshape(-1, 2)
        splits[split] = PairedSplit(
            a=a,
            b=b,
            pairs=pairs,
            a_text=tuple(t["definition"]),
            b_text=tuple(t["lemma"]),
        )

    return PairedBenchmark(
        name=manifest.get("name", "wordnet-reverse-dictionary"),
        test=splits["test"],
        validation=splits["validation"],
        reference=splits["reference"],
        a_name="definition",
        b_name="lemma",
        metadata={
            "manifest": manifest,
            "synsets": {s: tuple(text["splits"][s]["synsets"]) for s in SPLITS},
            "mask_token": manifest.get("mask_token"),
            "data_dir": str(data_dir),
        },
    )
