"""Robustness: does NNN's gain survive noisy queries?

Perturbations of query texts, each deterministic from ``(seed, text index)``:

* ``typo``: each word of 4+ letters gets, with probability ``rate``, one character
  edit (swap of two neighbours, deletion, insertion or substitution of a lowercase
  letter), chosen uniformly;
* ``drop``: each word is dropped with probability ``rate`` (at least one word kept);
* ``case``: each word is upper-cased with probability ``rate`` (all-MiniLM-L6-v2 is an
  uncased model, so this one should change nothing: the study checks).

The study re-embeds clean and perturbed test definitions with the bundled MiniLM, fits
plain and NNN once, and reports success@1 of each, NNN's gain per perturbation and the
change of that gain against clean, with paired bootstrap CIs over the same queries.
"""

from __future__ import annotations

import string
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._errors import InputError
from ..datasets.encoder import embed_texts
from ..evaluation.metrics import first_relevant_rank_topk
from ._common import fit_method, paired_ci

__all__ = ["typo", "drop_words", "random_case", "PERTURBATIONS", "perturb_texts", "run_robustness_study"]


def _rng(seed: int, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, i])


def typo(text: str, rng: np.random.Generator, rate: float = 0.3) -> str:
    """One random character edit in each word of 4+ letters, with probability ``rate``."""
    words = text.split(" ")
    for j, w in enumerate(words):
        if len(w) < 4 or not w.isalpha() or rng.random() >= rate:
            continue
        kind = int(rng.integers(4))
        p = int(rng.integers(len(w) - 1))
        c = string.ascii_lowercase[int(rng.integers(26))]
        if kind == 0:
            w = w[:p] + w[p + 1] + w[p] + w[p + 2 :]
        elif kind == 1:
            w = w[:p] + w[p + 1 :]
        elif kind == 2:
            w = w[:p] + c + w[p:]
        else:
            w = w[:p] + c + w[p + 1 :]
        words[j] = w
    return " ".join(words)


def drop_words(text: str, rng: np.random.Generator, rate: float = 0.2) -> str:
    """Each word dropped with probability ``rate``; at least one word is kept."""
    words = text.split()
    keep = rng.random(len(words)) >= rate
    if words and not keep.any():
        keep[int(rng.integers(len(words)))] = True
    return " ".join(w for w, k in zip(words, keep, strict=True) if k)


def random_case(text: str, rng: np.random.Generator, rate: float = 0.5) -> str:
    """Each word upper-cased with probability ``rate``."""
    words = text.split(" ")
    flip = rng.random(len(words)) < rate
    return " ".join(w.upper() if f else w for w, f in zip(words, flip, strict=True))


PERTURBATIONS: dict[str, Callable[..., str]] = {"typo": typo, "drop": drop_words, "case": random_case}


def perturb_texts(texts: Sequence[str], kind: str, *, seed: int = 0, rate: float | None = None) -> list[str]:
    """Perturb every text; text ``i`` uses the generator seeded by ``(seed, i)``, so a
    text's perturbation does not depend on which other texts are perturbed with it."""
    try:
        fn = PERTURBATIONS[kind]
    except KeyError:
        raise InputError(f"unknown perturbation {kind!r}; expected one of {sorted(PERTURBATIONS)}") from None
    kw = {} if rate is None else {"rate": rate}
    return [fn(t, _rng(seed, i), **kw) for i, t in enumerate(texts)]


def run_robustness_study(
    bench: Any, *, n_queries: int = 1000, seed: int = 0, n_bootstrap: int = 1000, progress: bool = False
) -> dict[str, Any]:
    """Clean vs perturbed test definitions (a2b), re-embedded with the bundled MiniLM."""

    t0 = time.perf_counter()
    task = bench.test.task("a2b")
    if task.query_text is None:
        raise InputError("the robustness study needs query texts; this benchmark has none")
    rows = np.flatnonzero(task.relevance.counts() > 0)
    rows = np.sort(np.random.default_rng(seed).choice(rows, min(n_queries, rows.size), replace=False))
    texts = [task.query_text[r] for r in rows]
    variants = {"clean": texts, **{k: perturb_texts(texts, k, seed=seed) for k in PERTURBATIONS}}
    all_texts = [t for v in variants.values() for t in v]
    t_embed = time.perf_counter()
    emb = embed_texts(all_texts, progress=progress)
    t_embed = time.perf_counter() - t_embed
    reference = bench.reference_for("a2b")
    models = {m: fit_method(m, task.gallery, reference) for m in ("plain", "nnn")}
    sub = task.relevance.subset(rows)
    arms: dict[str, np.ndarray] = {}
    gains: dict[str, np.ndarray] = {}
    n = len(texts)
    for j, name in enumerate(variants):
        q = emb[j * n : (j + 1) * n]
        for m, model in models.items():
            ids = model.search(q, 1, normalize="none")[1]
            arms[f"{m} {name}"] = (first_relevant_rank_topk(ids, sub) == 1).astype(np.float64)
        gains[name] = arms[f"nnn {name}"] - arms[f"plain {name}"]
    changed = {
        k: float(np.mean([a != b for a, b in zip(texts, variants[k], strict=True)])) for k in PERTURBATIONS
    }
    same_emb = {
        k: bool(np.array_equal(emb[:n], emb[(j + 1) * n : (j + 2) * n])) for j, k in enumerate(PERTURBATIONS)
    }
    return {
        "n_queries": n,
        "encoder": "all-MiniLM-L6-v2 (bundled), re-embedded clean and perturbed",
        "texts_changed": changed,
        "embeddings_identical_to_clean": same_emb,
        "examples": {k: [texts[0], variants[k][0]] for k in PERTURBATIONS},
        "success@1": paired_ci(arms, [(f"plain {k}", f"nnn {k}") for k in variants], n_bootstrap, seed),
        "gain_change": paired_ci(gains, [("clean", k) for k in PERTURBATIONS], n_bootstrap, seed),
        "embed_seconds": t_embed,
        "texts_per_second": len(all_texts) / t_embed,
        "runtime_seconds": time.perf_counter() - t0,
    }
