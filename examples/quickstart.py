"""End-to-end example: fit NNN, search, save, load, search again.

Synthetic unit vectors with planted hubs: a few gallery items sit near the mean query
direction and steal the top rank. NNN's bias pushes them back down.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import dehub


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    rng = np.random.default_rng(0)
    d, n_gallery, n_ref, n_test = 64, 2000, 20000, 2000
    common = unit(rng.normal(size=(1, d)))  # a direction every query shares a bit
    gallery = unit(rng.normal(size=(n_gallery, d)))
    hubs = rng.choice(n_gallery, 20, replace=False)
    gallery[hubs] = unit(gallery[hubs] + 2.0 * common)

    def queries_for(items: np.ndarray) -> np.ndarray:
        return unit(gallery[items] + 1.6 * unit(rng.normal(size=(items.size, d))) + 0.7 * common)

    reference = queries_for(rng.integers(0, n_gallery, n_ref))
    truth = rng.integers(0, n_gallery, n_test)
    test = queries_for(truth)

    plain = dehub.Plain().fit(gallery, reference)
    model = dehub.NNN(k=16, alpha=0.75).fit(gallery, reference, progress=True)
    for name, m in (("plain", plain), ("NNN", model)):
        _, ids = m.search(test, k=10)
        r1 = float(np.mean(ids[:, 0] == truth))
        r10 = float(np.mean((ids == truth[:, None]).any(axis=1)))
        top_hub = np.bincount(ids[:, 0], minlength=n_gallery).max()
        print(f"{name:>5}: R@1 {r1:.3f}  R@10 {r10:.3f}  most-retrieved item is top-1 for {top_hub} queries")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gallery.dehub"
        dehub.Index(model).save(path)
        loaded = dehub.Index.load(path)
        same = np.array_equal(loaded.search(test, 10)[1], model.search(test, 10)[1])
        print(f"saved {path.stat().st_size / 1e6:.1f} MB, reloaded: {loaded!r}; identical results: {same}")


if __name__ == "__main__":
    main()
