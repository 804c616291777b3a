"""Fitting per-item statistics beyond one machine, on Ray Data (``pip install dehub[ray]``).

:func:`fit` cuts the gallery into parts (fixed row ranges of its ``.npy`` shards) and
computes each part's statistics on an actor pool that holds the reference set, or the
approximate engine's index built once and broadcast, for its whole life. Each part is
committed atomically with a checksummed sidecar; a restarted run recomputes only the
missing parts; dead workers are retried a bounded number of times; bad data fails the
job naming the part. :func:`load_index` turns the output directory into a
:class:`dehub.Index` (memory-mapped), which ``Index.load``, ``dehub search``,
``dehub export`` and ``dehub serve`` accept. See ``docs/distributed.md``.

Ray is imported only when a run starts, so this package imports without it. The run
directory's format and its reader (:func:`load_index`, :func:`read_manifest`) live in
:mod:`dehub.rundir`, which :func:`dehub.load` imports without this runner; they are
re-exported here.
"""

from ..rundir import ManifestError, is_manifest_dir, load_index, read_manifest
from ._methods import NotDistributableError, check_distributable
from ._runner import DEFAULT_PART_ROWS, DistributedRunError, RunSummary, ShardError, fit

__all__ = [
    "fit",
    "load_index",
    "read_manifest",
    "is_manifest_dir",
    "check_distributable",
    "RunSummary",
    "ShardError",
    "DistributedRunError",
    "NotDistributableError",
    "ManifestError",
    "DEFAULT_PART_ROWS",
]
