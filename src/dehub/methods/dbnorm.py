"""Dual bank normalization (DBNorm): dual inverted softmax (DualIS) and its dynamic variant.

Wang, Jian, Xue. *Balance Act: Mitigating Hubness in Cross-Modal Retrieval with Query and
Gallery Banks*. EMNLP 2023, arXiv 2310.11612.

DBNorm normalizes with two banks: a *query bank* ``B_q`` (items of the query modality,
dehub's ``reference``) and a *gallery bank* ``B_g`` (items of the gallery modality). The
dual inverted softmax multiplies one inverted softmax per bank, with temperatures
``beta1`` (query bank) and ``beta2`` (gallery bank)::

    DualIS(q, r) = exp(beta1 s(q, r)) / sum_{x in B_q} exp(beta1 s(x, r))
                 * exp(beta2 s(q, r)) / sum_{y in B_g} exp(beta2 s(y, r))

where ``s(y, r)`` is the within-modality similarity of a gallery-bank item to the gallery
item: hubs are close to both banks. DualDIS gates each factor as the dynamic inverted
softmax does: the query-bank (gallery-bank) normalizer applies only when the query's
plain top-1 item is in the activation set of the query (gallery) bank, i.e. among the
plain top-``k`` items of at least one of that bank's items; an ungated factor keeps its
un-normalized ``exp(beta_b s(q, r))``.

Notes on the published code (read, not copied): its ``db_norm`` passes the
gallery-bank matrix where the test query-gallery matrix belongs (the "same matrix twice"),
exponentiates without max subtraction (``exp(beta s)`` overflows for large scores) and
overwrites the caller's similarity array; dehub implements the formula above instead,
never modifies inputs, and works in log space. ``beta2 = 0`` reduces DualIS to QB-Norm's
inverted softmax with ``beta = beta1`` (and ``beta1 = 0`` to a gallery-bank-only IS).

``score``/``search`` return ``log DualIS = (beta1 + beta2) s(q, r) - L_q(r) - L_g(r)``
with ``L_q(r) = logsumexp_{x in B_q}(beta1 s(x, r))`` and
``L_g(r) = logsumexp_{y in B_g}(beta2 s(y, r))`` (gated terms dropped for DualDIS).
For a fixed query this is ``(beta1 + beta2)(s - bias(r))``: an additive per-item bias,
served by the exact engine with offset (DualIS is exportable like NNN; DualDIS uses one
offset search per gate pattern present among the queries, see
:mod:`dehub.methods._softmax`).

Gallery bank default: ``fit(gallery, reference, gallery_bank=None)`` uses the gallery
itself (unlabeled test-time data, as distribution normalization does). Each gallery item
then meets itself in its own bank, adding ``exp(beta2 |r|^2)`` to its normalizer: for unit
vectors a term common to all items, and every item is its own top-1, so DualDIS's
gallery-bank gate is always on. Pass a held-out gallery-modality bank (e.g. the
reference split's images) to follow the paper's setting exactly.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import ClassVar

import numpy as np

from .._errors import InputError
from .._validation import NormalizeMode, check_embeddings
from ..engine.exact import DEFAULT_MEMORY_BUDGET
from ._params import FLOAT32_MAX, Boolean, Constraint, Interval
from ._softmax import InvertedSoftmaxBase

__all__ = ["DBNorm", "DBNormDIS"]


class DBNorm(InvertedSoftmaxBase):
    """Dual bank normalization: DualIS, or DualDIS with ``dynamic=True``.

    Parameters
    ----------
    beta1 : float, default 20
        Inverse temperature of the query-bank inverted softmax (>= 0).
    beta2 : float, default 20
        Inverse temperature of the gallery-bank inverted softmax (>= 0). At least one
        of ``beta1``, ``beta2`` must be positive.
    k : int, default 1
        DualDIS only: size of the top-k lists that define the activation sets.
    dynamic : bool, default False
        False: DualIS. True: DualDIS.

    Attributes
    ----------
    lse_ : (2, n_gallery) float64
        Row 0: ``L_q(r)`` over the query bank; row 1: ``L_g(r)`` over the gallery bank.
    activated_ : (2, n_gallery) bool or None
        DualDIS activation sets of the query bank and the gallery bank.
    bias_ : (n_gallery,) float64
        ``(L_q + L_g) / (beta1 + beta2)``.
    """

    name = "dbnorm"
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        "beta1": [Interval(Real, 0.0, FLOAT32_MAX)],
        "beta2": [Interval(Real, 0.0, FLOAT32_MAX)],
        "k": [Interval(Integral, 1, None)],
        "dynamic": [Boolean()],
    }
    _beta_names = ("beta1", "beta2")
    _bank_names = ("reference", "gallery_bank")

    def __init__(self, beta1: float = 20.0, beta2: float = 20.0, k: int = 1, dynamic: bool = False) -> None:
        self.beta1 = beta1
        self.beta2 = beta2
        self.k = k
        self.dynamic = dynamic

    @classmethod
    def default_grid(cls) -> dict[str, list]:
        """beta1, beta2 in {0, 10, 20, 40} (log-spaced plus 0 = bank off), 15 pairs.

        (0, 0) is skipped; beta2 = 0 is QB-Norm's IS. One pass per bank for all values.
        """
        return {"beta1": [0.0, 10.0, 20.0, 40.0], "beta2": [0.0, 10.0, 20.0, 40.0]}

    def distributed_obstacle(self, *, gallery_bank: bool = False) -> str | None:
        if self.dynamic:
            return "with dynamic=True its activation sets rank the whole gallery for every bank item"
        if not gallery_bank:
            return (
                "without a gallery bank its gallery-bank normalizer is over the gallery itself, which "
                "couples every gallery row with all the others (DualIS given a gallery bank decomposes)"
            )
        return None

    # ------------------------------------------------------------------ per-row statistics (DualIS + bank)
    def gallery_statistics(
        self,
        gallery_rows,
        reference,
        *,
        gallery_bank=None,
        normalize: NormalizeMode = "warn",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """``{"lse": (rows, 2)}``: ``L_q`` and ``L_g`` of ``gallery_rows`` (DualIS with a gallery bank).

        Each row's normalizers depend only on that row and the two fixed banks, so the
        statistics of gallery parts concatenated and given to :meth:`from_statistics`
        equal ``fit(gallery, reference, gallery_bank=...)`` (the distributed runner).
        """
        why = self.distributed_obstacle(gallery_bank=gallery_bank is not None)
        if why is not None:
            raise InputError(f"{type(self).__name__} is not row-decomposable here: {why}")
        fitted = self.clone().fit(
            gallery_rows,
            reference,
            gallery_bank=gallery_bank,
            normalize=normalize,
            memory_budget=memory_budget,
            progress=progress,
        )
        return {"lse": fitted.lse_.T.copy()}

    def from_statistics(self, gallery, statistics, *, n_reference: int | None = None):
        """A new fitted DualIS from ``gallery`` and its :meth:`gallery_statistics` (concatenated)."""
        why = self.distributed_obstacle(gallery_bank=True)
        if why is not None:
            raise InputError(f"{type(self).__name__} cannot be built from statistics: {why}")
        if "lse" not in statistics:
            raise InputError(f"DBNorm statistics need the array 'lse'; received {sorted(statistics)}")
        gallery = check_embeddings(gallery, "gallery")
        lse = np.asarray(statistics["lse"], dtype=np.float64)
        if lse.shape != (gallery.shape[0], 2):
            raise InputError(
                f"statistic 'lse' has shape {lse.shape}; expected ({gallery.shape[0]}, 2) for this gallery"
            )
        arrays = {"lse": lse.T.copy(), "fitted_betas": np.asarray(self._betas(), dtype=np.float64)}
        return self.clone().restore(gallery, arrays, n_reference=n_reference)

    @staticmethod
    def _banks(gallery, reference, gallery_bank):
        bank = gallery if gallery_bank is None else gallery_bank
        return [reference, bank], ["reference", "gallery_bank"]

    def _fit(self, gallery, reference, *, gallery_bank=None, normalize, memory_budget, progress):
        """Compute both bank normalizers (and, for DualDIS, both activation sets).

        Parameters
        ----------
        gallery : (n_gallery, d) array
        reference : (n_q, d) array
            The query bank (query modality, e.g. training captions for text-to-image).
        gallery_bank : (n_g, d) array, optional
            The gallery bank (gallery modality, e.g. training images). Default: the
            gallery itself (see the module docstring).
        normalize, memory_budget, progress : as :meth:`dehub.NNN.fit`.
        """
        banks, names = self._banks(gallery, reference, gallery_bank)
        return self._fit_with(
            gallery, banks, names, normalize=normalize, memory_budget=memory_budget, progress=progress
        )

    def fit_grid(self, gallery, reference, grid=None, *, gallery_bank=None, **fit_kwargs):
        """Every (beta1, beta2, k, dynamic) of ``grid`` from one pass per bank."""
        banks, names = self._banks(gallery, reference, gallery_bank)
        yield from self._grid_with(gallery, banks, names, grid, fit_kwargs)


class DBNormDIS(DBNorm):
    """:class:`DBNorm` with ``dynamic=True`` by default (DualDIS), registered as ``"dbnorm_dis"``."""

    name = "dbnorm_dis"

    @classmethod
    def default_grid(cls) -> dict[str, list]:
        """beta1 in {10, 20, 40}, beta2 in {0, 10, 20} (9 pairs): DualDIS searches twice per point."""
        return {"beta1": [10.0, 20.0, 40.0], "beta2": [0.0, 10.0, 20.0]}

    def __init__(self, beta1: float = 20.0, beta2: float = 20.0, k: int = 1, dynamic: bool = True) -> None:
        super().__init__(beta1=beta1, beta2=beta2, k=k, dynamic=dynamic)
