"""The augmented vectors every export writes, and the query side that goes with them.

An offset correction scores ``s(q, r) = q . r - b(r)`` with a fixed per-item bias ``b(r)``
(NNN: ``b(r) = alpha * mean of the k largest q_j . r`` over the reference queries). Two
forms turn that into a plain vector search:

``d+1`` (inner product)
    item ``x = [r, b(r)]``, query ``[q, -1]``; then ``[q, -1] . [r, b] = q . r - b``
    exactly. Serve it with an inner-product / dot metric and never normalize the vectors.

``d+2`` (equal norm, for L2 and cosine metrics)
    first the d+1 vector ``x = [r, b]``; ``M = max_r |x|`` over the items; item
    ``[x, sqrt(M^2 - |x|^2)]`` (every item then has norm ``M``), query ``[q, -1, 0]``.
    Because the query's last coordinate is 0, the inner product is still ``q . r - b``;
    because every item has norm ``M``::

        |q' - x'|^2 = |q'|^2 + M^2 - 2 (q . r - b)      (L2 ranks by the corrected score)
        cos(q', x') = (q . r - b) / (|q'| M)             (cosine too: |q'| is fixed per query)

    ``M`` is stored with the export (sidecar / table metadata / payload of the collection
    description) so that later updates keep it; an added item whose ``|x|`` exceeds ``M``
    forces a rewrite of every item (:func:`dehub.export.update_store` does it).

Conventions other tools rely on (keep them): the coordinate after the ``d`` embedding
coordinates holds the scaled bias ``b(r)`` and the query gets ``-1`` there; in ``d+2`` the
next coordinate is the norm filler and the query gets ``0``. Stores that need a vector
length divisible by something (LanceDB's IVF_PQ ``num_sub_vectors``) get trailing zero
coordinates on both sides (``dim=``), which change no inner product, distance or norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .._errors import InputError, InputTypeError
from ..methods import get_tags

__all__ = [
    "Form",
    "FORMS",
    "AugmentedItems",
    "LazyItemVectors",
    "is_offset",
    "offset_model",
    "item_vectors",
    "augment_items",
    "query_vectors",
    "padded_dim",
]

Form = Literal["d+1", "d+2"]
FORMS: tuple[str, ...] = ("d+1", "d+2")


def is_offset(model: Any) -> bool:
    """Is ``model``'s corrected score ``q . r - bias_[r]`` with a fixed per-item bias?

    The one capability question of the export package: the method's own answer,
    ``dehub.methods.get_tags(model).offset`` (``bias_`` and ``export_vectors()`` then exist).
    """
    try:
        return bool(get_tags(model).offset)
    except (TypeError, AttributeError):  # not a dehub estimator
        return False


def offset_model(source: Any) -> Any:
    """The fitted offset estimator behind ``source`` (an estimator or a ``dehub.Index``)."""
    model = getattr(source, "model", source)
    if not is_offset(model):
        raise InputTypeError(
            f"{type(model).__name__} is not an additive correction (no fixed per-item bias); "
            "only methods whose score is q . r - b(r) can be served by a plain vector store"
        )
    return model


def _check_form(form: str) -> None:
    if form not in FORMS:
        raise InputError(f"form must be one of {list(FORMS)}; received {form!r}")


def _form_extra(form: str) -> int:
    return 1 if form == "d+1" else 2


def padded_dim(d: int, form: str, multiple: int = 1) -> int:
    """Length of the stored vectors for embedding dimension ``d``, rounded up to ``multiple``."""
    _check_form(form)
    if multiple < 1:
        raise InputError(f"multiple must be >= 1; received {multiple}")
    raw = d + _form_extra(form)
    return -(-raw // multiple) * multiple


@dataclass(frozen=True)
class AugmentedItems:
    """The vectors to store: ``vectors`` (n, dim) float32, the bias and the form's ``M``."""

    vectors: np.ndarray
    bias: np.ndarray
    form: str
    d: int
    M: float | None


def item_vectors(
    gallery: np.ndarray,
    bias: np.ndarray,
    form: str = "d+1",
    *,
    M: float | None = None,
    dim: int | None = None,
) -> AugmentedItems:
    """Augmented item vectors from the gallery ``(n, d)`` and its bias ``(n,)``.

    ``M`` (d+2 only) is the common norm; default ``max |[r, b]|`` over these items. A
    given ``M`` smaller than some item's ``|[r, b]|`` is an error (that item would need an
    imaginary filler). ``dim`` pads with zero coordinates to that length.
    """
    _check_form(form)
    g = np.asarray(gallery, dtype=np.float32)
    b = np.asarray(bias, dtype=np.float32).reshape(-1)
    if g.ndim != 2 or b.shape != (g.shape[0],):
        raise InputError(
            f"expected a (n, d) gallery and a (n,) bias; received shapes {g.shape} and {b.shape}"
        )
    n, d = g.shape
    out_dim = d + _form_extra(form) if dim is None else int(dim)
    if out_dim < d + _form_extra(form):
        raise InputError(f"dim must be at least {d + _form_extra(form)} for form {form!r}; received {dim}")
    out = np.zeros((n, out_dim), dtype=np.float32)
    out[:, :d] = g
    out[:, d] = b
    norm_m: float | None = None
    if form == "d+2":
        sq = np.einsum("ij,ij->i", g, g, dtype=np.float64) + b.astype(np.float64) ** 2
        top = float(np.sqrt(sq.max())) if n else 0.0
        if M is None:
            norm_m = top
        else:
            norm_m = float(M)
            if top > norm_m * (1 + 1e-6) + 1e-12:
                raise InputError(
                    f"an item's |[r, b]| = {top:.6g} exceeds the stored common norm M = {norm_m:.6g}; "
                    "every item must be rewritten with the larger M"
                )
        out[:, d + 1] = np.sqrt(np.maximum(norm_m * norm_m - sq, 0.0)).astype(np.float32)
    return AugmentedItems(vectors=out, bias=b, form=form, d=d, M=norm_m)


class LazyItemVectors:
    """The augmented item vectors as a lazy ``(n, dim)`` view: rows are built when sliced.

    ``M`` (d+2) is computed in one blockwise pass at construction (or given). Used by the
    FAISS export so that building a 1M-item index holds the gallery and the index, not a
    third full copy.
    """

    def __init__(self, gallery, bias, form: str = "d+1", *, M: float | None = None, dim: int | None = None,
                 block_rows: int = 65536):  # fmt: skip
        _check_form(form)
        self.gallery = gallery
        self.bias = np.asarray(bias, dtype=np.float32).reshape(-1)
        n, d = int(gallery.shape[0]), int(gallery.shape[1])
        if self.bias.shape != (n,):
            raise InputError(
                f"expected a (n, d) gallery and a (n,) bias; received shapes {gallery.shape} and {self.bias.shape}"
            )
        self.form, self.d = form, d
        self.shape = (n, d + _form_extra(form) if dim is None else int(dim))
        if form == "d+2" and M is None:
            top = 0.0
            for s in range(0, n, block_rows):
                g = np.asarray(gallery[s : s + block_rows], dtype=np.float32)
                b = self.bias[s : s + block_rows].astype(np.float64)
                sq = np.einsum("ij,ij->i", g, g, dtype=np.float64) + b * b
                top = max(top, float(sq.max()))
            M = float(np.sqrt(top))
        self.M = M if form == "d+2" else None

    def __getitem__(self, rows) -> np.ndarray:
        g = np.asarray(self.gallery[rows], dtype=np.float32)
        return item_vectors(g, self.bias[rows], self.form, M=self.M, dim=self.shape[1]).vectors


def augment_items(source: Any, form: str = "d+1", *, M: float | None = None, dim: int | None = None):
    """:func:`item_vectors` of a fitted offset estimator or ``dehub.Index``."""
    model = offset_model(source)
    model._check_fitted()
    return item_vectors(np.asarray(model.gallery_), np.asarray(model.bias_), form, M=M, dim=dim)


def query_vectors(queries, form: str = "d+1", *, dim: int | None = None) -> np.ndarray:
    """The vectors to send to a store for ``queries`` ``(n, d)`` (or one ``(d,)`` query).

    ``d+1``: ``[q, -1]``; ``d+2``: ``[q, -1, 0]``; ``dim`` pads with zeros to that length
    (the store's vector length, when it was padded). float32, not re-normalized.
    """
    _check_form(form)
    q = np.asarray(queries, dtype=np.float32)
    single = q.ndim == 1
    if single:
        q = q[None, :]
    if q.ndim != 2:
        raise InputError(f"queries must be (n, d) or (d,); received shape {q.shape}")
    n, d = q.shape
    out_dim = d + _form_extra(form) if dim is None else int(dim)
    if out_dim < d + _form_extra(form):
        raise InputError(f"dim must be at least {d + _form_extra(form)} for form {form!r}; received {dim}")
    out = np.zeros((n, out_dim), dtype=np.float32)
    out[:, :d] = q
    out[:, d] = -1.0
    return out[0] if single else out
