"""Correction methods, one module each, and the registry that runs them by name.

========================  ==================  =========================================
registry name             class               method
========================  ==================  =========================================
``plain``                 :class:`Plain`      no correction
``nnn``                   :class:`NNN`        Nearest Neighbor Normalization
``robust_nnn``            :class:`RobustNNN`  NNN, trimmed-mean / median statistic
``soft_nnn``              :class:`SoftNNN`    NNN, log-mean-exp statistic
``csls``                  :class:`CSLS`       cross-domain similarity local scaling
``qbnorm``                :class:`QBNorm`     inverted softmax (QB-Norm IS)
``qbnorm_dis``            :class:`QBNormDIS`  dynamic inverted softmax (QB-Norm DIS)
``dbnorm``                :class:`DBNorm`     dual inverted softmax (DBNorm DualIS)
``dbnorm_dis``            :class:`DBNormDIS`  dual dynamic inverted softmax (DualDIS)
``dn``                    :class:`DN`         distribution normalization
========================  ==================  =========================================

See ``docs/methods.md`` for formulas, papers, grids and serving costs.
"""

from __future__ import annotations

from .._errors import InputError
from ._cost import SweepShape, Work
from ._exclude import ExcludedIds, ExcludedRows, check_excluded
from ._params import InvalidParameterError
from ._shared import SharedScores
from ._tags import MethodTags, get_tags
from .base import AdditiveBiasCorrector, BaseCorrector, NotFittedError
from .csls import CSLS
from .dbnorm import DBNorm, DBNormDIS
from .dn import DN
from .dsl import DSL
from .invgc import InvGC
from .local_scaling import LocalScaling
from .mutual_proximity import MutualProximity
from .nnn import NNN
from .nnn_variants import RobustNNN, SoftNNN
from .plain import Plain
from .qbnorm import QBNorm, QBNormDIS
from .renorm import Renorm
from .sinkhorn import DBSN, SN

__all__ = [
    "BaseCorrector",
    "AdditiveBiasCorrector",
    "NotFittedError",
    "InvalidParameterError",
    "NNN",
    "Plain",
    "CSLS",
    "QBNorm",
    "QBNormDIS",
    "DBNorm",
    "DBNormDIS",
    "DN",
    "RobustNNN",
    "SoftNNN",
    "METHODS",
    "get_method",
    "MethodTags",
    "get_tags",
]

#: Registry: method name -> estimator class. Names are what the CLI and the evaluation
#: harness accept and what index files record.
METHODS: dict[str, type[BaseCorrector]] = {
    cls.name: cls for cls in (Plain, NNN, RobustNNN, SoftNNN, CSLS, QBNorm, QBNormDIS, DBNorm, DBNormDIS, DN)
}


# Newer members (issue 14).
METHODS.update({cls.name: cls for cls in (SN, DBSN, InvGC, Renorm, MutualProximity, LocalScaling, DSL)})
__all__ += ["SN", "DBSN", "InvGC", "Renorm", "MutualProximity", "LocalScaling", "DSL"]
__all__ += ["ExcludedIds", "ExcludedRows", "check_excluded", "SharedScores", "SweepShape", "Work"]


def get_method(name: str, **params) -> BaseCorrector:
    """A new, unfitted estimator of the method called ``name`` with ``params``.

    Parameters that the method does not have raise :class:`InvalidParameterError` (a
    ``ValueError`` and a ``TypeError``) naming the method's real parameters.
    """
    try:
        cls = METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; expected one of {sorted(METHODS)}") from None
    cls.check_param_names(params)
    return cls(**params)
