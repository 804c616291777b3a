"""Build the WordNet noun hierarchy file the shift study reads.

Reads WordNet 3.0 ``data.noun`` (Debian: ``apt-get install wordnet-base``, files under
/usr/share/wordnet) and, for every synset of the bundled benchmark's splits, follows the
first hypernym pointer (``@``, or ``@i`` for instances) up to the root ``entity``. Writes
``src/dehub/studies/data/wordnet_hierarchy.npz``: per split, ``<split>_ancestors``
(n, MAX_DEPTH) int64 synset offsets, column d = the ancestor at depth d (the root is
depth 0; ``-1`` below a synset's own depth), rows in the benchmark's definition order;
and ``source_sha256`` of data.noun.

    PYTHONPATH=src python scripts/build_wordnet_hierarchy.py [--wordnet-dir /usr/share/wordnet]
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

MAX_DEPTH = 20
OUT = Path(__file__).resolve().parents[1] / "src" / "dehub" / "studies" / "data" / "wordnet_hierarchy.npz"


def first_hypernyms(data_noun: Path) -> dict[int, int]:
    """synset offset -> offset of its first hypernym (or instance hypernym)."""
    parent: dict[int, int] = {}
    with open(data_noun, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("  "):
                continue
            fields = line.partition(" | ")[0].split()
            offset = int(fields[0])
            n_words = int(fields[3], 16)
            i = 4 + 2 * n_words
            n_ptr = int(fields[i])
            ptrs = [fields[i + 1 + 4 * j : i + 5 + 4 * j] for j in range(n_ptr)]
            hyper = [int(p[1]) for p in ptrs if p[0] == "@" and p[2] == "n"]
            inst = [int(p[1]) for p in ptrs if p[0] == "@i" and p[2] == "n"]
            if hyper or inst:
                parent[offset] = (hyper or inst)[0]
    return parent


def ancestors(offset: int, parent: dict[int, int]) -> list[int]:
    path = [offset]
    while path[-1] in parent:
        path.append(parent[path[-1]])
        if len(path) > 100:
            raise ValueError(f"hypernym cycle at synset {offset}")
    return path[::-1]  # root first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    args = ap.parse_args()
    from dehub.datasets import load_wordnet_benchmark

    data_noun = args.wordnet_dir / "data.noun"
    parent = first_hypernyms(data_noun)
    bench = load_wordnet_benchmark()
    arrays: dict[str, np.ndarray] = {}
    for split, offsets in bench.metadata["synsets"].items():
        anc = np.full((len(offsets), MAX_DEPTH), -1, dtype=np.int64)
        for r, off in enumerate(offsets):
            path = ancestors(int(off), parent)[:MAX_DEPTH]
            anc[r, : len(path)] = path
        arrays[f"{split}_ancestors"] = anc
    arrays["source_sha256"] = np.array(hashlib.sha256(data_noun.read_bytes()).hexdigest())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
