"""The output directory of a distributed run: its format, how it is written, how it is read.

A run directory (``manifest.json``, the statistic parts and their sidecars, the gallery
ids) is written by the runner of :mod:`dehub.distributed` and read back by
:func:`load_index`, which :func:`dehub.load`, ``Index.load`` users, ``dehub search``,
``dehub export`` and ``dehub serve`` reach through :mod:`dehub._loading`. Keeping the
format here, apart from the runner, lets ``import dehub`` open a run directory without
loading the runner or its worker pool (``docs/architecture.md``). Its input files are
described by :class:`Source` (a ``.npy`` file or shard) and cut into :class:`Part`
row ranges (:mod:`._inputs`); the manifest and part sidecars are in :mod:`._manifest`.
"""

from ._inputs import Part, Source, is_url, list_sources, open_matrix, plan_parts, read_part
from ._manifest import (
    FORMAT_VERSION,
    MANIFEST,
    ManifestError,
    claim,
    count_claims,
    is_manifest_dir,
    load_index,
    read_manifest,
    run_key,
    save_npy,
    validate_part,
    write_manifest,
    write_part,
)

__all__ = [
    # reading a run directory
    "load_index",
    "read_manifest",
    "is_manifest_dir",
    "ManifestError",
    "MANIFEST",
    "FORMAT_VERSION",
    # writing one (the runner)
    "run_key",
    "write_part",
    "validate_part",
    "claim",
    "count_claims",
    "write_manifest",
    "save_npy",
    # its input files
    "Source",
    "Part",
    "list_sources",
    "plan_parts",
    "read_part",
    "open_matrix",
    "is_url",
]
