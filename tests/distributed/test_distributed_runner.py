"""The Ray runner on a local 2-CPU cluster started here: same statistics and rankings as the
single process, a killed worker, an interrupted and resumed job, bad shards named."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the distributed runner needs Ray (pip install dehub[ray])")
pytest.importorskip("ray.data", reason="the distributed runner needs Ray Data (pip install dehub[ray])")

import dehub  # noqa: E402
from dehub.distributed import NotDistributableError, ShardError, fit, load_index  # noqa: E402

D = 32
SIZES = (700, 500, 333)  # three gallery shards; part_rows=256 cuts them into 7 parts
IVF = {"nlist": 16, "nprobe": 4, "seed": 3}


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster, 2 CPUs, its temp/spill files in a short directory of this run."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    tmp = tempfile.mkdtemp(prefix="dhray-")  # short: Ray's unix socket paths max 107 chars
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=tmp,
        logging_level="ERROR",
        log_to_driver=False,
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(12)
    shards = [_unit(rng, n, D) for n in SIZES]
    (root / "img_emb").mkdir()
    for i, g in enumerate(shards):
        np.save(root / "img_emb" / f"img_emb_{i}.npy", g)
    reference = _unit(rng, 3000, D)
    np.save(root / "reference.npy", reference)
    queries = _unit(rng, 40, D)
    return {
        "root": root,
        "gallery_dir": root / "img_emb",
        "reference_file": root / "reference.npy",
        "gallery": np.concatenate(shards),
        "reference": reference,
        "queries": queries,
    }


def _stats(index):
    return np.asarray(index.model.topk_scores_), np.asarray(index.model.topk_ids_)


@pytest.mark.parametrize(
    ("method", "params"),
    [("nnn", {"k": 8, "alpha": 0.75}), ("csls", {"k": 5}), ("qbnorm", {"beta": 20.0, "dynamic": False})],
)
def test_exact_equals_single_process(cluster, data, tmp_path, method, params):
    out = tmp_path / "run"
    summary = fit(
        method, data["gallery_dir"], data["reference_file"], out, part_rows=256, progress=False, **params
    )
    assert (summary.rows, summary.parts, summary.computed, summary.skipped) == (1533, 7, 7, 0)
    single = dehub.Index.build(data["gallery"], data["reference"], method=method, **params)
    index = load_index(out)
    got, want = index.model.fitted_statistics(), single.model.fitted_statistics()
    assert sorted(got) == sorted(want) and want
    for name in want:
        np.testing.assert_array_equal(np.asarray(got[name]), want[name], err_msg=name)
    for got, want in zip(index.search(data["queries"], 10), single.search(data["queries"], 10)):
        np.testing.assert_array_equal(got, want)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == method and all(manifest["params"][p] == v for p, v in params.items())
    assert manifest["created_by"] == f"dehub {dehub.__version__}"
    assert [p["rows"] for p in manifest["parts"]] == [256, 256, 188, 256, 244, 256, 77]
    assert all(len(f["sha256"]) == 64 for p in manifest["parts"] for f in p["files"].values())


def test_ivf_equals_single_process_ivf_same_seed(cluster, data, tmp_path):
    out = tmp_path / "run"
    summary = fit(
        "nnn",
        data["gallery_dir"],
        data["reference_file"],
        out,
        engine="ivf",
        engine_params=IVF,
        part_rows=256,
        progress=False,
        ids=np.arange(1533, dtype=np.int64) * 10 + 7,
        k=8,
    )
    assert summary.engine == "ivf" and summary.build_seconds > 0
    single = dehub.NNN(k=8, engine="ivf", engine_params=IVF).fit(data["gallery"], data["reference"])
    scores, ids = _stats(load_index(out))
    # Same index (same seed), same candidates, same ids. Scores: the same dot products,
    # but BLAS may sum a GEMM of 1-4 rows in another order (a list probed by that few
    # queries of a batch), so a score can differ in its last float32 bit.
    np.testing.assert_array_equal(ids, single.topk_ids_)
    np.testing.assert_allclose(scores, single.topk_scores_, rtol=0, atol=4e-7)
    index = load_index(out)
    assert index.model.engine == "ivf"
    np.testing.assert_array_equal(
        index.search(data["queries"], 10)[1], single.search(data["queries"], 10)[1] * 10 + 7
    )  # the external ids stored beside the manifest


def test_methods_that_do_not_decompose_are_refused(data, tmp_path):
    with pytest.raises(NotDistributableError, match=r"'qbnorm'.*dynamic=True.*activation set.*'nnn'"):
        fit(
            "qbnorm",
            data["gallery_dir"],
            data["reference_file"],
            tmp_path / "x",
            dynamic=True,
            progress=False,
        )
    with pytest.raises(NotDistributableError, match=r"'dn'.*whole gallery"):
        fit("dn", data["gallery_dir"], data["reference_file"], tmp_path / "x", progress=False)


def test_wrong_dimension_names_the_shard(data, tmp_path):
    bad = tmp_path / "g"
    bad.mkdir()
    np.save(bad / "img_emb_0.npy", data["gallery"][:50])
    np.save(bad / "img_emb_1.npy", np.ones((20, D + 1), dtype=np.float32))
    with pytest.raises(ValueError, match=r"img_emb_1\.npy has dimension 33.*expected dimension 32"):
        fit("nnn", bad, data["reference_file"], tmp_path / "out", progress=False)
    np.save(tmp_path / "r16.npy", data["reference"][:, :16].copy())
    with pytest.raises(ShardError, match=r"img_emb_0\.npy: dimension 32, expected 16"):
        fit("nnn", bad / "img_emb_0.npy", tmp_path / "r16.npy", tmp_path / "out", progress=False)


def test_nan_fails_the_job_naming_the_part(cluster, data, tmp_path):
    bad = tmp_path / "g"
    bad.mkdir()
    np.save(bad / "img_emb_0.npy", data["gallery"][:300])
    poisoned = data["gallery"][300:600].copy()
    poisoned[123, 4] = np.nan
    np.save(bad / "img_emb_1.npy", poisoned)
    with pytest.raises(ShardError, match=r"part-00001 \(.*img_emb_1\.npy, rows 0\.\.299\).*NaN.*row 123"):
        fit("nnn", bad, data["reference_file"], tmp_path / "out", part_rows=1000, progress=False, k=4)
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.fixture(scope="module")
def heavy(tmp_path_factory):
    """Parts slow enough (~0.2-0.5 s each on one core) to kill things in the middle."""
    root = tmp_path_factory.mktemp("heavy")
    rng = np.random.default_rng(5)
    gallery = _unit(rng, 12 * 1500, 64)
    reference = _unit(rng, 30000, 64)
    (root / "g").mkdir()
    for i in range(3):
        np.save(root / "g" / f"emb_{i}.npy", gallery[i * 6000 : (i + 1) * 6000])
    np.save(root / "ref.npy", reference)
    want = dehub.NNN(k=10).fit(gallery, reference)
    return root, want.topk_scores_, want.topk_ids_


def _committed(out: Path) -> set[str]:
    pdir = out / "parts"
    return {p.name.split(".")[0] for p in pdir.glob("part-*.json")} if pdir.is_dir() else set()


_DRIVER = textwrap.dedent(
    """
    import json, os, sys, ray
    from dehub.distributed import DistributedRunError, fit

    CLUSTER, GALLERY, REFERENCE, OUT, TICKETS, HELD, RETRIES = sys.argv[1:8]

    def gate():
        # Ray's worker_process_setup_hook: runs in every worker process of this job. Each
        # part a worker claims takes the next ticket (a file holding the worker's pid)
        # before its statistics are computed; a held ticket waits for the file "open",
        # so the test acts on a job that is mid-run whatever the machine's speed.
        # HELD: "0" holds ticket 0; "3+" holds ticket 3 and every later one.
        import itertools, time
        from dehub.distributed import _pool

        claim = _pool.claim

        def held(n):
            return n >= int(HELD[:-1]) if HELD.endswith("+") else n == int(HELD)

        def gated(out, part):
            claim(out, part)  # the attempt is on record, then the part waits at the gate
            for n in itertools.count():
                try:
                    fd = os.open(os.path.join(TICKETS, str(n)), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                    break
                except FileExistsError:
                    continue
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            while held(n) and not os.path.exists(os.path.join(TICKETS, "open")):
                time.sleep(0.05)

        _pool.claim = gated

    ray.init(
        address=CLUSTER, logging_level="ERROR", log_to_driver=False,
        runtime_env={"worker_process_setup_hook": gate},
    )
    try:
        s = fit("nnn", GALLERY, REFERENCE, OUT, part_rows=1500, progress=False, max_retries=int(RETRIES), k=10)
    except DistributedRunError as exc:
        print("SUMMARY", json.dumps({"error": str(exc)}))
    else:
        print("SUMMARY", json.dumps(s.as_dict()))
    """
)


def _driver(cluster, heavy, out: Path, tickets: Path, *, held: str, retries: int = 3) -> subprocess.Popen:
    """``fit`` in a job of its own (a driver process) whose workers pass the gate above."""
    root = heavy[0]
    tickets.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    args = [cluster, root / "g", root / "ref.npy", out, tickets, held, retries]
    return subprocess.Popen(
        [sys.executable, "-c", _DRIVER, *map(str, args)], env=env, stdout=subprocess.PIPE, text=True
    )


def _summary(driver: subprocess.Popen) -> dict:
    stdout, _ = driver.communicate(timeout=900)
    assert driver.returncode == 0, f"the driver failed ({driver.returncode}): {stdout[-2000:]}"
    # Ray's raylet may print its own lines (a task retried) to the driver's stdout
    return json.loads([line for line in stdout.splitlines() if line.startswith("SUMMARY ")][-1][8:])


def _wait_for(condition, what: str, timeout: float = 900.0) -> None:
    """Wait until ``condition()`` holds; the deadline only catches a hang (a busy machine
    is slow, never wrong)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {timeout:.0f} s for {what}"
        time.sleep(0.05)


def _ticket_pids(tickets: Path) -> set[int]:
    return {int(t.read_text()) for t in tickets.iterdir() if t.name.isdigit() and t.read_text()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_the_held_worker(tickets: Path, driver: subprocess.Popen) -> None:
    """SIGKILL the worker holding ticket 0 (in the middle of its part), then open the gate."""

    def held() -> bool:
        return (tickets / "0").is_file() and (tickets / "0").read_text() != ""

    _wait_for(lambda: held() or driver.poll() is not None, "a worker at ticket 0")
    if not held():
        raise AssertionError(
            f"the driver exited ({driver.returncode}) first: {driver.communicate()[0][-3000:]}"
        )
    os.kill(int((tickets / "0").read_text()), signal.SIGKILL)
    (tickets / "open").touch()


@pytest.mark.slow
def test_without_retries_a_killed_worker_fails_the_job_resumably(cluster, heavy, tmp_path):
    out, tickets = tmp_path / "run", tmp_path / "tickets"
    driver = _driver(cluster, heavy, out, tickets, held="0", retries=0)
    _kill_the_held_worker(tickets, driver)
    summary = _summary(driver)
    assert re.search(r"parts are committed in .*run the same call again", summary.get("error", "")), summary
    assert not (out / "manifest.json").exists()


@pytest.mark.slow
def test_killed_worker_is_retried_and_output_identical(cluster, heavy, tmp_path):
    _, want_scores, want_ids = heavy
    out, tickets = tmp_path / "run", tmp_path / "tickets"
    driver = _driver(cluster, heavy, out, tickets, held="0")
    _kill_the_held_worker(tickets, driver)
    summary = _summary(driver)
    assert summary["parts"] == 12 and summary["computed"] + summary["skipped"] == 12
    assert summary["retried"] >= 1 and summary["attempts"] >= 13
    scores, ids = _stats(load_index(out))
    np.testing.assert_array_equal(scores, want_scores)
    np.testing.assert_array_equal(ids, want_ids)


@pytest.mark.slow
def test_interrupted_job_resumes_computing_only_missing_parts(cluster, heavy, tmp_path):
    root, want_scores, want_ids = heavy
    out, tickets = tmp_path / "run", tmp_path / "tickets"
    driver = _driver(cluster, heavy, out, tickets, held="3+")
    try:
        # three parts commit, the nine others wait at the gate: the job cannot finish
        _wait_for(lambda: len(_committed(out)) == 3 or driver.poll() is not None, "3 committed parts")
        assert driver.poll() is None, f"the driver exited with {driver.returncode} before it was interrupted"
        driver.send_signal(signal.SIGKILL)  # the whole job dies: driver first, then its actors
    finally:
        driver.communicate(timeout=600)
    assert not (out / "manifest.json").exists()
    # the dead job's workers (the pids on its tickets) exit once the cluster reaps them
    _wait_for(lambda: not any(_alive(pid) for pid in _ticket_pids(tickets)), "the dead job's workers to exit")
    done = sorted(_committed(out))
    assert len(done) == 3
    # damage one committed part: it no longer matches its checksum and must be recomputed
    damaged = out / "parts" / f"{done[0]}.topk_scores.npy"
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"\0" * 8)
    stamps = {n: (out / "parts" / f"{n}.json").stat().st_mtime_ns for n in done[1:]}

    summary = fit("nnn", root / "g", root / "ref.npy", out, part_rows=1500, progress=False, k=10)
    assert (summary.computed, summary.skipped) == (10, 2)
    for n, t in stamps.items():  # valid parts were kept, not rewritten
        assert (out / "parts" / f"{n}.json").stat().st_mtime_ns == t
    scores, ids = _stats(load_index(out))
    np.testing.assert_array_equal(scores, want_scores)
    np.testing.assert_array_equal(ids, want_ids)
    again = fit("nnn", root / "g", root / "ref.npy", out, part_rows=1500, progress=False, k=10)
    assert (again.computed, again.skipped) == (0, 12)


def test_cli_build_runner_ray_then_search(cluster, data, tmp_path):
    from dehub.cli import main

    out = tmp_path / "built"
    rc = main(
        [
            "build",
            "--runner",
            "ray",
            "--gallery",
            str(data["gallery_dir"]),
            "--reference",
            str(data["reference_file"]),
            "-o",
            str(out),
            "--k",
            "8",
            "--alpha",
            "0.5",
        ]
    )
    assert rc == 0
    index = dehub.load(out)  # a run directory opens like an index file
    with pytest.raises(dehub.IndexFormatError, match=r"dehub.load\(path\)"):
        dehub.Index.load(out)  # Index reads files only (index does not import distributed)
    assert main(["info", str(out)]) == 0  # every command that takes an index takes a run directory
    single = dehub.Index.build(data["gallery"], data["reference"], k=8, alpha=0.5)
    np.save(tmp_path / "q.npy", data["queries"])
    assert (
        main(
            [
                "search",
                str(out),
                "--queries",
                str(tmp_path / "q.npy"),
                "--top",
                "5",
                "-o",
                str(tmp_path / "r.npz"),
            ]
        )
        == 0
    )
    res = np.load(tmp_path / "r.npz")
    want = single.search(data["queries"], 5)
    np.testing.assert_array_equal(res["ids"], want[1])
    np.testing.assert_array_equal(res["scores"], want[0])
    assert index.model.alpha == 0.5
    # dehub serve reads the run directory too (same answers over HTTP)
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from dehub.serve.app import Settings, create_app

    with TestClient(create_app(Settings(source=str(out), backend="exact"))) as client:
        r = client.post("/search", json={"vectors": data["queries"][:3].tolist(), "k": 5})
        assert r.status_code == 200, r.text
        got = [row["ids"] for row in r.json()["results"]]
    assert got == single.ids[want[1][:3]].tolist()


def test_a_pool_larger_than_the_cluster_is_refused(cluster, data, tmp_path):
    with pytest.raises(ValueError, match=r"num_workers=3 exceeds the cluster's 2 CPUs"):
        fit("nnn", data["gallery_dir"], data["reference_file"], tmp_path / "o", num_workers=3, progress=False)
    with pytest.raises(ValueError, match=r"the largest node offers"):
        fit(
            "nnn",
            data["gallery_dir"],
            data["reference_file"],
            tmp_path / "o",
            memory_budget=2**50,
            progress=False,
        )


def _listening(root_pid: int) -> set[str]:
    """The addresses that ``root_pid`` and its descendants listen on (TCP)."""
    psutil = pytest.importorskip("psutil")
    try:
        root = psutil.Process(root_pid)
        pids = {root_pid} | {p.pid for p in root.children(recursive=True)}
        conns = psutil.net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return set()
    return {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN and c.pid in pids}


def test_cli_build_starts_a_local_only_quiet_cluster_and_leaves_no_ray_files(data, tmp_path):
    """``dehub build --runner ray`` with no cluster: every Ray server listens on loopback
    only, the cluster's temp files stay outside the output directory and are removed, Ray's
    token and progress-bar notices are not printed. Before: Ray listened on every
    interface, ``out/.ray`` stayed behind and the token-auth warning was printed."""
    short = Path(tempfile.mkdtemp(prefix="dht-"))  # TMPDIR short: Ray's unix socket paths
    try:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
        }
        env.update(TMPDIR=str(short), PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        out = tmp_path / "built"
        args = [
            "--gallery",
            data["gallery_dir"],
            "--reference",
            data["reference_file"],
            "-o",
            out,
            "--k",
            "8",
        ]
        proc = subprocess.Popen(
            [sys.executable, "-m", "dehub.cli", "build", "--runner", "ray", *map(str, args)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        seen: set[str] = set()
        while proc.poll() is None:  # sample what the cluster listens on while it runs
            seen |= _listening(proc.pid)
            time.sleep(0.1)
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        assert seen, "never saw the cluster listening"
        assert seen <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, seen
        assert sorted(p.name for p in out.iterdir()) == ["claims", "manifest.json", "parts"]
        assert list(short.iterdir()) == []  # the cluster's temp directory is gone too
        for line in ("Token authentication", "Progress bars disabled", "Traceback"):
            assert line not in stderr, stderr
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_ray_data_starvation_warning_is_explained(caplog):
    from dehub.distributed._pool import _NOTES, _RayNotes

    log = logging.getLogger("ray.data._internal.execution.resource_manager")
    _NOTES.attach()
    try:
        with caplog.at_level(logging.WARNING, logger=log.name):
            log.warning(
                "Cluster resources are not enough to run any task from X. The job may hang forever unless the cluster scales up."
            )
    finally:
        _NOTES.detach()
    assert [r.getMessage() for r in caplog.records] == [
        _RayNotes.NOTES["hang forever unless the cluster scales up"]
    ]


@pytest.fixture(scope="module")
def bank_file(data):
    path = data["root"] / "gallery_bank.npy"
    np.save(path, _unit(np.random.default_rng(13), 400, D))
    return path


def test_a_gallery_bank_through_the_ray_runner_equals_the_direct_fit(cluster, data, bank_file, tmp_path):
    """`dehub build --runner ray --gallery-bank FILE` with DBNorm (DualIS): each worker passes
    the bank to the method's per-row statistics; the result equals fit(..., gallery_bank=)."""
    from dehub.cli import main

    out = tmp_path / "banked"
    argv = ["build", "--runner", "ray", "--gallery", str(data["gallery_dir"])]
    argv += ["--reference", str(data["reference_file"]), "-o", str(out), "--method", "dbnorm"]
    assert main([*argv, "--gallery-bank", str(bank_file), "--beta1", "10", "--beta2", "30"]) == 0
    index = load_index(out)
    bank = np.load(bank_file)
    direct = dehub.methods.get_method("dbnorm", beta1=10.0, beta2=30.0).fit(
        data["gallery"], data["reference"], gallery_bank=bank
    )
    without = dehub.methods.get_method("dbnorm", beta1=10.0, beta2=30.0).fit(
        data["gallery"], data["reference"]
    )
    np.testing.assert_allclose(index.model.lse_, direct.lse_, rtol=0, atol=1e-9)
    assert np.abs(without.lse_[1] - direct.lse_[1]).max() > 1.0  # the bank reached the fit
    for got, want in zip(index.search(data["queries"], 10), direct.search(data["queries"], 10)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(index.search(data["queries"], 10)[1], direct.search(data["queries"], 10)[1])
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e[0] for e in manifest["gallery_bank"]] == [str(bank_file)]
    assert index.metadata["gallery_bank_files"] == [str(bank_file)]
    # another bank is another run: every part is recomputed, none mixed
    other = data["root"] / "other_bank.npy"
    np.save(other, _unit(np.random.default_rng(14), 300, D))
    summary = fit(
        "dbnorm", data["gallery_dir"], data["reference_file"], out, gallery_bank=other, beta1=10.0, beta2=30.0,
        progress=False,
    )  # fmt: skip
    assert (summary.computed, summary.skipped) == (summary.parts, 0)


def test_banks_the_runner_refuses_say_why(data, bank_file, tmp_path):
    with pytest.raises(
        ValueError, match=r"method 'nnn' takes no gallery bank; received one \(methods that take one: dbnorm"
    ):
        fit(
            "nnn",
            data["gallery_dir"],
            data["reference_file"],
            tmp_path / "x",
            gallery_bank=bank_file,
            progress=False,
        )
    with pytest.raises(
        NotDistributableError, match=r"'dbnorm'.*without a gallery bank.*with a gallery bank \['dbnorm'\]"
    ):
        fit("dbnorm", data["gallery_dir"], data["reference_file"], tmp_path / "x", progress=False)
    with pytest.raises(NotDistributableError, match=r"'dbsn'.*Sinkhorn scalings couple every gallery row"):
        fit(
            "dbsn",
            data["gallery_dir"],
            data["reference_file"],
            tmp_path / "x",
            gallery_bank=bank_file,
            progress=False,
        )
