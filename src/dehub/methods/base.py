"""The estimator contract shared by every correction method.

Every method follows scikit-learn's conventions: ``__init__`` only stores parameters
(named as in the method's paper); ``fit(gallery, reference)`` learns attributes with a
trailing underscore and returns the estimator; ``search(queries, k)`` returns
``(scores, ids)`` arrays of shape ``(n_queries, k)`` (float32 best first, int64 gallery
row numbers, padded with ``-inf``/``-1``); ``score(queries)`` returns the dense corrected
score matrix, for small galleries.

Parameters
----------
The parameters are exactly the arguments of ``__init__`` (``get_params``/``set_params``/
``clone``, scikit-learn's shape); their allowed values are declared once in the class
dict ``_parameter_constraints`` (:mod:`dehub.methods._params`) and checked by
:meth:`BaseCorrector._check_params`, which every ``fit``/``search``/``score`` calls.
Relations between parameters and checks against the fitted state go in
:meth:`BaseCorrector._check_consistency`. Unknown parameters and grid keys are
:class:`~dehub.methods._params.InvalidParameterError` naming the real parameters.

Fitted state
------------
Fitted attributes (trailing underscore) are plain arrays set by ``fit`` and never
changed by parameters afterwards (scikit-learn's rule). The base class holds the
public entry points; ``fit`` and ``fit_grid`` of every subclass are sealed once, in
:meth:`BaseCorrector.__init_subclass__`:

* ``fit`` records the parameters it was run with and, for additive-offset methods,
  computes ``bias_`` once (refusing parameters whose bias overflows float32);
* the public ``search``/``score`` (one body, in :class:`BaseCorrector`) check that the
  estimator is fitted with its current parameters (a parameter changed after ``fit``
  raises :class:`StaleFitError` naming ``fit`` and :meth:`BaseCorrector.with_params`),
  clamp ``k`` to the gallery with one :class:`KClampedWarning` and validate the queries
  once, then call the method's ``_search``/``_score`` with prepared arrays; they never
  re-validate the parameters;
* ``fit_grid`` runs on a clone and yields independent fitted estimators.

:meth:`BaseCorrector.with_params` returns a NEW fitted estimator with some parameters
changed where the fitted statistics serve them (NNN's ``alpha`` and any ``k`` up to the
fitted one); other changes raise :class:`RefitRequiredError` naming ``fit``.

Capabilities
------------
What a method can do is asked of it with :func:`dehub.methods.get_tags` (its
``__dehub_tags__()``), never with ``isinstance``. The classes below carry the shared
code; each promise of a tag is a set of public methods:

``offset`` -> :class:`AdditiveBiasCorrector`: ``bias_``, ``export_vectors()``,
``augment_queries()``.

``row_decomposable`` -> :class:`RowDecomposable`:

* ``gallery_statistics(gallery_rows, reference, **fit_kwargs) -> dict[str, ndarray]``:
  the fitted per-item statistics of these rows (first axis = rows), computed exactly as
  ``fit`` computes them, with no look at the other gallery rows;
* ``fitted_statistics() -> dict[str, ndarray]``: the same dict for the fitted gallery;
* ``from_statistics(gallery, statistics, *, n_reference=None) -> estimator``: a new
  fitted estimator (the same parameters) from a gallery and its statistics.
  Concatenating the statistics of gallery shards, in order, equals fitting the whole
  gallery.

``incremental`` -> the growth hooks, each returning a NEW fitted estimator and leaving
``self`` untouched (so an update is all-or-nothing: the caller swaps models):

* ``add_gallery_rows(vectors, reference, *, memory_budget, progress) -> estimator``:
  the gallery followed by ``vectors``; ``reference`` is the fitted reference set (needed
  only when ``growth_needs_reference()``);
* ``remove_gallery_rows(keep) -> estimator``: only the rows where the boolean mask
  ``keep`` is true;
* ``add_reference_rows(new_reference, *, n_reference, memory_budget, progress)
  -> estimator``: as if fitted on ``concatenate([reference, new_reference])`` where the
  old reference had ``n_reference`` rows (new rows are numbered after them);
* ``growth_needs_reference() -> bool``: whether ``add_gallery_rows`` needs the reference.

For row-decomposable methods :class:`RowDecomposable` implements all four from the
statistics (new rows: their statistics appended; removal: rows dropped) plus one
method-specific hook, ``merge_reference_statistics(statistics, new_statistics, *,
n_reference)``: the statistics over the grown reference from those over the old
reference and those over the new rows alone (NNN: merge the sorted top-k lists; the
inverted softmax: ``logaddexp`` of the normalizers). :mod:`dehub.incremental` (used by
:class:`dehub.Index`) calls only these hooks.

Where each concern lives
------------------------
This module is the contract's one public import path; the code is split by concern:
:mod:`._parameters` (parameters, grids), :mod:`._fitted` (sealing, staleness,
``with_params``, the errors), :mod:`._persistence` (index-file arrays), :mod:`._hooks`
(what a method answers: tags, distribution, engines, shared score passes, costs),
:mod:`._estimator` (:class:`BaseCorrector`: the public entry points), :mod:`._offset`
(:class:`AdditiveBiasCorrector`) and :mod:`._rows` (row statistics and growth hooks).
"""

from __future__ import annotations

from ._estimator import BaseCorrector
from ._fitted import KClampedWarning, NotFittedError, RefitRequiredError, StaleFitError
from ._offset import BIAS_LIMIT, AdditiveBiasCorrector
from ._params import InvalidParameterError
from ._rows import ReferenceFit, RowDecomposable

__all__ = [
    "BaseCorrector",
    "AdditiveBiasCorrector",
    "ReferenceFit",
    "RowDecomposable",
    "NotFittedError",
    "StaleFitError",
    "RefitRequiredError",
    "KClampedWarning",
    "InvalidParameterError",
    "BIAS_LIMIT",
]
