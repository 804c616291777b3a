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

import json
import logging
import os
import re
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._ids import check_ids
from .._json import jsonable
from .._progress import progress_bar
from .._validation import check_embeddings, check_normalization
from ..engine import EngineParams, build_reference_index, choose_engine
from ..engine.exact import DEFAULT_MEMORY_BUDGET
from ..methods import get_method
from ._inputs import Part, Source, list_sources, open_matrix, plan_parts, read_part
from ._manifest import _save_npy, claim, count_claims, run_key, validate_part, write_manifest, write_part
from ._methods import check_distributable, part_statistics

__all__ = ["fit", "RunSummary", "ShardError", "DistributedRunError", "DEFAULT_PART_ROWS"]

DEFAULT_PART_ROWS = 65536  # gallery rows per unit of work (and per statistic file)
_ENGINES = ("exact", "ivf", "auto")
_MAX_TEMP_DIR = 40  # Ray's unix sockets live ~60 characters below its temp dir (limit 107)


class ShardError(ValueError):
    """Bad data in one gallery part (named with its file and rows); the job failed."""


class DistributedRunError(RuntimeError):
    """The cluster failed the job (not the data); committed parts are kept for a rerun."""


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


# --------------------------------------------------------------------------- worker
class _PartWorker:
    """One actor of the pool: opens the reference (or receives the index) once, then
    computes the statistics of one part per call and commits them to the output."""

    def __init__(
        self,
        *,
        out: str,
        key: str,
        parts: list[Part],
        model: Any,
        reference: list[Source],
        index_ref: list[Any] | None,
        memory_budget: int,
        normalize: str,
    ) -> None:

        self.out = Path(out)
        self.key = key
        self.parts = parts
        self.model = model.clone()  # the estimator itself travels (no registry look-up by name)
        self.reference = open_matrix(reference)
        self.dim = int(reference[0].dim)
        self.memory_budget = int(memory_budget)
        self.normalize = normalize
        self.index = None
        if index_ref is not None:
            import ray

            self.index = ray.get(index_ref[0])  # zero-copy views of the object store
            self.index.database = self.reference  # for the exact fallback of short rows

    def _checked_rows(self, part: Part) -> np.ndarray:
        rows = read_part(part)
        if rows.shape[1] != self.dim:
            raise ShardError(
                f"gallery {part.describe()}: dimension {rows.shape[1]}, expected {self.dim} "
                "(the reference dimension)"
            )
        try:
            rows = check_embeddings(rows, f"gallery {part.describe()}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore" if self.normalize == "none" else "default")
                rows = check_normalization(rows, f"gallery {part.describe()}", self.normalize)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ShardError(str(exc)) from None
        return rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        numbers, statuses, records = [], [], []
        for number in batch["part"]:
            part = self.parts[int(number)]
            claim(self.out, part)
            t0 = time.perf_counter()
            record = validate_part(self.out, part, self.key)
            status = "present"
            if record is None:  # not already committed (by an attempt whose reply was lost)
                rows = self._checked_rows(part)
                stats = part_statistics(
                    self.model, rows, self.reference, index=self.index, memory_budget=self.memory_budget
                )
                record = write_part(self.out, part, self.key, stats, seconds=time.perf_counter() - t0)
                status = "computed"
            numbers.append(int(number))
            statuses.append(status)
            records.append(json.dumps(record))
        return {"part": numbers, "status": statuses, "record": records}


# --------------------------------------------------------------------------- driver
def _resolve_model(method: Any, params: dict[str, Any]) -> Any:
    if isinstance(method, str):
        return get_method(method, **params)
    return method.clone(**params)  # never mutate the caller's estimator


def _ray_temp_dir(out: Path) -> str:
    """Ray's temp/spill directory inside the run's directory, or a short one when the run's
    path is too long for Ray's unix sockets (107 characters)."""
    candidate = out / ".ray"
    if len(str(candidate)) <= _MAX_TEMP_DIR:
        candidate.mkdir(parents=True, exist_ok=True)
        return str(candidate)
    return tempfile.mkdtemp(prefix="dehub-ray-")


def _start_ray(address: str | None, num_workers: int | None, out: Path) -> bool:
    """Connect to (or start) Ray; return True when this call started it (to stop it)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            "the distributed runner needs Ray Data; install it with `pip install dehub[ray]`"
        ) from exc
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        return True
    ray.init(
        num_cpus=num_workers or os.cpu_count() or 1,
        include_dashboard=False,
        _temp_dir=_ray_temp_dir(out),
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    return True


def _pool_size(ray: Any, num_workers: int | None, worker_bytes: int) -> int:
    """Actors in the pool: ``num_workers`` or one per CPU, checked against the cluster so
    that the pool can be scheduled (a pool larger than the cluster would wait forever)."""
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if num_workers is not None and (isinstance(num_workers, bool) or int(num_workers) < 1):
        raise ValueError(f"num_workers must be a positive integer; received {num_workers!r}")
    workers = int(num_workers) if num_workers is not None else max(1, cpus)
    if workers > cpus:
        raise ValueError(f"num_workers={workers} exceeds the cluster's {cpus} CPUs (one CPU per worker)")
    node_memory = max(
        (float(n["Resources"].get("memory", 0)) for n in ray.nodes() if n.get("Alive")), default=0.0
    )
    if node_memory and worker_bytes > node_memory:
        raise ValueError(
            f"one worker needs {worker_bytes / 2**20:.0f} MiB (memory_budget + one part) but the largest "
            f"node offers {node_memory / 2**20:.0f} MiB; lower memory_budget or part_rows"
        )
    return workers


def _shard_error(exc: BaseException) -> ShardError | None:
    """The ShardError a worker raised, found inside Ray's wrapping exceptions."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        if isinstance(e, ShardError):
            return ShardError(str(e))
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]

    m = re.search(r"ShardError: (.+)", str(exc))
    return ShardError(m.group(1).strip()) if m else None


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
        running Ray, ``RAY_ADDRESS``, or a local cluster started (and stopped) here with
        its temp and spill files under ``out/.ray``.
    verify_parts : on a rerun, check the SHA-256 of every committed part before keeping it
        (reads all statistics once: 384 GB for 2B items at k=16); False keeps parts whose
        sidecar matches and whose files exist, and leaves the checksums to ``load_index``.
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
    )
    parts = plan_parts(plan.g_sources, part_rows)
    kept = _kept_parts(out_path, parts, plan.key, verify_parts)
    todo = [p for p in parts if p.number not in kept]
    run = _RunResult(records=dict(kept))
    if todo:
        run = _run_parts(
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
        raise ValueError(
            f"normalize must be 'warn', 'none' or 'error' in the distributed runner; received "
            f"{normalize!r} ('l2' would serve other vectors than the files hold: normalize them first)"
        )
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be a non-negative integer; received {max_retries!r}")
    if (
        isinstance(memory_budget, bool)
        or not isinstance(memory_budget, (int, np.integer))
        or memory_budget <= 0
    ):
        raise ValueError(f"memory_budget must be a positive number of bytes; received {memory_budget!r}")


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
) -> _Plan:
    """Check the method and the inputs once, resolve the engine, and name the run (its key)."""
    check_distributable(model)
    model = _with_engine(model, engine, engine_params)
    current = model.reference_engine()
    eng = current[0] if current is not None else "exact"
    if eng not in _ENGINES:
        raise ValueError(
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
    ids_arr = None if ids is None else check_ids(ids, n_rows)
    eparams = EngineParams.coerce(current[1]) if current is not None else None
    if eng == "auto":
        eng = choose_engine(n_rows, n_ref, dim, eparams)
        if eng not in ("exact", "ivf"):
            raise ValueError(
                f"engine='auto' chose {eng!r}, which the distributed runner does not broadcast; pass engine='ivf'"
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
    return _Plan(
        model=model,
        engine=eng,
        engine_params=eparams,
        g_sources=g_sources,
        r_sources=r_sources,
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


@dataclass
class _RunResult:
    records: dict[int, dict[str, Any]]
    computed: int = 0
    present: int = 0
    build_seconds: float = 0.0
    workers: int = 0


def _run_parts(
    plan: _Plan,
    parts: list[Part],
    todo: list[Part],
    kept: dict[int, dict[str, Any]],
    out_path: Path,
    *,
    part_rows: int,
    num_workers: int | None,
    memory_budget: int,
    max_retries: int,
    ray_address: str | None,
    progress: bool,
) -> _RunResult:
    """Compute the missing parts on an actor pool (Ray started here when none runs)."""
    run = _RunResult(records=dict(kept))
    started = _start_ray(ray_address, num_workers, out_path)
    try:
        import ray
        import ray.data

        part_bytes = part_rows * plan.dim * 8 + part_rows * plan.k * 24
        run.workers = _pool_size(ray, num_workers, memory_budget + part_bytes)
        index_ref = None
        if plan.engine == "ivf":
            index = build_reference_index(
                plan.reference,
                engine="ivf",
                engine_params=plan.engine_params,
                progress="IVF build" if progress else False,
            )
            run.build_seconds = index.build_seconds
            index.database = None  # each worker re-opens the reference itself
            index_ref = [ray.put(index)]
            del index
        data_log = logging.getLogger("ray.data")
        log_level = data_log.level
        data_log.setLevel(max(log_level, logging.WARNING))  # our own progress bar instead
        with warnings.catch_warnings():  # Ray's own deprecated fields, set by its constructor
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx = ray.data.DataContext.get_current()
        saved = (ctx.enable_progress_bars, ctx.max_errored_blocks)
        ctx.enable_progress_bars = False
        ctx.max_errored_blocks = 0  # a failed part fails the job, never a silent gap
        try:
            ds = ray.data.from_items([{"part": p.number} for p in todo], override_num_blocks=len(todo))
            with warnings.catch_warnings():  # max_restarts/max_task_retries have no named parameter
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
                results = ds.map_batches(
                    _PartWorker,
                    fn_constructor_kwargs={
                        "out": str(out_path),
                        "key": plan.key,
                        "parts": parts,
                        "model": plan.model,
                        "reference": plan.r_sources,
                        "index_ref": index_ref,
                        "memory_budget": memory_budget,
                        "normalize": plan.config["normalize"],
                    },
                    batch_size=1,
                    batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(size=min(run.workers, len(todo))),
                    num_cpus=1,
                    memory=memory_budget + part_bytes,
                    max_restarts=max_retries,
                    max_task_retries=max_retries,
                )
            _collect(results, run, kept, len(parts), plan.n_rows, progress)
        except Exception as exc:
            _raise_run_error(exc, ray, run.records, todo, parts, out_path, plan.key)
            raise
        finally:
            ctx.enable_progress_bars, ctx.max_errored_blocks = saved
            data_log.setLevel(log_level)
            del index_ref
    finally:
        if started:
            ray.shutdown()
    return run


def _collect(results: Any, run: _RunResult, kept: dict, n_parts: int, n_rows: int, progress: bool) -> None:
    """Record each finished part as it arrives, with an honest rows-done progress line."""
    n_done_rows = sum(int(r["rows"]) for r in kept.values())
    with progress_bar(total=n_parts, desc="dehub parts", enable=progress, unit="part") as bar:
        bar.update(len(kept))
        for row in results.iter_rows():
            rec = json.loads(row["record"])
            run.records[int(row["part"])] = rec
            if row["status"] == "computed":
                run.computed += 1
            else:
                run.present += 1
            n_done_rows += int(rec["rows"])
            bar.update(1)
            bar.set_postfix_str(f"{n_done_rows}/{n_rows} rows")


def _raise_run_error(
    exc: Exception, ray: Any, records: dict, todo: list, parts: list, out_path: Path, key: str
):
    """A bad shard as :class:`ShardError`; a failed Ray job as a resumable :class:`DistributedRunError`."""
    err = _shard_error(exc)
    if err is not None:
        raise err from None
    if isinstance(exc, ray.exceptions.RayError):  # e.g. a worker died past max_retries
        committed = len(records) + sum(
            1 for p in todo if p.number not in records and validate_part(out_path, p, key, check_files=False)
        )
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DistributedRunError(
            f"the Ray job failed ({type(exc).__name__}: {first}); {committed} of {len(parts)} "
            f"parts are committed in {out_path}: run the same call again to resume"
        ) from exc


def _finish(
    plan: _Plan,
    parts: list[Part],
    todo: list[Part],
    kept: dict[int, dict[str, Any]],
    run: _RunResult,
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
    ids_sha = None if plan.ids is None else _save_npy(out_path / "ids.npy", plan.ids)
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
