"""The saved, versioned dehub index: gallery vectors, their ids, a fitted method.

An :class:`Index` wraps a fitted correction method (NNN by default) together with the
gallery's external ids, so that ``search`` returns *your* ids, and saves everything in
the pickle-free container format of :mod:`dehub._format` (documented in
``docs/index-format.md``): atomic writes, a format version, and SHA-256 checksums that
turn truncated or tampered files into clear errors. Loading treats the file as user
input: after the checksums, the content is validated (float, 2-D, finite gallery; unique
ids in the id space of :mod:`dehub._ids`; statistics that fit the gallery).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import InputError
from ._format import (
    FileIdentity,
    HeaderRoomError,
    IndexFormatError,
    read_container,
    read_header,
    streamed_container,
    verify_container,
    write_container,
)
from ._ids import check_ids, check_new_ids, check_remove_ids, next_ids
from ._io import resolve_target
from ._json import jsonable
from ._progress import progress_bar
from ._validation import NormalizeMode, RowPass, check_embeddings, is_row_sliceable, l2_normalized
from ._version import __version__
from .engine.exact import DEFAULT_MEMORY_BUDGET
from .incremental import IncrementalMixin
from .item_metadata import ItemMetadata, ItemMetadataError
from .methods import METHODS, BaseCorrector, get_method, get_tags
from .methods.base import KClampedWarning

__all__ = ["Index", "IndexFormatError", "KClampedWarning"]  # KClampedWarning: dehub.methods.base

_KIND = "dehub.index"
_GALLERY_DTYPES = ("<f2", "<f4", "<f8")
#: header bytes reserved by :meth:`Index.build_to_file` beyond the metadata's JSON
#: (an index header takes a few kB; a longer one is written by :meth:`Index.save`)
_HEADER_ROOM = 16 << 10
_MAP_CHUNK = 1 << 18  # ids mapped per step in search (2 MiB of int64 scratch)


class Index(IncrementalMixin):
    """A searchable, savable gallery with a fitted correction.

    Build one with :meth:`build` (fits the method) or from an already fitted estimator.

    Parameters
    ----------
    model : a fitted estimator (``dehub.NNN``, ...)
    ids : (n_gallery,) int array, optional
        External ids of the gallery rows: unique integers with ``0 <= id <= 2**63 - 1``
        (``-1`` is the padding of search results; see :mod:`dehub._ids`). Default:
        ``0..n_gallery-1``.
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
        model.check_fitted()
        n = model.gallery_.shape[0]
        self.model = model
        self.ids = np.arange(n, dtype=np.int64) if ids is None else check_ids(ids, n)
        self.metadata = dict(metadata or {})
        self.reference = reference
        self.n_reference = (
            int(reference.shape[0]) if n_reference is None and reference is not None else n_reference
        )
        #: identity of the memory-mapped file this index reads from (``load(mmap=True)``)
        self._mapped: FileIdentity | None = None
        #: per-item metadata (url, caption, ...) by id, saved as ``<path>.items.parquet``
        self.item_metadata: ItemMetadata | None = None

    def set_item_metadata(self, table) -> None:
        """Per-item metadata columns (a ``pyarrow.Table`` whose rows are the gallery rows)."""
        self.item_metadata = None if table is None else ItemMetadata.aligned(table, self.ids)

    def metadata_rows(self, ids) -> list[dict[str, Any] | None]:
        """The metadata row of each item id (``None`` for ids without one, removed ones and -1)."""
        wanted = np.asarray(ids, dtype=np.int64).ravel()
        if self.item_metadata is None:
            return [None] * int(wanted.size)
        live = np.isin(wanted, self.ids)  # removed items keep no metadata
        return [r if ok else None for r, ok in zip(self.item_metadata.rows(wanted), live.tolist())]

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
        gallery_bank=None,
        **params,
    ) -> Index:
        """Fit ``method`` (a registry name, e.g. ``"nnn"``) on gallery/reference and wrap it.

        ``keep_reference=True`` stores the (validated) reference set in the index, so
        :meth:`add` needs no reference argument; the file grows by the reference size.
        ``gallery_bank``: a gallery-modality bank passed to ``fit`` of a method that takes
        one (``get_tags(model).gallery_bank``: DBNorm, DN, InvGC, DBSN); an error for
        any other method. The index stores what the fit computed from it (the method's
        fitted arrays), not the bank.
        """
        n = np.shape(gallery)[0] if not hasattr(gallery, "shape") else gallery.shape[0]
        model, ids, fit_inputs = cls._build_parts(n, method, ids, gallery_bank, params)
        return cls._fit_parts(
            model,
            gallery,
            reference,
            ids=ids,
            fit_inputs=fit_inputs,
            metadata=metadata,
            normalize=normalize,
            memory_budget=memory_budget,
            progress=progress,
            keep_reference=keep_reference,
        )

    @staticmethod
    def _build_parts(n: int, method: str, ids, gallery_bank, params: dict[str, Any]):
        """The checks :meth:`build` makes before any pass over the data: the ids (once),
        the method's name, the bank's method; ``(model, ids, fit_inputs)`` (the
        parameters' values are checked by the estimator's ``fit``)."""
        if ids is not None:
            ids = check_ids(ids, n)
        model = get_method(method, **params)
        fit_inputs = {}
        if gallery_bank is not None:
            if not get_tags(model).gallery_bank:
                takes = sorted(n for n, c in METHODS.items() if get_tags(c).gallery_bank)
                raise InputError(
                    f"method {method!r} takes no gallery bank; received one of {np.shape(gallery_bank)[0]} "
                    f"rows (methods that take one: {', '.join(takes)})"
                )
            fit_inputs["gallery_bank"] = gallery_bank
        return model, ids, fit_inputs

    @classmethod
    def _fit_parts(
        cls,
        model: BaseCorrector,
        gallery,
        reference,
        *,
        ids,
        fit_inputs: dict[str, Any],
        metadata: dict[str, Any] | None,
        normalize: NormalizeMode,
        memory_budget: int,
        progress: bool,
        keep_reference: bool,
    ) -> Index:
        model.fit(
            gallery,
            reference,
            normalize=normalize,
            memory_budget=memory_budget,
            progress=progress,
            **fit_inputs,
        )
        kept = None
        if keep_reference:  # the fit validated it (once); only the L2 copy is made again
            if normalize == "l2":
                kept = l2_normalized(reference, "reference")
            else:
                kept = (
                    reference
                    if isinstance(reference, np.ndarray) or is_row_sliceable(reference)
                    else np.asarray(reference)
                )
        index = cls(model, metadata=metadata, reference=kept, n_reference=int(reference.shape[0]))
        if ids is not None:
            index.ids = ids  # checked above (checking again would sort them a second time)
        return index

    @property
    def n_items(self) -> int:
        return int(self.model.gallery_.shape[0])

    @property
    def dim(self) -> int:
        return int(self.model.gallery_.shape[1])

    def _check_file(self) -> None:
        """A memory-mapped index: the file must still be the one that was loaded."""
        if self._mapped is not None:
            self._mapped.check()

    def _map_rows(self, rows: np.ndarray) -> np.ndarray:
        """Gallery rows -> external ids in place (``-1`` stays), in bounded chunks."""
        if rows.dtype != np.int64 or not rows.flags.c_contiguous or not rows.flags.writeable:
            rows = np.array(rows, dtype=np.int64, order="C")
        flat = rows.reshape(-1)
        n = self.ids.shape[0]
        for s in range(0, flat.size, _MAP_CHUNK):
            blk = flat[s : s + _MAP_CHUNK]
            pad = blk < 0
            if (blk >= n).any():  # pragma: no cover - an engine bug, never silently wrong ids
                raise RuntimeError(f"the search returned a row beyond the {n} gallery rows")
            np.maximum(blk, 0, out=blk)
            blk[...] = self.ids[blk]
            blk[pad] = -1
        return rows

    def search(self, queries, k: int = 10, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        """Top-k under the corrected score; ids are the index's external ids (-1 = padding).

        ``k`` above the number of items is lowered to it with a :class:`KClampedWarning`
        (before anything is allocated): results have ``min(k, n_items)`` columns.
        """
        self._check_file()
        scores, rows = self.model.search(queries, k, **kwargs)  # clamps k (the estimator's entry point)
        return scores, self._map_rows(rows)

    def with_params(self, **params: Any) -> Index:
        """A new index whose model is ``model.with_params(**params)`` (same ids, metadata, file).

        Only parameters the fitted statistics serve can change (NNN's ``alpha``, ``k`` up
        to the fitted one); others raise naming ``fit`` (rebuild the index).
        """
        self._check_file()
        new = copy.copy(self)
        new.model = self.model.with_params(**params)
        return new

    # ------------------------------------------------------------------ updates (ids)
    def add(self, vectors, ids=None, **kwargs):
        """Add gallery items (see :meth:`IncrementalMixin.add`); ids as in the class doc.

        Default ids continue after the largest one (``max(ids) + 1, ...``); numbering past
        ``2**63 - 1`` is refused with a ``ValueError``.
        """
        self._check_file()
        shape = getattr(vectors, "shape", None)
        if shape is None:
            shape = np.shape(vectors)
        if len(shape) == 2:  # otherwise the vectors are refused by the update itself
            ids = next_ids(self.ids, int(shape[0])) if ids is None else check_new_ids(ids, int(shape[0]))
        return super().add(vectors, ids, **kwargs)

    def remove(self, ids, **kwargs):
        """Remove the items with these exact integer ids (see :meth:`IncrementalMixin.remove`)."""
        self._check_file()
        return super().remove(check_remove_ids(ids), **kwargs)

    def add_reference(self, new_reference, **kwargs):
        """Grow the reference set (see :meth:`IncrementalMixin.add_reference`)."""
        self._check_file()
        return super().add_reference(new_reference, **kwargs)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index to ``path`` atomically (old file intact if interrupted).

        A symlink is written through (its target is replaced), an existing file's
        permission bits are kept; see :mod:`dehub._io` (one writer per file).
        """
        self._check_file()
        path = Path(path)
        header, arrays = self._file_contents(path)
        write_container(path, header, arrays)
        self._forget_mapping(path)
        return path

    def _file_contents(self, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """The header and the arrays of this index's file (writes the item metadata beside it)."""
        # the gallery as it is (a memmap or shards are streamed, never copied whole)
        arrays = {"gallery": self.model.gallery_, "ids": self.ids}
        for name, arr in self.model.persistence_arrays().items():
            arrays[f"model.{name}"] = arr
        if self.reference is not None:
            arrays["reference"] = self.reference
        metadata = dict(self.metadata)
        metadata.pop("item_metadata", None)
        if self.item_metadata is not None:
            metadata["item_metadata"] = self.item_metadata.write(resolve_target(path))
        header = {
            "kind": _KIND,
            "created_by": f"dehub {__version__}",
            "method": self.model.name,
            "params": jsonable(self.model.get_params()),
            "metadata": jsonable(metadata),
            "n_reference": self.n_reference,
        }
        return header, arrays

    def _forget_mapping(self, path: Path) -> None:
        if self._mapped is not None and _same_file(resolve_target(path), self._mapped.path):
            # The mapping holds the old, now unlinked file: nobody can truncate it by
            # name any more, and the new file is not what this object reads.
            self._mapped = None

    @classmethod
    def build_to_file(
        cls,
        path: str | os.PathLike,
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
        gallery_bank=None,
        item_metadata=None,
        **params,
    ) -> Index:
        """:meth:`build`, :meth:`set_item_metadata` and :meth:`save` with two reads of the gallery.

        The ids and the method are checked first; then one pass validates
        the gallery (finiteness, norms; the L2 copy for ``normalize="l2"``) and writes and
        hashes it into the temporary index file, and the fit reads it once more (the
        reference top-k). Only when the fit succeeds are the statistics and the header
        written and the file renamed to ``path``; on any failure (a bad row, a failed
        fit) no file is left and an existing ``path`` is untouched. Arguments as
        :meth:`build`; ``item_metadata`` as :meth:`set_item_metadata`. (:meth:`build`
        then :meth:`save` reads the gallery three times: validation, fit, copy.)
        """
        path = Path(path)
        rows = RowPass(gallery, "gallery", normalize)
        model, ids, fit_inputs = cls._build_parts(rows.shape[0], method, ids, gallery_bank, params)
        room = _HEADER_ROOM + len(json.dumps(jsonable(metadata or {})))
        try:
            with streamed_container(path, room) as out:
                with progress_bar(rows.shape[0], "check + write gallery", progress, unit="rows") as bar:
                    out.write_first("gallery", rows.dtype, rows.shape, _reporting(rows.blocks(), bar))
                validated = rows.result()
                index = cls._fit_parts(
                    model,
                    validated,
                    reference,
                    ids=ids,
                    fit_inputs=fit_inputs,
                    metadata=metadata,
                    normalize=normalize,
                    memory_budget=memory_budget,
                    progress=progress,
                    keep_reference=keep_reference,
                )
                index.set_item_metadata(item_metadata)
                header, arrays = index._file_contents(path)
                if arrays.pop("gallery") is not validated.rows:  # pragma: no cover - a method's own gallery_
                    raise HeaderRoomError("the fitted gallery is not the rows streamed into the file")
                out.finish(header, arrays)
        except HeaderRoomError:  # the fit succeeded; write the file the ordinary way (a third read)
            index.save(path)
        return index

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = False, verify: bool = True) -> Index:
        """Load an index saved by :meth:`save`; the file is validated like user input.

        By default every array is copied into memory, so later changes to the file do
        not matter. ``mmap=True`` maps the gallery (and statistics) instead of reading
        them (for galleries larger than RAM); the index then checks, before each search
        or update, that the file is still the one loaded (device, inode, size,
        modification time) and raises :class:`IndexFormatError` otherwise (a truncated
        mapped file would kill the process with SIGBUS). ``verify`` checks every array's
        SHA-256 (reads the whole file once). Raises :class:`IndexFormatError` for files
        that are not dehub indexes, of an unsupported version, truncated, corrupt, or
        whose content is not a valid index; see ``docs/index-format.md``. A distributed
        run's output directory opens with :func:`dehub.load`, which takes both.
        """
        path = Path(path)
        if path.is_dir():
            raise IndexFormatError(
                f"{path}: is a directory; expected a dehub index file (the output directory of a "
                "distributed run, manifest.json + parts, opens with dehub.load(path))"
            )
        header = read_header(path)
        _check_index_header(path, header)
        present = {a["name"] for a in header["arrays"]}
        wanted = {"gallery", "ids", "reference"} | {n for n in present if n.startswith("model.")}
        identity: list[FileIdentity] = []
        header, arrays = read_container(path, mmap=mmap, verify=verify, names=wanted, identity=identity)
        _check_index_header(path, header)  # the file may have changed between the reads
        for need in ("gallery", "ids"):
            if need not in arrays:
                raise IndexFormatError(f"{path}: missing array {need!r}")
        gallery = _check_gallery(path, header, arrays["gallery"])
        n = gallery.shape[0]
        if arrays["ids"].shape != (n,):
            raise IndexFormatError(f"{path}: ids shape {arrays['ids'].shape} does not match gallery rows {n}")
        raw_ids = arrays["ids"]  # always a private copy in the end
        ids = _check_stored_ids(
            path, header, np.array(raw_ids) if isinstance(raw_ids, np.memmap) else raw_ids
        )
        n_reference = header.get("n_reference")
        reference = arrays.get("reference")
        if reference is not None:
            reference = _check_reference(path, header, reference, gallery, n_reference)
        fitted = {n.split(".", 1)[1]: a for n, a in arrays.items() if n.startswith("model.")}
        _check_statistics(path, fitted)
        method, params = header["method"], header.get("params", {})
        try:
            model = get_method(method, **params)
        except (TypeError, ValueError) as exc:
            raise IndexFormatError(
                f"{path}: stored parameters {params!r} do not fit method {method!r}: {exc}"
            ) from None
        try:
            model.restore(gallery, fitted, n_reference=n_reference)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise IndexFormatError(f"{path}: stored statistics are inconsistent: {exc}") from None
        index = cls(model, metadata=header.get("metadata"), reference=reference, n_reference=n_reference)
        index.ids = ids  # validated above (checking again would sort them a second time)
        record = index.metadata.pop("item_metadata", None)
        if record is not None:
            try:
                index.item_metadata = ItemMetadata.read(resolve_target(path), record)
            except ItemMetadataError as exc:
                raise IndexFormatError(str(exc)) from None
        if mmap:
            index._mapped = identity[0]
        return index

    @staticmethod
    def describe_file(path: str | os.PathLike, *, verify: bool = False) -> dict[str, Any]:
        """The header of an index file (method, parameters, arrays), without loading it.

        ``format_version`` is always present (from the file's prefix when the header
        omits it). ``verify=True`` also runs :meth:`verify_file` and adds its result
        under ``"verified"``.
        """
        header = read_header(path)
        if verify:
            header["verified"] = Index.verify_file(path)
        return header

    @staticmethod
    def verify_file(path: str | os.PathLike) -> dict[str, Any]:
        """Verify an index file completely; raise :class:`IndexFormatError` at the first problem.

        Checks every array's SHA-256 (all arrays listed, also those an index does not
        read) by streaming the file in 16 MiB chunks, then validates the content as
        :meth:`load` does (through a memory map: memory stays bounded whatever the file
        size). Returns ``{"path", "format_version", "file_bytes", "verified_bytes",
        "arrays": {name: sha256}, "method", "n_items", "dim", "ok": True}``. This is
        what ``dehub info --verify`` runs.
        """
        report = verify_container(path)
        index = Index.load(path, mmap=True, verify=False)
        report.update(method=index.model.name, n_items=index.n_items, dim=index.dim, ok=True)
        return report

    def info(self) -> dict[str, Any]:
        return {
            "method": self.model.name,
            "params": jsonable(self.model.get_params()),
            "n_items": self.n_items,
            "dim": self.dim,
            "gallery_dtype": str(self.model.gallery_.dtype),
            "metadata": self.metadata,
        }

    def __repr__(self) -> str:
        return f"Index({self.model!r}, n_items={self.n_items}, dim={self.dim})"


# --------------------------------------------------------------------------- load checks
def _entry(header: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in header["arrays"] if a["name"] == name)


def _check_index_header(path: Path, header: dict[str, Any]) -> None:
    """The index-level header keys, typed as :meth:`Index.save` writes them."""
    if header.get("kind") != _KIND:
        raise IndexFormatError(f"{path}: holds {header.get('kind')!r}, expected a {_KIND!r} file")
    method = header.get("method")
    if not isinstance(method, str) or method not in METHODS:
        raise IndexFormatError(
            f"{path}: method {method!r} is unknown to this dehub; expected one of "
            f"{sorted(METHODS)}. Upgrade dehub."
        )
    params = header.get("params", {})
    if not isinstance(params, dict):
        raise IndexFormatError(f"{path}: stored parameters must be a JSON object; found {params!r}")
    metadata = header.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise IndexFormatError(
            f"{path}: metadata must be a JSON object or null; found {type(metadata).__name__}"
        )
    n_reference = header.get("n_reference")
    if n_reference is not None and not (type(n_reference) is int and n_reference >= 1):
        raise IndexFormatError(
            f"{path}: n_reference must be a positive integer or null; found {n_reference!r}"
        )


def _check_gallery(path: Path, header: dict[str, Any], gallery: np.ndarray) -> np.ndarray:
    dt = _entry(header, "gallery")["dtype"]
    if dt not in _GALLERY_DTYPES:
        raise IndexFormatError(
            f"{path}: the gallery must be float16, float32 or float64 ('<f2', '<f4' or '<f8'); found dtype {dt}"
        )
    if gallery.ndim != 2 or gallery.shape[0] < 1 or gallery.shape[1] < 1:
        raise IndexFormatError(
            f"{path}: the gallery must be a non-empty 2-D array (n_items, dim); found shape {gallery.shape}"
        )
    try:
        return check_embeddings(gallery, "the stored gallery")
    except (TypeError, ValueError) as exc:
        raise IndexFormatError(f"{path}: {exc}") from None


def _check_stored_ids(path: Path, header: dict[str, Any], ids: np.ndarray) -> np.ndarray:
    dt = _entry(header, "ids")["dtype"]
    if dt != "<i8":
        raise IndexFormatError(f"{path}: ids must be stored as int64 ('<i8'); found dtype {dt}")
    try:
        return check_ids(ids, ids.shape[0], "stored ids")
    except (TypeError, ValueError) as exc:
        raise IndexFormatError(f"{path}: {exc}") from None


def _check_reference(
    path: Path, header: dict[str, Any], reference: np.ndarray, gallery: np.ndarray, n_reference: int | None
) -> np.ndarray:
    dt = _entry(header, "reference")["dtype"]
    if dt not in _GALLERY_DTYPES:
        raise IndexFormatError(f"{path}: the stored reference must be float16/32/64; found dtype {dt}")
    if reference.ndim != 2 or reference.shape[1] != gallery.shape[1] or reference.shape[0] < 1:
        raise IndexFormatError(
            f"{path}: the stored reference must be 2-D with the gallery's {gallery.shape[1]} columns; "
            f"found shape {reference.shape}"
        )
    if n_reference is not None and reference.shape[0] != n_reference:
        raise IndexFormatError(
            f"{path}: the stored reference has {reference.shape[0]} rows, the header says n_reference={n_reference}"
        )
    try:
        return check_embeddings(reference, "the stored reference")
    except (TypeError, ValueError) as exc:
        raise IndexFormatError(f"{path}: {exc}") from None


def _check_statistics(path: Path, fitted: dict[str, np.ndarray]) -> None:
    """Method statistics hold finite floats (what each array must be, the method checks)."""
    for name, arr in fitted.items():
        flat = arr.reshape(-1)
        step = max(1, (16 << 20) // max(arr.itemsize, 1))
        if arr.dtype.kind == "f":
            for s in range(0, flat.size, step):
                if not np.isfinite(flat[s : s + step]).all():
                    raise IndexFormatError(
                        f"{path}: stored statistic 'model.{name}' holds NaN or infinite values; expected finite floats"
                    )


def _reporting(blocks, bar):
    """``blocks`` as they are, each counted on the progress ``bar`` by its rows."""
    for block in blocks:
        yield block
        bar.update(int(block.shape[0]))


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
