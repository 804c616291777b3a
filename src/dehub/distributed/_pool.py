"""The Ray side of the distributed runner: the actor pool that computes the missing parts.

Each actor (:class:`_PartWorker`) opens the reference (or receives the approximate
engine's index, built once on the driver and broadcast) for its whole life and commits
one part per call; :func:`run_parts` starts Ray when none runs, sizes the pool from the
cluster, streams the finished parts with an honest progress line, and turns failures into
:class:`ShardError` (bad data, named) or a resumable :class:`DistributedRunError`.
Ray is imported only here and only when a run has parts to compute.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError, MissingExtraError
from .._progress import progress_bar
from .._validation import check_embeddings, check_normalization
from ..engine import build_reference_index
from ..rundir import Part, Source, claim, open_matrix, read_part, validate_part, write_part
from ._methods import part_statistics

__all__ = ["ShardError", "DistributedRunError", "PoolResult", "run_parts"]


class ShardError(InputError):
    """Bad data in one gallery part (named with its file and rows); the job failed."""


class DistributedRunError(RuntimeError):
    """The cluster failed the job (not the data); committed parts are kept for a rerun."""


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
        gallery_bank: list[Source] | None = None,
    ) -> None:

        self.out = Path(out)
        self.key = key
        self.parts = parts
        self.model = model.clone()  # the estimator itself travels (no registry look-up by name)
        self.reference = open_matrix(reference)
        self.gallery_bank = None if gallery_bank is None else open_matrix(gallery_bank)
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
                    self.model,
                    rows,
                    self.reference,
                    index=self.index,
                    memory_budget=self.memory_budget,
                    gallery_bank=self.gallery_bank,
                )
                record = write_part(self.out, part, self.key, stats, seconds=time.perf_counter() - t0)
                status = "computed"
            numbers.append(int(number))
            statuses.append(status)
            records.append(json.dumps(record))
        return {"part": numbers, "status": statuses, "record": records}


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
        raise MissingExtraError("the distributed runner", "ray", "ray") from exc
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
        raise InputError(f"num_workers must be a positive integer; received {num_workers!r}")
    workers = int(num_workers) if num_workers is not None else max(1, cpus)
    if workers > cpus:
        raise InputError(f"num_workers={workers} exceeds the cluster's {cpus} CPUs (one CPU per worker)")
    node_memory = max(
        (float(n["Resources"].get("memory", 0)) for n in ray.nodes() if n.get("Alive")), default=0.0
    )
    if node_memory and worker_bytes > node_memory:
        raise InputError(
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


@dataclass
class PoolResult:
    records: dict[int, dict[str, Any]]
    computed: int = 0
    present: int = 0
    build_seconds: float = 0.0
    workers: int = 0


def run_parts(
    plan: Any,  # the driver's run plan (dehub.distributed._runner._Plan)
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
) -> PoolResult:
    """Compute the missing parts on an actor pool (Ray started here when none runs)."""
    run = PoolResult(records=dict(kept))
    started = _start_ray(ray_address, num_workers)
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
                        "gallery_bank": plan.b_sources,
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
        _stop_ray(ray, started)
    return run


def _collect(results: Any, run: PoolResult, kept: dict, n_parts: int, n_rows: int, progress: bool) -> None:
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
