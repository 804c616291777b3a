#!/usr/bin/env python
"""Build the bundled WordNet reverse-dictionary benchmark (definition <-> lemma).

Reads WordNet 3.0 noun synsets from ``data.noun`` (Debian: ``apt-get install
wordnet-base``, files under /usr/share/wordnet), cleans and masks the glosses, draws
disjoint test / validation / reference splits of synsets with a fixed seed, embeds every
text with all-MiniLM-L6-v2 and writes, under ``src/dehub/datasets/data/wordnet/``:

* ``text.json.gz``          the derived text and the pairs of every split;
* ``emb_<split>_<side>_NN.npy``  float16 L2-normalized embeddings, split into parts
  smaller than ``--max-file-mb``;
* ``LICENSE-WordNet.txt``   the WordNet 3.0 license notice (required for redistribution);
* ``manifest.json``         format version, counts, seed, encoder, sha256 of every file.

The text part is fully deterministic (same WordNet file + same seed -> byte-identical
``text.json.gz``). Embeddings may differ in the last float16 bit across torch builds.

Run from the repository root::

    PYTHONPATH=src .venv/bin/python scripts/build_wordnet_benchmark.py

``--dry-run`` prints the counts without embedding or writing anything. See
docs/datasets.md for the construction rules.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np

from dehub._io import sha256_file

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "dehub" / "datasets" / "data" / "wordnet"
DEFAULT_WORDNET = Path("/usr/share/wordnet")

FORMAT_VERSION = 1
MASK_TOKEN = "___"
SPLITS = ("test", "validation", "reference")
SIDES = ("definition", "lemma")

# An example sentence starts at a double quote that follows ';' or ':' (or opens the
# gloss); everything from there on is usage examples.
_EXAMPLE_START = re.compile(r'(?:^|[;:])\s*"')


# --------------------------------------------------------------------------- parsing
def read_license_notice(data_noun: Path) -> str:
    """The license header of a WordNet data file, without its line numbers."""
    lines = []
    with open(data_noun, encoding="utf-8") as fh:
        for line in fh:
            if not line.startswith("  "):
                break
            # "  12 text  " -> "text"
            body = line.rstrip("\n").rstrip()
            parts = body.split(None, 1)
            lines.append(parts[1] if len(parts) > 1 else "")
    return "\n".join(lines) + "\n"


def parse_data_noun(data_noun: Path) -> list[tuple[str, list[str], str]]:
    """(synset offset, raw lemmas, raw gloss) of every noun synset, in file order."""
    records = []
    with open(data_noun, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("  "):
                continue
            data, _, gloss = line.partition(" | ")
            fields = data.split()
            offset, pos = fields[0], fields[2]
            if pos != "n":
                raise ValueError(f"{data_noun}: synset {offset} has pos {pos!r}, expected 'n'")
            n_words = int(fields[3], 16)
            lemmas = fields[4 : 4 + 2 * n_words : 2]
            records.append((offset, lemmas, gloss.strip()))
    return records


def lemma_string(raw: str) -> str:
    """Gallery form of a lemma: underscores -> spaces, lower-cased.

    Lower-casing merges e.g. 'Mercury' (planet) and 'mercury' (element) into one gallery
    item with two relevant glosses; the encoder is uncased, so keeping both would give
    two identical gallery vectors of which only one counts as correct.
    """
    return raw.replace("_", " ").lower()


def strip_examples(gloss: str) -> str:
    """Remove the quoted usage examples ('; "..."' / ': "..."') and trailing separators."""
    m = _EXAMPLE_START.search(gloss)
    if m is not None:
        gloss = gloss[: m.start()]
    return gloss.strip().rstrip(";:,").strip()


def _lemma_pattern(lemma: str) -> str:
    words = [re.escape(w) for w in lemma.split()]
    body = r"[\s\-]+".join(words)
    # Also mask the regular plural of lemmas ending in a word of >= 3 letters
    # ("fish" -> "fishes", "dog" -> "dogs"); not for short ones ("a" -> "as").
    if re.fullmatch(r"[a-z]{3,}", lemma.split()[-1]):
        body += r"(?:e?s)?"
    return r"(?<!\w)" + body + r"(?!\w)"


def mask_gloss(gloss: str, lemmas: list[str], token: str = MASK_TOKEN) -> str:
    """Replace every whole-word, case-insensitive occurrence of the lemmas by ``token``.

    Longer lemmas are masked first ('abstract entity' before 'entity'); words may be
    separated by spaces or hyphens in the gloss.
    """
    for lemma in sorted(set(lemmas), key=lambda s: (-len(s), s)):
        gloss = re.sub(_lemma_pattern(lemma), token, gloss, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", gloss).strip()


def has_content(gloss: str, token: str = MASK_TOKEN) -> bool:
    """True if something alphanumeric is left besides mask tokens."""
    return re.search(r"[^\W_]", gloss.replace(token, " ")) is not None


# --------------------------------------------------------------------------- building
def build_units(records):
    """Eligible synsets: (offset, lemma strings, masked gloss); skipped count."""
    units, skipped = [], 0
    for offset, raw_lemmas, gloss in records:
        lemmas = list(dict.fromkeys(lemma_string(r) for r in raw_lemmas))
        cleaned = mask_gloss(strip_examples(gloss), lemmas)
        if not cleaned or not has_content(cleaned):
            skipped += 1
            continue
        units.append((offset, lemmas, cleaned))
    return units, skipped


def draw_splits(units, sizes: dict[str, int], seed: int) -> dict[str, list]:
    need = sum(sizes.values())
    if need > len(units):
        raise SystemExit(f"asked for {need} synsets but only {len(units)} are eligible")
    perm = np.random.default_rng(seed).permutation(len(units))
    out, start = {}, 0
    for split in SPLITS:
        chosen = sorted(perm[start : start + sizes[split]].tolist())  # file (offset) order
        out[split] = [units[i] for i in chosen]
        start += sizes[split]
    return out


def split_payload(units) -> dict:
    """Definitions (one per synset), unique sorted lemma strings, and pairs."""
    lemmas = sorted({lem for _, lems, _ in units for lem in lems})
    row = {lem: j for j, lem in enumerate(lemmas)}
    pairs = [[i, row[lem]] for i, (_, lems, _) in enumerate(units) for lem in lems]
    return {
        "synsets": [off for off, _, _ in units],
        "definition": [gloss for _, _, gloss in units],
        "lemma": lemmas,
        "pairs": pairs,
    }


def write_text(path: Path, payload: dict) -> None:
    raw = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    buf = io.BytesIO()
    # mtime=0 and no file name: byte-identical output for identical input.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(raw.encode("utf-8"))
    path.write_bytes(buf.getvalue())


def write_parts(out: Path, stem: str, emb: np.ndarray, max_bytes: int) -> list[str]:
    row_bytes = emb.shape[1] * 2
    rows = max(1, (max_bytes - 4096) // row_bytes)  # 4 KiB margin for the .npy header
    names = []
    for k, start in enumerate(range(0, max(len(emb), 1), rows)):
        name = f"{stem}_{k:02d}.npy"
        np.save(out / name, np.ascontiguousarray(emb[start : start + rows], dtype=np.float16))
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See docs/datasets.md for the construction rules.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--wordnet-dir", type=Path, default=DEFAULT_WORDNET, help="directory holding WordNet 3.0 data.noun"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the split permutation")
    p.add_argument("--n-test", type=int, default=5000, help="test synsets")
    p.add_argument("--n-validation", type=int, default=2000, help="validation synsets")
    p.add_argument("--n-reference", type=int, default=20000, help="reference synsets")
    p.add_argument("--batch-size", type=int, default=128, help="encoder batch size")
    p.add_argument("--device", default="cpu", help="torch device for the encoder")
    p.add_argument("--max-file-mb", type=float, default=20.0, help="largest embedding part, in MiB")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--dry-run", action="store_true", help="print the counts only; no embedding, nothing written"
    )
    args = p.parse_args(argv)

    data_noun = args.wordnet_dir / "data.noun"
    if not data_noun.is_file():
        raise SystemExit(
            f"{data_noun} not found; install WordNet 3.0 (Debian: apt-get install "
            "wordnet-base) or pass --wordnet-dir"
        )
    records = parse_data_noun(data_noun)
    units, skipped = build_units(records)
    sizes = {"test": args.n_test, "validation": args.n_validation, "reference": args.n_reference}
    splits = {name: split_payload(u) for name, u in draw_splits(units, sizes, args.seed).items()}

    counts = {
        name: {
            "synsets": len(s["synsets"]),
            "definition": len(s["definition"]),
            "lemma": len(s["lemma"]),
            "pairs": len(s["pairs"]),
        }
        for name, s in splits.items()
    }
    print(
        f"{len(records)} noun synsets, {skipped} skipped (empty gloss after cleaning), {len(units)} eligible"
    )
    for name, c in counts.items():
        print(f"  {name:<10} synsets={c['synsets']:>6} lemmas={c['lemma']:>6} pairs={c['pairs']:>6}")
    if args.dry_run:
        return 0

    # Embed every distinct text once (lemma strings recur across splits).
    texts = sorted({t for s in splits.values() for side in SIDES for t in s[side]})
    sys.path.insert(0, str(REPO / "src"))
    from dehub.datasets.encoder import ENCODER_NAME, ENCODER_PACKAGE, embed_texts

    emb = embed_texts(texts, batch_size=args.batch_size, progress=not args.no_progress, device=args.device)
    row_of = {t: i for i, t in enumerate(texts)}

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("emb_*.npy"):
        old.unlink()
    max_bytes = int(args.max_file_mb * 2**20)
    layout: dict[str, dict[str, list[str]]] = {}
    for name, s in splits.items():
        layout[name] = {}
        for side in SIDES:
            rows = np.fromiter((row_of[t] for t in s[side]), dtype=np.int64, count=len(s[side]))
            layout[name][side] = write_parts(out, f"emb_{name}_{side}", emb[rows], max_bytes)

    write_text(out / "text.json.gz", {"format_version": FORMAT_VERSION, "splits": splits})
    (out / "LICENSE-WordNet.txt").write_text(
        "The text in this directory (and the embeddings computed from it) is derived from\n"
        "WordNet 3.0 (noun glosses and lemmas), redistributed under the WordNet 3.0\n"
        "license reproduced below.\n\n" + read_license_notice(data_noun),
        encoding="utf-8",
    )

    try:
        from importlib.metadata import version

        encoder_version = version(ENCODER_PACKAGE)
    except Exception:  # pragma: no cover
        encoder_version = None
    files = sorted(f.name for f in out.iterdir() if f.is_file() and f.name != "manifest.json")
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": "wordnet-reverse-dictionary",
        "description": "WordNet 3.0 noun synsets: masked gloss (definition) <-> lemma "
        "strings, multi-positive both directions.",
        "wordnet_version": "3.0",
        "wordnet_source_sha256": sha256_file(data_noun),
        "license_file": "LICENSE-WordNet.txt",
        "seed": args.seed,
        "split_sizes": sizes,
        "eligible_synsets": len(units),
        "skipped_synsets": skipped,
        "mask_token": MASK_TOKEN,
        "sides": {"a": "definition", "b": "lemma"},
        "counts": counts,
        "encoder": {
            "name": ENCODER_NAME,
            "package": ENCODER_PACKAGE,
            "package_version": encoder_version,
            "dim": int(emb.shape[1]),
            "normalized": True,
        },
        "embedding_dtype": "float16",
        "text_file": "text.json.gz",
        "embeddings": layout,
        "files": {f: {"sha256": sha256_file(out / f), "bytes": (out / f).stat().st_size} for f in files},
        "build_command": "PYTHONPATH=src python scripts/build_wordnet_benchmark.py "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    total = sum(v["bytes"] for v in manifest["files"].values())
    print(f"wrote {len(files) + 1} files to {out} ({total / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
