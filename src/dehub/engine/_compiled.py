"""The switch of the optional compiled kernels (C extensions built by ``setup.py``).

``dehub.engine._topk_kernel`` (the exact engine's running top-k) and
``dehub.engine._cluster_kernel`` (k-means cluster sums) are built at install where a C
compiler is found; where they are not, numpy does the same work with the same results.
``DEHUB_KERNELS=0`` in the environment turns them off (read once, at import): the numpy
paths then run even where the kernels are built, e.g. to compare the two.
"""

from __future__ import annotations

import os

__all__ = ["kernels_enabled"]

ENABLED = os.environ.get("DEHUB_KERNELS", "1").strip().lower() not in {"0", "false", "no", "off"}


def kernels_enabled() -> bool:
    """Whether built kernels may be used (``DEHUB_KERNELS`` is not 0/false/no/off)."""
    return ENABLED
