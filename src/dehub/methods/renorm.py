"""Renormalization: remove the mean embedding shared by all texts.

Ren, Sun, Liang. *Correcting Mean Bias in Text Embeddings: A Refined Renormalization
with Training-Free Improvements on MMTEB*. arXiv 2511.11041.

The paper finds that a text-embedding model's outputs decompose as ``e = e~ + mu`` with a
mean ``mu = E_i[E(t_i)]`` (its Eq. 1) nearly identical across sentences, and corrects
every embedding in one of two ways (the paper's R1 and R2), then scores with cosine
similarity:

* ``variant="projection"`` (R2, the paper's recommended one):
  ``e' = e - (e . mu_hat) mu_hat`` with ``mu_hat = mu / |mu|``;
* ``variant="subtract"`` (R1): ``e' = e - mu``.

What dehub estimates: ``mu`` is the mean of every embedding the corrector is given, the
reference queries and the gallery together (one shared mean, as the paper's single
``mu`` per model). The paper's exact estimation set (which corpus ``mu`` is averaged
over) was not available here; this is the implemented choice.

Serving: for R2, ``q' . g' = q . g'`` (``g'`` is orthogonal to ``mu_hat``) and the query's
norm does not change its ranking, so R2 *changes the gallery vectors* only:
``transformed_gallery_ = g' / |g'|`` serves it exactly from any inner-product index
with the raw queries (scores returned are the cosine ``q' . g' / (|q'| |g'|)``). R1 needs
the query transformed too (``(q - mu) . g'`` has the per-item term ``mu . g'``); it is
served by :meth:`search` only.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .._errors import InputError
from .._validation import check_same_dim
from ..engine.exact import exact_search
from ._cost import Work, grid_count, ranking_work
from ._params import Constraint, Options
from ._stats import column_mean
from ._tags import MethodTags
from .base import BaseCorrector

__all__ = ["Renorm", "renormalize"]

_VARIANTS = ("projection", "subtract")


def renormalize(x: np.ndarray, mu: np.ndarray, variant: str) -> np.ndarray:
    """R2 (``projection``) or R1 (``subtract``) of the rows of ``x``, float64, not re-normalized."""
    x = np.asarray(x, dtype=np.float64)
    if variant == "projection":
        norm = float(np.linalg.norm(mu))
        if norm == 0:
            return x.copy()
        u = mu / norm
        return x - np.outer(x @ u, u)
    return x - mu


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Renorm(BaseCorrector):
    """Renormalization (arXiv 2511.11041): R2 projection (default) or R1 subtraction.

    Parameters
    ----------
    variant : {'projection', 'subtract'}, default 'projection'

    Attributes
    ----------
    mean_ : (d,) float64
        The shared mean embedding ``mu`` (of reference and gallery together).
    transformed_gallery_ : (n_gallery, d) float32
        ``g' / |g'|``.
    """

    name = "renorm"
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {"variant": [Options(*_VARIANTS)]}

    def __dehub_tags__(self) -> MethodTags:
        # R2 only: the raw query against the new gallery vectors ranks exactly (see the
        # module docstring); R1 needs the query transformed, so it claims nothing.
        return MethodTags(changes_vectors=self.variant == "projection")

    def __init__(self, variant: str = "projection") -> None:
        self.variant = variant

    @classmethod
    def default_grid(cls) -> dict[str, list]:
        """Both variants."""
        return {"variant": list(_VARIANTS)}

    def _fit(self, gallery, reference, *, normalize, memory_budget, progress):
        """Estimate the shared mean and renormalize the gallery.

        ``memory_budget``/``progress`` are accepted for the common contract (one
        streamed pass for the mean).
        """
        self._check_params()
        gallery = self._prepare(gallery, "gallery", normalize)
        reference = self._prepare(reference, "reference", normalize)
        check_same_dim(gallery, reference, "gallery", "reference")
        n_g, n_r = gallery.shape[0], reference.shape[0]
        self.mean_ = (column_mean(gallery) * n_g + column_mean(reference) * n_r) / (n_g + n_r)
        self._transform_gallery(gallery)
        return self

    def _transform_gallery(self, gallery) -> None:
        out = np.empty(gallery.shape, dtype=np.float32)
        for s in range(0, gallery.shape[0], 65536):
            out[s : s + 65536] = _unit(renormalize(gallery[s : s + 65536], self.mean_, self.variant))
        self.transformed_gallery_ = out
        self.gallery_ = gallery
        self.fitted_variant_ = self.variant

    def sweep_work(self, shape, grid=None):
        """Column means and a gallery transform per variant; each setting scored densely."""
        n = grid_count(self._check_grid(grid))
        rows = shape.n_reference + shape.n_gallery
        return Work(elem=float(rows) * shape.dim * 2) + ranking_work(shape, n, dense=True)

    def fit_grid(self, gallery, reference, grid=None, **fit_kwargs):
        """Every variant of ``grid`` from one estimate of the mean."""
        grid = self._check_grid(grid)
        first = True
        for variant in grid.get("variant", [self.variant]):
            self.set_params(variant=variant)
            if first:
                self.fit(gallery, reference, **fit_kwargs)
                first = False
            else:
                self._check_params()
                self._transform_gallery(self.gallery_)
            yield {"variant": variant}, self

    def _queries(self, queries) -> np.ndarray:
        if self.variant == "projection":
            return np.asarray(queries, dtype=np.float32)
        return _unit(renormalize(queries, self.mean_, self.variant)).astype(np.float32)

    def _search(
        self, queries: np.ndarray, k: int, *, memory_budget: int, progress: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by the cosine of the renormalized query and gallery item."""
        q = self._queries(queries)
        s, ids = exact_search(
            q,
            self.transformed_gallery_,
            k,
            memory_budget=memory_budget,
            progress="search" if progress else False,
        )
        if self.variant == "projection":
            s = (s.astype(np.float64) / self._query_norms(queries)[:, None]).astype(np.float32)
        return s, ids

    def _query_norms(self, queries) -> np.ndarray:
        """``|q'|`` per query (the cosine's query factor for R2: ``q' . g' = q . g'``)."""
        qn = np.linalg.norm(renormalize(queries, self.mean_, "projection"), axis=1)
        return np.maximum(qn, 1e-12)

    def _score(self, queries: np.ndarray) -> np.ndarray:
        """Dense cosine scores of the renormalized embeddings, (n_queries, n_gallery) float32.

        The product in float32, as :meth:`_search`'s exact engine computes it (a float64
        product ranked differently from the search only at float32 rounding, at twice the
        time), then R2's division by ``|q'|`` in float64, as the search does."""
        q = self._queries(queries)
        s = np.matmul(q, self.transformed_gallery_.T)
        if self.variant == "projection":
            norms = self._query_norms(queries)[:, None]
            return np.divide(s, norms, dtype=np.float64).astype(np.float32)
        return s

    def export_vectors(self) -> np.ndarray:
        """No ``d + 1`` offset export: R2 serves from ``transformed_gallery_`` (see the module docstring)."""
        if self.variant != "projection":
            raise InputError(
                "Renorm(variant='subtract') transforms the queries too ((q - mu) . g'), so no "
                "exported vectors serve it per query; use search(), or variant='projection'"
            )
        raise InputError(
            "Renorm has no d + 1 offset export (no per-item offset is applied per query): "
            "variant='projection' replaces the gallery vectors; index transformed_gallery_ "
            "and search it with the raw queries"
        )

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_}

    def _restore(self, gallery, arrays) -> None:
        mu = np.asarray(arrays["mean"], dtype=np.float64)
        if mu.shape != (gallery.shape[1],):
            raise InputError(f"stored mean has shape {mu.shape}; expected ({gallery.shape[1]},)")
        self.mean_ = mu
        self._check_params()
        self._transform_gallery(gallery)
