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
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._json import jsonable
from .._progress import progress_bar
from .._validation import check_embeddings, check_ids, check_k, check_normalization
from ..engine.exact import DEFAULT_MEMORY_BUDGET
from ._inputs import Part, Source, list_sources, open_matrix, plan_parts, read_part
from ._manifest import claim, count_claims, run_key, validate_part, write_manifest, write_part
from ._methods import check_distributable, part_statistics, uses_engine

__all__ = ["fit", "RunSummary", "ShardError", "DistributedRunError", "DEFAULT_PART_ROWS"]

DEFAULT_PART_ROWS = 65536  # gallery rows per unit of work (and per statistic file)
_ENGINES = ("exact", "ivf", "auto")


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
        method: str,
        params: dict[str, Any],
        reference: list[Source],
        index_ref: list[Any] | None,
        memory_budget: int,
        normalize: str,
    ) -> None:
        from ..methods import get_method

        self.out = Path(out)
        self.key = key
        self.parts = parts
        self.model = get_method(method, **params)
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
    from ..methods import get_method

    if isinstance(method, str):
        return get_method(method, **params)
    return method.clone(**params)  # never mutate the caller's estimator


class _RayNotes(logging.Filter):
    """Ray's alarming lines, said in what they mean for a dehub run (``None``: dropped).

    * Ray Data's "The job may hang forever unless the cluster scales up": logged while the
      pool waits for CPUs that another job or a busy machine holds; the run goes on.
    * "Token authentication is enabled for this Ray cluster": Ray's default for a local
      cluster (its token in ``~/.ray/auth_token``), which is what dehub wants: said once
      by Ray on every start, dropped.
    * "Progress bars disabled": dehub turns Ray Data's bars off and shows its own.
    """

    NOTES = {
        "hang forever unless the cluster scales up": (
            "dehub: the worker pool is waiting for free CPUs on the Ray cluster (another job or "
            "a busy machine holds them); the run continues when they are free"
        ),
        "Token authentication is enabled for this Ray cluster": None,
        "Progress bars disabled": None,  # dehub shows its own progress bar
    }
    LOGGERS = (
        "ray.data._internal.progress",
        "ray.data._internal.execution.resource_manager",
        "ray._private.authentication.authentication_token_setup",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        for key, note in self.NOTES.items():
            if key in text:
                if note is None:
                    return False
                record.msg, record.args = note, ()
        return True

    def attach(self) -> None:
        for name in self.LOGGERS:  # a filter sees only its own logger's records
            logging.getLogger(name).addFilter(self)

    def detach(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)


_NOTES = _RayNotes()  # stateless: attached while a run uses Ray


def _start_ray(address: str | None, num_workers: int | None) -> str | None:
    """Connect to (or start) Ray. Returns None when Ray was already running (left as it
    is); "" when this call connected to a cluster; else the temp directory of the local
    cluster it started (removed with :func:`_stop_ray`).

    A local cluster has its temp and spill files in a short directory of the system's
    temp (never in the user's output directory), no dashboard, node address 127.0.0.1
    with every server on the loopback interface, and Ray's default token authentication.
    Ray replaces a node address 127.0.0.1 by the machine's address unless its own switch
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (local-only, as on macOS) is set before Ray is
    imported: it is set here when no cluster address is given and Ray is not imported yet.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not (address or os.environ.get("RAY_ADDRESS")) and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            "the distributed runner needs Ray Data; install it with `pip install dehub[ray]`"
        ) from exc
    _NOTES.attach()
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        return ""
    tmp = tempfile.mkdtemp(prefix="dehub-ray-")  # short: Ray's unix sockets (107 characters)
    try:
        ray.init(
            num_cpus=num_workers or os.cpu_count() or 1,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=tmp,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    except BaseException:
        _NOTES.detach()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _stop_ray(ray: Any, started: str | None) -> None:
    _NOTES.detach()
    if started is None:
        return
    ray.shutdown()
    if started:
        shutil.rmtree(started, ignore_errors=True)


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
    import re

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
        running Ray, ``RAY_ADDRESS``, or a local cluster started (and stopped) here on
        127.0.0.1 with its temp and spill files in the system's temp directory (removed).
    verify_parts : on a rerun, check the SHA-256 of every committed part before keeping it
        (reads all statistics once: 384 GB for 2B items at k=16); False keeps parts whose
        sidecar matches and whose files exist, and leaves the checksums to ``load_index``.
    **params : the method's parameters (``k=16, alpha=0.75``).
    """
    t_start = time.perf_counter()
    out_path = Path(os.fspath(out)).resolve()
    model = _resolve_model(method, params)
    check_distributable(model)
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
    if engine is not None or engine_params is not None:
        if uses_engine(model):
            model.set_params(
                **({"engine": engine} if engine is not None else {}),
                **({"engine_params": engine_params} if engine_params is not None else {}),
            )
        elif engine not in (None, "exact") or engine_params:
            raise ValueError(
                f"method {model.name!r} has no engine parameter; it always uses the exact engine"
            )
    eng = getattr(model, "engine", "exact") if uses_engine(model) else "exact"
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
    if hasattr(model, "_check_params"):
        model._check_params()
    k = int(model.get_params().get("k", 1))
    check_k(k, n_ref, name="k", what="reference items")
    if model.name == "csls":
        check_k(k, n_rows, name="k", what="gallery items (r_T(q) averages k of them)")
    ref = open_matrix(r_sources)
    ref = check_embeddings(ref, "reference")
    check_normalization(ref, "reference", normalize)  # type: ignore[arg-type]
    ids_arr = None if ids is None else check_ids(ids, n_rows)

    from ..engine import EngineParams, choose_engine

    eparams = EngineParams.coerce(getattr(model, "engine_params", None)) if uses_engine(model) else None
    if eng == "auto":
        eng = choose_engine(n_rows, n_ref, dim, eparams)
        if eng not in ("exact", "ivf"):
            raise ValueError(
                f"engine='auto' chose {eng!r}, which the distributed runner does not broadcast; pass engine='ivf'"
            )
    if eng == "exact" and uses_engine(model):
        model.set_params(engine="exact")  # 'auto' resolved once for the whole gallery, not per part
    if eng == "ivf" and eparams is not None:
        eparams = replace(eparams, memory_budget=int(memory_budget))
        model.set_params(engine="ivf", engine_params=asdict(eparams))
    params_doc = jsonable(model.get_params())
    if isinstance(params_doc.get("engine_params"), dict):  # knobs that do not change results
        params_doc["engine_params"] = {
            name: v
            for name, v in params_doc["engine_params"].items()
            if name not in ("memory_budget", "batch_size")
        }
    config = {
        "method": model.name,
        "params": params_doc,
        "engine": eng,
        "engine_params": None
        if eng == "exact" or eparams is None
        else jsonable(
            {name: v for name, v in asdict(eparams).items() if name not in ("memory_budget", "batch_size")}
        ),
        "n_reference": n_ref,
        "dim": dim,
        "reference": [(s.url, s.rows, s.fingerprint) for s in r_sources],
        "normalize": normalize,
    }
    key = run_key(config)
    parts = plan_parts(g_sources, part_rows)

    out_path.mkdir(parents=True, exist_ok=True)
    claims = out_path / "claims"
    if claims.is_dir():
        for f in claims.iterdir():
            f.unlink()
    kept: dict[int, dict[str, Any]] = {}
    for p in parts:
        rec = validate_part(out_path, p, key, check_files=verify_parts)
        if rec is not None:
            kept[p.number] = rec
    todo = [p for p in parts if p.number not in kept]
    records = dict(kept)
    computed = present = 0
    build_seconds = 0.0
    workers = 0
    if todo:
        started = _start_ray(ray_address, num_workers)
        try:
            import ray
            import ray.data

            part_bytes = part_rows * dim * 8 + part_rows * k * 24
            workers = _pool_size(ray, num_workers, int(memory_budget) + part_bytes)
            index_ref = None
            if eng == "ivf":
                from ..engine import build_reference_index

                index = build_reference_index(
                    ref, engine="ivf", engine_params=eparams, progress="IVF build" if progress else False
                )
                build_seconds = index.build_seconds
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
                            "key": key,
                            "parts": parts,
                            "method": model.name,
                            "params": model.get_params(),
                            "reference": r_sources,
                            "index_ref": index_ref,
                            "memory_budget": int(memory_budget),
                            "normalize": normalize,
                        },
                        batch_size=1,
                        batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=min(workers, len(todo))),
                        num_cpus=1,
                        memory=int(memory_budget) + part_bytes,
                        max_restarts=max_retries,
                        max_task_retries=max_retries,
                    )
                n_done_rows = sum(int(r["rows"]) for r in kept.values())
                with progress_bar(total=len(parts), desc="dehub parts", enable=progress, unit="part") as bar:
                    bar.update(len(kept))
                    for row in results.iter_rows():
                        rec = json.loads(row["record"])
                        records[int(row["part"])] = rec
                        if row["status"] == "computed":
                            computed += 1
                        else:
                            present += 1
                        n_done_rows += int(rec["rows"])
                        bar.update(1)
                        bar.set_postfix_str(f"{n_done_rows}/{n_rows} rows")
            except Exception as exc:
                err = _shard_error(exc)
                if err is not None:
                    raise err from None
                if isinstance(exc, ray.exceptions.RayError):  # e.g. a worker died past max_retries
                    committed = len(records) + sum(
                        1
                        for p in todo
                        if p.number not in records and validate_part(out_path, p, key, check_files=False)
                    )
                    first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                    raise DistributedRunError(
                        f"the Ray job failed ({type(exc).__name__}: {first}); {committed} of {len(parts)} "
                        f"parts are committed in {out_path}: run the same call again to resume"
                    ) from exc
                raise
            finally:
                ctx.enable_progress_bars, ctx.max_errored_blocks = saved
                data_log.setLevel(log_level)
                del index_ref
        finally:
            _stop_ray(ray, started)
    missing = [p.describe() for p in parts if p.number not in records]
    if missing:  # cannot happen unless Ray dropped a block: refuse to write a short manifest
        raise RuntimeError(f"{len(missing)} parts produced no result: {missing[:5]}")
    attempts = count_claims(out_path)
    retried = sum(1 for p in todo if attempts.get(p.name, 0) > 1)
    ids_sha = None
    if ids_arr is not None:
        from ._manifest import _save_npy

        ids_sha = _save_npy(out_path / "ids.npy", ids_arr)
    seconds = time.perf_counter() - t_start
    summary = RunSummary(
        out=str(out_path),
        manifest=str(out_path / "manifest.json"),
        method=model.name,
        engine=eng,
        rows=n_rows,
        parts=len(parts),
        computed=computed,
        skipped=len(kept) + present,
        retried=retried,
        attempts=sum(attempts.get(p.name, 0) for p in todo),
        num_workers=workers,
        memory_budget=int(memory_budget),
        seconds=round(seconds, 3),
        build_seconds=round(build_seconds, 3),
    )
    write_manifest(
        out_path,
        config=config,
        key=key,
        gallery=g_sources,
        reference=r_sources,
        records=list(records.values()),
        summary=summary.as_dict(),
        ids_sha256=ids_sha,
    )
    return summary
