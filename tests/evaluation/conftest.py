"""Shared synthetic data for the evaluation tests: paired data with planted hubs."""

from __future__ import annotations

import numpy as np
import pytest

from dehub.datasets import PairedBenchmark, PairedSplit


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_split(rng, n_items: int, per_item: int, dim: int, hub_dir: np.ndarray, noise: float) -> PairedSplit:
    """Items (side b) and `per_item` noisy copies of each as queries (side a).

    Every item leans towards a shared hub direction by a random amount, so items with a
    large lean are hubs for all queries: the setting NNN corrects.
    """
    base = rng.normal(size=(n_items, dim)) / np.sqrt(dim)
    lean = rng.uniform(0, 2.0, size=(n_items, 1))
    b = unit(base + lean * hub_dir)
    a_raw = np.repeat(base, per_item, axis=0) + noise * rng.normal(size=(n_items * per_item, dim)) / np.sqrt(
        dim
    )
    a = unit(a_raw + 0.8 * hub_dir)
    pairs = np.stack([np.arange(n_items * per_item), np.repeat(np.arange(n_items), per_item)], axis=1)
    return PairedSplit(a=a, b=b, pairs=pairs)


def make_benchmark(
    seed: int = 0,
    n_test: int = 150,
    n_val: int = 150,
    n_ref: int = 600,
    per_item: int = 2,
    dim: int = 24,
    noise: float = 1.2,
) -> PairedBenchmark:
    rng = np.random.default_rng(seed)
    hub_dir = rng.normal(size=dim)
    hub_dir /= np.linalg.norm(hub_dir)
    return PairedBenchmark(
        name="synthetic-hubs",
        test=make_split(rng, n_test, per_item, dim, hub_dir, noise),
        validation=make_split(rng, n_val, per_item, dim, hub_dir, noise),
        reference=make_split(rng, n_ref, per_item, dim, hub_dir, noise),
        a_name="query",
        b_name="item",
    )


@pytest.fixture(scope="session")
def bench() -> PairedBenchmark:
    return make_benchmark()


def popular_split(rng, items: np.ndarray, n_queries: int, popular: int, share: float, noise: float):
    """Queries whose right answer is one of ``popular`` items for ``share`` of them.

    Each query is a noisy copy of its target, so a popular item is near many queries
    (a hub) *because* it is their right answer.
    """
    n = items.shape[0]
    hot = rng.random(n_queries) < share
    target = np.where(hot, rng.integers(0, popular, n_queries), rng.integers(popular, n, n_queries))
    q = unit(items[target] + noise * rng.normal(size=(n_queries, items.shape[1])) / np.sqrt(items.shape[1]))
    return PairedSplit(a=q, b=items, pairs=np.stack([np.arange(n_queries), target], axis=1))


def popular_benchmark(seed: int = 3, dim: int = 32) -> PairedBenchmark:
    """Every split's popular items sit near one shared direction (a generic region), so
    the reference queries, which are popular-heavy too, crowd around them: corrections see
    them as hubs, and they are the right answers."""
    rng = np.random.default_rng(seed)
    center = unit(rng.normal(size=(1, dim)))
    splits = {}
    for name, n_items, n_q in (("test", 200, 500), ("validation", 200, 500), ("reference", 400, 2000)):
        items = rng.normal(size=(n_items, dim)) / np.sqrt(dim)
        items[:5] = center + 0.35 * items[:5]
        splits[name] = popular_split(rng, unit(items), n_q, popular=5, share=0.4, noise=1.0)
    return PairedBenchmark(name="popular-targets", a_name="query", b_name="item", **splits)


@pytest.fixture(scope="session")
def popular() -> PairedBenchmark:
    return popular_benchmark()
