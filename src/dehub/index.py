"""The saved, versioned dehub index: gallery vectors, their ids, a fitted method.

An :class:`Index` wraps a fitted correction method (NNN by default) together with the
gallery's external ids, so that ``search`` returns *your* ids, and saves everything in
the pickle-free container format of :mod:`dehub._format` (documented in
``docs/index-format.md``): atomic writes, a format version, and SHA-256 checksums that
turn truncated or tampered files into clear errors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._format import IndexFormatError, read_container, read_header, write_container
from ._validation import NormalizeMode, check_ids
from .engine.exact import DEFAULT_MEMORY_BUDGET
from .incremental import IncrementalMixin
from .methods import METHODS, BaseCorrector, get_method

__all__ = ["Index", "IndexFormatError"]

_KIND = "dehub.index"


class Index(IncrementalMixin):
    """A searchable, savable gallery with a fitted correction.

    Build one with :meth:`build` (fits the method) or from an already fitted estimator.

    Parameters
    ----------
    model : a fitted estimator (``dehub.NNN``, ...)
    ids : (n_gallery,) int array, optional
        External ids of the gallery rows (unique). Default: ``0..n_gallery-1``.
    metadata : dict, optional
        JSON-serializable notes stored with the index (encoder name, data source...).
    reference : (n_reference, d) array, optional
        The reference set, kept (and saved) so that :meth:`add` can compute new items'
        biases without being passed it (see :mod:`dehub.incremental`).
    n_reference : int, optional
        Number of reference rows the model was fitted on (numbers new reference rows in
        :meth:`add_reference`); defaults to ``reference.shape[0]``.
    """

    def __init__(
        self,
        model: BaseCorrector,
        ids=None,
        metadata: dict[str, Any] | None = None,
        reference=None,
        n_reference: int | None = None,
    ):
        model._check_fitted()
        n = model.gallery_.shape[0]
        self.model = model
        self.ids = np.arange(n, dtype=np.int64) if ids is None else check_ids(ids, n)
        self.metadata = dict(metadata or {})
        self.reference = reference
        self.n_reference = (
            int(reference.shape[0]) if n_reference is None and reference is not None else n_reference
        )

    # ------------------------------------------------------------------ build/search
    @classmethod
    def build(
        cls,
        gallery,
        reference,
        *,
        method: str = "nnn",
        ids=None,
        metadata: dict[str, Any] | None = None,
        normalize: NormalizeMode = "warn",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        progress: bool = False,
        keep_reference: bool = False,
        **params,
    ) -> Index:
        """Fit ``method`` (a registry name, e.g. ``"nnn"``) on gallery/reference and wrap it.

        ``keep_reference=True`` stores the (validated) reference set in the index, so
        :meth:`add` needs no reference argument; the file grows by the reference size.
        """
        if ids is not None:
            check_ids(
                ids, np.asarray(gallery).shape[0] if not hasattr(gallery, "shape") else gallery.shape[0]
            )
        model = get_method(method, **params)
        model.fit(gallery, reference, normalize=normalize, memory_budget=memory_budget, progress=progress)
        kept = None
        if keep_reference:
            kept = model._prepare(reference, "reference", "none" if normalize == "warn" else normalize)
        return cls(model, ids=ids, metadata=metadata, reference=kept, n_reference=int(reference.shape[0]))

    @property
    def n_items(self) -> int:
        return int(self.model.gallery_.shape[0])

    @property
    def dim(self) -> int:
        return int(self.model.gallery_.shape[1])

    def search(self, queries, k: int = 10, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        """Top-k under the corrected score; ids are the index's external ids (-1 = padding)."""
        scores, rows = self.model.search(queries, k, **kwargs)
        ids = np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1)
        return scores, ids

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index to ``path`` atomically (old file intact if interrupted)."""
        path = Path(path)
        arrays = {"gallery": np.asarray(self.model.gallery_), "ids": self.ids}
        for name, arr in self.model._fitted_arrays().items():
            arrays[f"model.{name}"] = arr
        if self.reference is not None:
            arrays["reference"] = np.asarray(self.reference)
        header = {
            "kind": _KIND,
            "created_by": f"dehub {__version__}",
            "method": self.model.name,
            "params": _jsonable(self.model.get_params()),
            "metadata": _jsonable(self.metadata),
            "n_reference": self.n_reference,
        }
        write_container(path, header, arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = False, verify: bool = True) -> Index:
        """Load an index saved by :meth:`save`.

        ``mmap=True`` maps the gallery instead of reading it (for galleries larger than
        RAM); ``verify`` checks every array's SHA-256 (reads the whole file once).
        Raises :class:`IndexFormatError` for files that are not dehub indexes, of an
        unsupported version, truncated, or corrupt.
        """
        if Path(path).is_dir():  # a distributed run's output (manifest + statistic parts)
            from .distributed import load_index

            return load_index(path, verify=verify)
        header, arrays = read_container(path, mmap=mmap, verify=verify)
        if header.get("kind") != _KIND:
            raise IndexFormatError(f"{path}: holds {header.get('kind')!r}, expected a {_KIND!r} file")
        method = header.get("method")
        if method not in METHODS:
            raise IndexFormatError(
                f"{path}: method {method!r} is unknown to this dehub; expected one of "
                f"{sorted(METHODS)}. Upgrade dehub."
            )
        for need in ("gallery", "ids"):
            if need not in arrays:
                raise IndexFormatError(f"{path}: missing array {need!r}")
        params = header.get("params", {})
        try:
            model = get_method(method, **params)
        except TypeError as exc:
            raise IndexFormatError(
                f"{path}: stored parameters {params!r} do not fit method {method!r}: {exc}"
            ) from None
        fitted = {n.split(".", 1)[1]: a for n, a in arrays.items() if n.startswith("model.")}
        try:
            model._restore(arrays["gallery"], fitted)
        except (KeyError, ValueError) as exc:
            raise IndexFormatError(f"{path}: stored statistics are inconsistent: {exc}") from None
        if arrays["ids"].shape != (arrays["gallery"].shape[0],):
            raise IndexFormatError(
                f"{path}: ids shape {arrays['ids'].shape} does not match gallery rows "
                f"{arrays['gallery'].shape[0]}"
            )
        return cls(
            model,
            ids=np.asarray(arrays["ids"]),
            metadata=header.get("metadata"),
            reference=arrays.get("reference"),
            n_reference=header.get("n_reference"),
        )

    @staticmethod
    def describe_file(path: str | os.PathLike) -> dict[str, Any]:
        """The header of an index file (method, parameters, arrays), without loading it."""
        return read_header(path)

    def info(self) -> dict[str, Any]:
        return {
            "method": self.model.name,
            "params": _jsonable(self.model.get_params()),
            "n_items": self.n_items,
            "dim": self.dim,
            "gallery_dtype": str(self.model.gallery_.dtype),
            "metadata": self.metadata,
        }

    def __repr__(self) -> str:
        return f"Index({self.model!r}, n_items={self.n_items}, dim={self.dim})"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
