"""Serve a dehub-corrected gallery with plain FAISS: no dehub import at query time.

Export first (this part uses dehub)::

    import dehub
    from dehub.export import export_faiss
    model = dehub.NNN(k=16, alpha=0.75).fit(gallery, reference)
    export_faiss(model, "gallery.faiss", index_type="flat")   # + gallery.faiss.json

Then serve with this script::

    python examples/serve_with_plain_faiss.py gallery.faiss queries.npy --top 10

Run without arguments for a self-contained demo that exports a small random gallery
(that part imports dehub) and then serves it through :func:`serve` (which does not).
"""

from __future__ import annotations

import argparse
import json
import sys

import faiss
import numpy as np


def serve(index_path: str, queries: np.ndarray, top: int = 10):
    """Corrected top-k with FAISS only: append -1 to each query, inner-product search."""
    with open(index_path + ".json", encoding="utf-8") as f:
        meta = json.load(f)
    index = faiss.read_index(index_path)
    if meta["search_params"].get("nprobe"):
        faiss.extract_index_ivf(index).nprobe = meta["search_params"]["nprobe"]
    if meta["search_params"].get("efSearch"):
        faiss.downcast_index(faiss.downcast_index(index).index).hnsw.efSearch = meta["search_params"][
            "efSearch"
        ]
    q = np.asarray(queries, dtype=np.float32)
    if q.shape[1] != meta["d"]:
        raise ValueError(f"queries must have d={meta['d']} columns; received {q.shape[1]}")
    q_aug = np.hstack([q, -np.ones((q.shape[0], 1), dtype=np.float32)])  # q' = [q, -1]
    scores, ids = index.search(q_aug, top)  # scores = q . r - bias(r), ids = external ids
    return scores, ids


def _demo() -> None:
    import tempfile
    from pathlib import Path

    import dehub  # only the export step needs dehub
    from dehub.export import export_faiss

    rng = np.random.default_rng(0)
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    gallery, reference, queries = (
        unit(rng.normal(size=(1000, 64))),
        unit(rng.normal(size=(5000, 64))),
        unit(rng.normal(size=(5, 64))),
    )
    model = dehub.NNN(k=16, alpha=0.75).fit(gallery, reference)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "gallery.faiss")
        export_faiss(model, path, index_type="flat", ids=np.arange(1000) + 10_000)
        scores, ids = serve(path, queries, top=5)
    ref_scores, ref_rows = model.search(queries, k=5)
    print("plain FAISS ids:", ids[0].tolist())
    print("dehub ids:      ", (ref_rows[0] + 10_000).tolist())
    print(
        "same top-5:",
        bool(np.array_equal(ids, ref_rows + 10_000)),
        "max score diff:",
        float(np.abs(scores - ref_scores).max()),
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("index", nargs="?", help="FAISS file written by dehub.export.export_faiss")
    p.add_argument("queries", nargs="?", help=".npy of query embeddings (n, d)")
    p.add_argument("--top", type=int, default=10)
    args = p.parse_args(argv)
    if args.index is None:
        _demo()
        return 0
    if args.queries is None:
        p.error("queries .npy is required with an index")
    scores, ids = serve(args.index, np.load(args.queries), args.top)
    for qi in range(ids.shape[0]):
        print(qi, " ".join(f"{i}:{s:.4f}" for i, s in zip(ids[qi], scores[qi]) if i >= 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
