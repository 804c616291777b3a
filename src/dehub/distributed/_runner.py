"""The Ray Data runner: gallery parts in parallel on an actor pool, each actor holding the
reference set (exact engine) or the approximate engine's index (built once by the
driver, broadcast through the object store) for its whole life.

Fault model
-----------
* A worker process that dies (killed, OOM, node lost) is restarted by Ray up to
  ``max_retries`` times and its in-flight part is retried up to ``max_retries`` times
  (``max_restarts`` / ``max_task_retries`` of the actor: finite, never Ray Data's
  default of infinite). Parts are pure functions of their input rows, so a retry writes
  the same bytes.
* An error in the user's data (wrong dimension, NaN/inf, not unit-norm with
  ``normalize='error'``) is an application error: it is not retried (``retry_exceptions``
  stays off) and fails the job with :class:`ShardError` naming the part, its file and
  rows. ``max_errored_blocks`` is never set, so a job never "succeeds" with rows missing.
* Every part commits atomically (statistics, then a sidecar with their SHA-256); a
  restarted job skips the parts that validate and recomputes only the others.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError
from .._ids import check_ids
from .._json import jsonable
from .._validation import check_embeddings, check_normalization
from ..engine import EngineParams, choose_engine
from ..engine.exact import DEFAULT_MEMORY_BUDGET
from ..methods import get_method
from ..rundir import (
    Part,
    Source,
    count_claims,
    list_sources,
    open_matrix,
    plan_parts,
    run_key,
    save_npy,
    validate_part,
    write_manifest,
)
from ._methods import check_distributable
from ._pool import DistributedRunError, PoolResult, ShardError, run_parts

__all__ = ["fit", "RunSummary", "ShardError", "DistributedRunError", "DEFAULT_PART_ROWS"]

DEFAULT_PART_ROWS = 65536  # gallery rows per unit of work (and per statistic file)
_ENGINES = ("exact", "ivf", "auto")


@dataclass(frozen=True)
class RunSummary:
    """What a distributed run did.

    rows, parts : gallery rows and parts in the output (all of them, computed or kept).
    computed : parts computed by this run; skipped : parts kept from an earlier run.
    retried : parts attempted more than once in this run (a worker died under them);
    attempts : part attempts in total.
    seconds : wall time of the run; build_seconds : of the approximate index build.
    """

    out: str
    manifest: str
    method: str
    engine: str
    rows: int
    parts: int
    computed: int
    skipped: int
    retried: int
    attempts: int
    num_workers: int
    memory_budget: int
    seconds: float
    build_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.method} ({self.engine}): {self.rows} rows in {self.parts} parts; computed "
            f"{self.computed}, skipped {self.skipped}, retried {self.retried}; {self.num_workers} "
            f"workers, {self.seconds:.1f} s -> {self.manifest}"
        )


def _resolve_model(method: Any, params: dict[str, Any]) -> Any:
    if isinstance(method, str):
        return get_method(method, **params)
    return method.clone(**params)  # never mutate the caller's estimator


def fit(
    method: Any,
    gallery: Any,
    reference: Any,
    out: str | os.PathLike,
    *,
    num_workers: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    engine: str | None = None,
    engine_params: dict[str, Any] | None = None,
    part_rows: int = DEFAULT_PART_ROWS,
    normalize: str = "warn",
    ids: Any = None,
    max_retries: int = 3,
    ray_address: str | None = None,
    progress: bool = True,
    verify_parts: bool = True,
    gallery_bank: Any = None,
    **params: Any,
) -> RunSummary:
    """Fit ``method``'s per-item statistics on a Ray cluster; write them under ``out``.

    Parameters
    ----------
    method : a registry name (``"nnn"``) or an unfitted estimator
        Only methods whose statistics decompose over gallery rows
        (``get_tags(model).row_decomposable``: NNN, its variants, CSLS, QB-Norm IS);
        others raise :class:`~dehub.distributed.NotDistributableError`.
    gallery, reference : a ``.npy`` file, a directory of ``.npy`` shards, or a list of
        files; local paths or fsspec URLs. The gallery is cut into parts of ``part_rows``.
    out : directory (shared by every worker on a real cluster)
        Receives the part files and ``manifest.json``; :func:`load_index` reads it back.
        An earlier run's valid parts in it are kept (resume), others recomputed.
    num_workers : actors in the pool (one CPU each); default: every CPU of the cluster.
    memory_budget : bytes of engine working memory per worker (the exact engine's blocks,
        the IVF engine's candidate buffers); Ray reserves this plus one part per worker.
    engine : ``"exact"``, ``"ivf"`` or ``"auto"`` (methods with an engine parameter).
        ``ivf`` builds the index ONCE on the driver and broadcasts it via the object store.
    engine_params : IVF knobs (:class:`dehub.engine.EngineParams`: nlist, nprobe, seed...).
    normalize : ``"warn"``, ``"none"`` or ``"error"`` for rows that are not unit-norm
        (``"l2"`` is refused: normalize the files first, the index serves them as stored).
    ids : (n_gallery,) external ids, stored as ``ids.npy`` beside the manifest.
    max_retries : restarts of a dead worker and retries of its part (finite).
    ray_address : an existing cluster (``"auto"``, ``"ray://host:10001"``); default: the
        running Ray, ``RAY_ADDRESS``, or a local cluster started (and stopped) here on
        127.0.0.1 with its temp and spill files in the system's temp directory (removed).
    verify_parts : on a rerun, check the SHA-256 of every committed part before keeping it
        (reads all statistics once: 384 GB for 2B items at k=16); False keeps parts whose
        sidecar matches and whose files exist, and leaves the checksums to ``load_index``.
    gallery_bank : a gallery-modality bank (files, as ``reference``) for a method that takes
        one (``get_tags(model).gallery_bank``) and decomposes over gallery rows with it
        (``model.distributed_obstacle(gallery_bank=True)`` is None: DBNorm's DualIS); every
        worker opens it beside the reference and passes it to the method's
        ``gallery_statistics``. Its files are part of the run's key (a rerun with another
        bank recomputes every part). A bank for a method that takes none is an error.
    **params : the method's parameters (``k=16, alpha=0.75``).
    """
    t_start = time.perf_counter()
    out_path = Path(os.fspath(out)).resolve()
    _check_run_options(normalize, max_retries, memory_budget)
    plan = _plan_run(
        _resolve_model(method, params),
        gallery,
        reference,
        ids,
        engine,
        engine_params,
        normalize,
        memory_budget,
        gallery_bank,
    )
    parts = plan_parts(plan.g_sources, part_rows)
    kept = _kept_parts(out_path, parts, plan.key, verify_parts)
    todo = [p for p in parts if p.number not in kept]
    run = PoolResult(records=dict(kept))
    if todo:
        run = run_parts(
            plan,
            parts,
            todo,
            kept,
            out_path,
            part_rows=part_rows,
            num_workers=num_workers,
            memory_budget=int(memory_budget),
            max_retries=max_retries,
            ray_address=ray_address,
            progress=progress,
        )
    return _finish(plan, parts, todo, kept, run, out_path, memory_budget=int(memory_budget), t_start=t_start)


def _check_run_options(normalize: str, max_retries: Any, memory_budget: Any) -> None:
    """The run's own options, checked before any data is read."""
    if normalize not in ("warn", "none", "error"):
        raise InputError(
            f"normalize must be 'warn', 'none' or 'error' in the distributed runner; received "
            f"{normalize!r} ('l2' would serve other vectors than the files hold: normalize them first)"
        )
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise InputError(f"max_retries must be a non-negative integer; received {max_retries!r}")
    if (
        isinstance(memory_budget, bool)
        or not isinstance(memory_budget, (int, np.integer))
        or memory_budget <= 0
    ):
        raise InputError(f"memory_budget must be a positive number of bytes; received {memory_budget!r}")


def _with_engine(model: Any, engine: str | None, engine_params: dict[str, Any] | None) -> Any:
    """The estimator with the requested reference engine (the method says whether it has one)."""
    current = model.reference_engine()
    if engine is None and engine_params is None:
        return model
    if current is not None:
        return model.with_reference_engine(
            engine if engine is not None else current[0],
            engine_params if engine_params is not None else current[1],
        )
    if engine not in (None, "exact") or engine_params:
        model.with_reference_engine(str(engine), engine_params)  # raises, in the method's words
    return model


@dataclass
class _Plan:
    """What a run computes: the estimator, its engine, the inputs, and the run's identity."""

    model: Any
    engine: str
    engine_params: Any
    g_sources: list[Source]
    r_sources: list[Source]
    b_sources: list[Source] | None
    reference: Any
    dim: int
    n_rows: int
    k: int
    ids: np.ndarray | None
    config: dict[str, Any]
    key: str


def _plan_run(
    model: Any,
    gallery: Any,
    reference: Any,
    ids: Any,
    engine: str | None,
    engine_params: dict[str, Any] | None,
    normalize: str,
    memory_budget: int,
    gallery_bank: Any = None,
) -> _Plan:
    """Check the method and the inputs once, resolve the engine, and name the run (its key)."""
    check_distributable(model, gallery_bank=gallery_bank is not None)
    model = _with_engine(model, engine, engine_params)
    current = model.reference_engine()
    eng = current[0] if current is not None else "exact"
    if eng not in _ENGINES:
        raise InputError(
            f"the distributed runner supports engines {list(_ENGINES)}; received {eng!r} (the FAISS "
            "engines' indexes are not broadcast yet: use 'ivf', or the local runner)"
        )
    g_sources = list_sources(gallery, "gallery")
    r_sources = list_sources(reference, "reference")
    dim = r_sources[0].dim
    for s in g_sources:
        if s.dim != dim:
            raise ShardError(
                f"gallery shard {s.url}: dimension {s.dim}, expected {dim} (the reference dimension)"
            )
    n_rows = sum(s.rows for s in g_sources)
    n_ref = sum(s.rows for s in r_sources)
    model.check_params()
    model.check_fit_sizes(n_rows, n_ref)
    ref = check_embeddings(open_matrix(r_sources), "reference")
    check_normalization(ref, "reference", normalize)  # type: ignore[arg-type]
    b_sources = None
    if gallery_bank is not None:
        b_sources = list_sources(gallery_bank, "gallery bank")
        if b_sources[0].dim != dim:
            raise ShardError(f"gallery bank {b_sources[0].url}: dimension {b_sources[0].dim}, expected {dim}")
        bank = check_embeddings(open_matrix(b_sources), "gallery bank")
        check_normalization(bank, "gallery bank", normalize)  # type: ignore[arg-type]
    ids_arr = None if ids is None else check_ids(ids, n_rows)
    eparams = EngineParams.coerce(current[1]) if current is not None else None
    if eng == "auto":
        eng = choose_engine(n_rows, n_ref, dim, eparams)
        if eng not in ("exact", "ivf"):
            raise InputError(
                f"the automatic engine choice picked {eng!r}, which the distributed runner does not broadcast",
                expected="an engine the runner broadcasts (exact or ivf)",
                fix="Pass {engine}",
                params={"engine": "'ivf'"},
            )
    if eng == "exact" and current is not None:
        model = model.with_reference_engine("exact", current[1])  # 'auto' resolved once, not per part
    if eng == "ivf" and eparams is not None:
        eparams = replace(eparams, memory_budget=int(memory_budget))
        model = model.with_reference_engine("ivf", asdict(eparams))
    config = {
        "method": model.name,
        "params": _result_params(jsonable(model.get_params())),
        "engine": eng,
        "engine_params": None
        if eng == "exact" or eparams is None
        else jsonable(_result_params({"engine_params": asdict(eparams)})["engine_params"]),
        "n_reference": n_ref,
        "dim": dim,
        "reference": [(s.url, s.rows, s.fingerprint) for s in r_sources],
        "normalize": normalize,
    }
    if b_sources is not None:  # only then: the keys of runs without a bank stay as they were
        config["gallery_bank"] = [(s.url, s.rows, s.fingerprint) for s in b_sources]
    return _Plan(
        model=model,
        engine=eng,
        engine_params=eparams,
        g_sources=g_sources,
        r_sources=r_sources,
        b_sources=b_sources,
        reference=ref,
        dim=dim,
        n_rows=n_rows,
        k=int(model.reference_topk() or 1),  # statistic columns per row, for the memory estimate
        ids=ids_arr,
        config=config,
        key=run_key(config),
    )


def _result_params(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters without the engine knobs that do not change results (they are not in the key)."""
    if isinstance(params.get("engine_params"), dict):
        params = dict(params)
        params["engine_params"] = {
            name: v
            for name, v in params["engine_params"].items()
            if name not in ("memory_budget", "batch_size")
        }
    return params


def _kept_parts(out_path: Path, parts: list[Part], key: str, verify: bool) -> dict[int, dict[str, Any]]:
    """The parts an earlier run of the same key committed (a rerun resumes from them)."""
    out_path.mkdir(parents=True, exist_ok=True)
    claims = out_path / "claims"
    if claims.is_dir():
        for f in claims.iterdir():
            f.unlink()
    kept: dict[int, dict[str, Any]] = {}
    for p in parts:
        rec = validate_part(out_path, p, key, check_files=verify)
        if rec is not None:
            kept[p.number] = rec
    return kept


def _finish(
    plan: _Plan,
    parts: list[Part],
    todo: list[Part],
    kept: dict[int, dict[str, Any]],
    run: PoolResult,
    out_path: Path,
    *,
    memory_budget: int,
    t_start: float,
) -> RunSummary:
    """Write the ids and the manifest (the run's commit point) and return the summary."""
    missing = [p.describe() for p in parts if p.number not in run.records]
    if missing:  # cannot happen unless Ray dropped a block: refuse to write a short manifest
        raise RuntimeError(f"{len(missing)} parts produced no result: {missing[:5]}")
    attempts = count_claims(out_path)
    ids_sha = None if plan.ids is None else save_npy(out_path / "ids.npy", plan.ids)
    summary = RunSummary(
        out=str(out_path),
        manifest=str(out_path / "manifest.json"),
        method=plan.model.name,
        engine=plan.engine,
        rows=plan.n_rows,
        parts=len(parts),
        computed=run.computed,
        skipped=len(kept) + run.present,
        retried=sum(1 for p in todo if attempts.get(p.name, 0) > 1),
        attempts=sum(attempts.get(p.name, 0) for p in todo),
        num_workers=run.workers,
        memory_budget=memory_budget,
        seconds=round(time.perf_counter() - t_start, 3),
        build_seconds=round(run.build_seconds, 3),
    )
    write_manifest(
        out_path,
        config=plan.config,
        key=plan.key,
        gallery=plan.g_sources,
        reference=plan.r_sources,
        records=list(run.records.values()),
        summary=summary.as_dict(),
        ids_sha256=ids_sha,
    )
    return summary
