"""What a correction method can do, asked of the method (never of its class hierarchy).

Every estimator class answers :func:`get_tags` through ``__dehub_tags__()``; code that
needs a capability (the sweep's shared-scores fast path, the ``d + 1`` export, the
vector-store exports, :class:`dehub.Index` updates, the distributed runner) asks
``get_tags(model).offset`` etc. instead of ``isinstance``.

The tags and exactly what each promises:

``offset``
    For every query ``q``, :meth:`search` ranks the gallery exactly as the inner-product
    top-k of ``[q, -1] . [r, bias_[r]] = q . r - bias_[r]`` with one fixed per-item
    ``bias_`` ((n_gallery,) array), and the returned scores are that value up to a
    positive per-query scale and a per-query shift (``a(q) * (q . r - bias_[r]) + c(q)``,
    ``a(q) > 0``). Then ``est.bias_`` and ``est.export_vectors()`` exist and
    ``export_vectors()`` (with :meth:`augment_queries`) reproduces :meth:`search`'s ranking
    exactly. Consequences per method:

    * NNN and its variants, Plain: ``a = 1``, ``c = 0``.
    * CSLS: ``2 s(q, r) - r_T(q) - r_S(r) = 2 (s(q, r) - r_S(r)/2) - r_T(q)``. The query term
      ``r_T(q)`` (mean similarity of ``q`` to its K nearest gallery items) depends on the
      query, but for a fixed query it shifts every item by the same amount, so it never
      changes the ranking: ``a = 2``, ``c(q) = -r_T(q)``, ``bias_ = r_S / 2``. Offset.
      (Its *values* need the extra ``r_T`` search; the export gives ``(CSLS + r_T(q)) / 2``.)
    * DN: ``(q - l mu_Q).(r - l mu_G) = (s - l mu_Q . r) + [l^2 mu_Q . mu_G - l q . mu_G]``,
      ``a = 1`` and the bracket is ``c(q)``. Offset.
    * QB-Norm IS / DBNorm DualIS (``dynamic=False``): ``sum beta * (s - bias)``. Offset.
    * QB-Norm DIS / DBNorm DualDIS (``dynamic=True``): each query picks *which* bank
      normalizers apply from its own plain top-1 (the gate), so the per-item offset
      differs between queries: no single ``bias_`` serves all of them. Not offset.

``transductive``
    The fit uses the test queries themselves; reports must say so.

``incremental``
    :meth:`dehub.Index.add` / ``remove`` / ``add_reference`` apply: the estimator
    implements the growth hooks documented in :mod:`dehub.methods.base`
    (``add_gallery_rows(vectors, reference)``, ``remove_gallery_rows(keep)``,
    ``add_reference_rows(new_reference, n_reference=...)``, ``growth_needs_reference()``;
    each returns a new fitted estimator), and an update equals a refit on the grown data.

``row_decomposable``
    Every fitted per-item statistic depends only on that gallery row and the whole
    reference: ``est.gallery_statistics(gallery_rows, reference, **fit_kwargs)`` returns
    ``dict[str, ndarray]`` (first axis = rows), ``est.fitted_statistics()`` the same
    dict of a fitted estimator, and ``est.from_statistics(gallery, statistics,
    n_reference=...)`` makes a new fitted estimator; concatenating the statistics of
    gallery shards equals fitting the whole gallery.

``gallery_bank``
    ``fit(gallery, reference, gallery_bank=...)`` and ``fit_grid(..., gallery_bank=...)``
    accept a gallery-modality bank ((n, d), e.g. the reference split's gallery side);
    without one the method falls back as its docstring says (DBNorm, DN, InvGC: the
    gallery itself; DBSN: no bank, which is SN exactly).
``changes_vectors``
    The method replaces the gallery vectors (InvGC-style); ``est.transformed_gallery_``
    holds them and exports need no extra dimension.

Tags may depend on an instance's parameters (``QBNorm(dynamic=True)`` is not offset):
``get_tags(instance)`` asks the instance, ``get_tags(cls)`` asks an instance built with
the class's default parameters (``__init__`` only stores parameters, so that is free).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MethodTags", "get_tags"]


@dataclass(frozen=True)
class MethodTags:
    """The capabilities of one estimator (see the module docstring for each promise)."""

    offset: bool = False
    transductive: bool = False
    incremental: bool = False
    row_decomposable: bool = False
    changes_vectors: bool = False
    gallery_bank: bool = False


def get_tags(est_or_cls: Any) -> MethodTags:
    """The :class:`MethodTags` of an estimator instance or class.

    Raises ``TypeError`` for objects that do not declare tags (not a dehub method).
    """
    obj = est_or_cls
    if isinstance(obj, type):
        if not hasattr(obj, "__dehub_tags__"):
            raise TypeError(f"{obj.__name__} is not a dehub method: it has no __dehub_tags__()")
        obj = obj()
    answer = getattr(obj, "__dehub_tags__", None)
    if answer is None:
        raise TypeError(f"{type(obj).__name__} is not a dehub method: it has no __dehub_tags__()")
    tags = answer()
    if not isinstance(tags, MethodTags):
        raise TypeError(f"{type(obj).__name__}.__dehub_tags__() must return MethodTags; received {tags!r}")
    return tags
