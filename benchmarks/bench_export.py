"""Export time, query throughput and recall of the corrected stores (FAISS, LanceDB, Qdrant).

For each store: the plain vectors (uncorrected search, as people serve today), the d+1
form and the d+2 form of the NNN-corrected gallery (``dehub.export``), exported with
dehub's own functions and queried with the store's own client. recall@10 is against
dehub's exact corrected top-10 (``NNN.search``). Also: LanceDB IVF_PQ with and without
padding the vector length for PQ, the Qdrant ``formula`` rescoring variant (plain vectors
+ stored bias) and its recall cost, and ``dehub embed`` texts/s with the bundled MiniLM.

Full run (the figures in docs/stores/*.md)::

    flock /tmp/dehub-bench.lock python benchmarks/bench_export.py --n 200000 --json benchmarks/results/export.json

Smoke run::

    python benchmarks/bench_export.py --small
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dehub
from bench_approx import make_paired
from dehub.export import build_faiss_index, export_faiss, export_lancedb, export_qdrant, query_vectors


def machine() -> dict:
    """CPU model, caches, bf16 flags, load and versions (dehub.engine.hardware.describe_machine)."""
    from dehub.engine.hardware import describe_machine

    return describe_machine()


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def recall(ids, ref) -> float:
    ids = np.asarray(ids)
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / ref.shape[1] for a, b in zip(ids, ref)]))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


# ---------------------------------------------------------------- FAISS
def bench_faiss(model, g, q, exact, args, tmp) -> list[dict]:
    import faiss

    rows = []
    for kind in args.faiss_types.split(","):
        for form in ("plain", "d+1", "d+2"):
            path = Path(tmp) / f"{kind}-{form}.faiss"
            params = {"nprobe": args.nprobe} if kind == "ivf" else {}
            if form == "plain":  # the plain d vectors, inner product, built the same way
                index, t_export = timed(lambda: build_faiss_index(g, index_type=kind, **params))
                side = {"search_params": {"nprobe": args.nprobe} if kind == "ivf" else {}}
                qv = q
            else:
                _, t_export = timed(lambda: export_faiss(model, path, index_type=kind, form=form, **params))
                index = faiss.read_index(str(path))
                side = json.loads(Path(str(path) + ".json").read_text())
                qv = query_vectors(q, form)
            if side["search_params"].get("nprobe"):
                faiss.extract_index_ivf(index).nprobe = side["search_params"]["nprobe"]
            index.search(qv[:50], 10)
            (_, ids), t_q = timed(lambda: index.search(qv, 10))
            rows.append(
                {
                    "store": "faiss",
                    "index": kind,
                    "form": form,
                    "export_s": round(t_export, 2),
                    "qps": round(len(q) / t_q, 1),
                    "recall@10": round(recall(ids, exact), 4),
                    "params": side["search_params"],
                }  # fmt: skip
            )
            print(rows[-1], flush=True)
            index = None  # free it before the next build
            for f in (path, Path(str(path) + ".json")):
                if f.exists():
                    f.unlink()
    return rows


# ---------------------------------------------------------------- LanceDB
def _lance_query(table, qv, metric, sp, k=10):
    out = []
    for v in qv:
        s = table.search(v).distance_type(metric).limit(k)
        if sp.get("nprobes"):
            s = s.nprobes(sp["nprobes"]).refine_factor(sp["refine_factor"])
        out.append(s.to_arrow()["id"].to_numpy())
    return np.stack(out)


def _lance_plain(model, q, exact, label, index, tmp) -> dict:
    """The plain d vectors in LanceDB (what people serve today), same index settings."""
    import lancedb
    import pyarrow as pa

    g = np.asarray(model.gallery_, dtype=np.float32)
    n, d = g.shape
    t0 = time.perf_counter()
    data = pa.table(
        {
            "id": pa.array(np.arange(n), pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(g.reshape(-1)), d),
        }
    )
    table = lancedb.connect(str(Path(tmp) / f"lance-{label}-plain")).create_table("dehub", data)
    sp: dict = {}
    if index:
        from lancedb.index import IvfPq

        parts = max(1, min(int(np.sqrt(n)), n // 256 or 1))
        table.create_index(
            "vector", config=IvfPq(distance_type="dot", num_partitions=parts, num_sub_vectors=d // 16)
        )
        sp = {"nprobes": int(min(parts, max(20, parts // 4))), "refine_factor": 10}
    t_export = time.perf_counter() - t0
    _lance_query(table, q[:20], "dot", sp)
    ids, t_q = timed(lambda: _lance_query(table, q, "dot", sp))
    return {"store": "lancedb", "index": label, "form": "plain", "dim": d, "export_s": round(t_export, 2),
            "qps": round(len(q) / t_q, 1), "recall@10": round(recall(ids, exact), 4), "params": sp}  # fmt: skip


def bench_lancedb(model, q, exact, args, tmp) -> list[dict]:
    rows = []
    configs = [("flat", None, None)]
    if not args.no_ann:
        configs += [("ivf_pq", "ivf_pq", None), ("ivf_pq-unpadded", "ivf_pq", 1)]
    for label, index, pad in configs:
        for form in ("plain", "d+1", "d+2"):
            if label == "ivf_pq-unpadded" and form == "plain":
                continue
            if form == "plain":
                rows.append(_lance_plain(model, q, exact, label, index, tmp))
                print(rows[-1], flush=True)
                continue
            f = form
            d = model.gallery_.shape[1]
            subv = None
            if pad == 1:  # no padding: num_sub_vectors must divide d+1 / d+2 itself
                dim = d + (1 if f == "d+1" else 2)
                subv = next(
                    s for s in (dim // 16, dim // 11, dim // 7, dim // 5, dim // 2, 1) if s and dim % s == 0
                )
            uri = Path(tmp) / f"lance-{label}-{form}"
            table, t_export = timed(
                lambda: export_lancedb(
                    model, uri, form=f, index=index, pad_multiple=pad, num_sub_vectors=subv
                )
            )
            desc = json.loads(table.schema.field("vector").metadata[b"dehub"])
            qv = query_vectors(q, f, dim=desc["dim"])
            _lance_query(table, qv[:20], desc["metric"], desc["search_params"])
            ids, t_q = timed(lambda: _lance_query(table, qv, desc["metric"], desc["search_params"]))
            rows.append(
                {
                    "store": "lancedb",
                    "index": label,
                    "form": form,
                    "dim": desc["dim"],
                    "num_sub_vectors": desc.get("num_sub_vectors"),
                    "export_s": round(t_export, 2),
                    "qps": round(len(q) / t_q, 1),
                    "recall@10": round(recall(ids, exact), 4),
                    "params": desc["search_params"],
                }  # fmt: skip
            )
            print(rows[-1], flush=True)
    return rows


def bench_lancedb_recall(model, q, exact, tmp) -> list[dict]:
    """Recall only: IVF_PQ padded vs unpadded, over nprobes and refine_factor (no timings)."""
    rows = []
    for form in ("d+1", "d+2"):
        dim = model.gallery_.shape[1] + (1 if form == "d+1" else 2)
        divisor = max(s for s in range(1, dim // 8 + 1) if dim % s == 0)  # unpadded: a divisor of dim
        for pad, nsv in ((16, None), (1, divisor)):
            t = export_lancedb(model, Path(tmp) / "recall-db", name=f"t{form[-1]}{pad}", form=form,
                               index="ivf_pq", pad_multiple=pad, num_sub_vectors=nsv)  # fmt: skip
            desc = json.loads(t.schema.field("vector").metadata[b"dehub"])
            qv = query_vectors(q, form, dim=desc["dim"])
            parts = desc["num_partitions"]
            for nprobes in sorted({20, -(-parts // 2), parts}):
                for rf in (10, 50):
                    ids = [t.search(v).distance_type(desc["metric"]).limit(10).nprobes(nprobes).refine_factor(rf)
                           .to_arrow()["id"].to_numpy() for v in qv]  # fmt: skip
                    rows.append({"store": "lancedb", "index": "ivf_pq", "form": form, "dim": desc["dim"],
                                 "num_sub_vectors": desc["num_sub_vectors"], "num_partitions": parts,
                                 "nprobes": nprobes, "refine_factor": rf, "recall@10": round(recall(ids, exact), 4)})  # fmt: skip
                    print(rows[-1], flush=True)
    return rows


# ---------------------------------------------------------------- Qdrant
def bench_qdrant(model, q, exact, args) -> list[dict]:
    from qdrant_client import models

    rows = []
    n = min(args.qdrant_n, model.gallery_.shape[0])
    sub_model = dehub.NNN(k=model.k, alpha=model.alpha).restore(
        model.gallery_[:n], {k: v[:n] for k, v in model.persistence_arrays().items()}
    )
    sub_exact = sub_model.search(q, 10)[1]
    qn = q[: args.qdrant_queries]
    for form, distance in (("plain", "dot"), ("d+1", "dot"), ("d+2", "cosine"), ("d+2", "euclid")):
        if form == "plain":  # plain vectors (the rescore variant's collection) without the formula
            client, t_export = timed(lambda: export_qdrant(sub_model, ":memory:", variant="rescore"))
            qv = qn
        else:
            client, t_export = timed(
                lambda: export_qdrant(sub_model, ":memory:", form=form, distance=distance)
            )
            qv = query_vectors(qn, form)

        def run():
            return np.asarray(
                [[p.id for p in client.query_points("dehub", query=v.tolist(), limit=10).points] for v in qv]
            )

        ids, t_q = timed(run)
        rows.append(
            {
                "store": "qdrant-local",
                "index": "exhaustive",
                "form": form,
                "distance": distance,
                "n": n,
                "export_s": round(t_export, 2),
                "qps": round(len(qn) / t_q, 1),
                "recall@10": round(recall(ids, sub_exact[: len(qn)]), 4),
            }  # fmt: skip
        )
        print(rows[-1], flush=True)
        client.close()
    client, t_export = timed(lambda: export_qdrant(sub_model, ":memory:", variant="rescore"))
    formula = models.FormulaQuery(
        formula=models.SumExpression(sum=["$score", models.MultExpression(mult=[-1.0, "bias"])])
    )
    for cand in (10, 50, 100, 400):

        def run():
            return np.asarray(
                [
                    [
                        p.id
                        for p in client.query_points(
                            "dehub",
                            prefetch=models.Prefetch(query=v.tolist(), limit=cand),
                            query=formula,
                            limit=10,
                        ).points
                    ]
                    for v in qn
                ]  # fmt: skip
            )

        ids, t_q = timed(run)
        rows.append(
            {
                "store": "qdrant-local",
                "index": "exhaustive",
                "form": "rescore(formula)",
                "candidates": cand,
                "n": n,
                "export_s": round(t_export, 2),
                "qps": round(len(qn) / t_q, 1),
                "recall@10": round(recall(ids, sub_exact[: len(qn)]), 4),
            }  # fmt: skip
        )
        print(rows[-1], flush=True)
    client.close()
    return rows


# ---------------------------------------------------------------- embed
def bench_embed(n_texts: int, tmp) -> dict:
    import gzip

    text = Path(dehub.__file__).parent / "datasets" / "data" / "wordnet" / "text.json.gz"
    with gzip.open(text, "rt", encoding="utf-8") as fh:
        splits = json.load(fh)["splits"]
    texts = (splits["reference"]["definition"] + splits["test"]["definition"])[:n_texts]
    (Path(tmp) / "t.txt").write_text("\n".join(texts), encoding="utf-8")
    from dehub.embed import embed, get_encoder

    enc = get_encoder()
    enc.encode_texts(texts[:64])  # warm-up
    res, t = timed(
        lambda: embed(Path(tmp) / "t.txt", Path(tmp) / "emb", encoder=enc, batch_size=64, progress=False)
    )
    import torch

    return {"texts": res.n_items, "seconds": round(t, 2), "texts_per_s": round(res.n_items / t, 1),
            "torch_threads": torch.get_num_threads(), "mean_chars": round(float(np.mean([len(s) for s in texts])), 1)}  # fmt: skip


# ---------------------------------------------------------------- recall-checked ANN exports
def _plain_exact(g, q, k=10) -> np.ndarray:
    out = np.empty((q.shape[0], k), np.int64)
    for s in range(0, q.shape[0], 256):
        sc = q[s : s + 256] @ g.T
        top = np.argpartition(-sc, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sc, top, 1), axis=1)
        out[s : s + 256] = np.take_along_axis(top, order, 1)
    return out


def _paired_qps(fns: dict, queries, per_query: bool, rounds: int = 5) -> tuple[dict, dict]:
    """Queries/s of each variant, timed in alternation round by round (the machine is
    shared): the median rate per variant and the median over rounds of each variant's time
    divided by the plain one's time in the same round."""
    times: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            if per_query:
                for i in range(queries[name].shape[0]):
                    fn(queries[name][i : i + 1])
            else:
                fn(queries[name])
            times[name].append(time.perf_counter() - t)
    n = next(iter(queries.values())).shape[0]
    qps = {k: float(np.median([n / t for t in v])) for k, v in times.items()}
    ratio = {
        k: float(np.median([t / p for t, p in zip(v, times["plain"])]))
        for k, v in times.items()
        if k != "plain"
    }
    return qps, ratio


def bench_ann(index, g, q, args, tmp, save=lambda rows: None) -> list[dict]:
    """Per store and ANN type: plain, d+1 and d+2 built the same way; the corrected ones by
    dehub's export with its recall check (the stored setting), the plain one tuned by the
    same check against its own exact top-10; then recall@10 on held-out queries against its
    own exact top-10 and queries/s with the store's own client at that setting."""
    import faiss

    from dehub.export.recall import check_recall, probe_queries

    probes = probe_queries(index)
    ex_plain_probe = _plain_exact(g, probes)
    ex_plain = _plain_exact(g, q)
    ex_corr = index.search(q, 10)[1]
    rows: list[dict] = []
    kinds = args.ann_kinds.split(",")

    pending: dict = {}

    def emit(store, kind, variant, build_s, params, found, qps, stored):
        """Record a variant; its queries/s are measured in alternation with the others."""
        own = ex_plain if variant == "plain" else ex_corr
        pending[variant] = {
            "store": store,
            "index": kind,
            "form": variant,
            "build_s": round(build_s, 1),
            "params": params,
            "probe_recall@10": stored,
            "recall@10": round(recall(found, own), 4),
            "plain_recall_of_corrected@10": round(recall(found, ex_corr), 4) if variant == "plain" else None,
        }
        pending[variant + "/search"] = qps

    def flush(per_query: bool, queries: dict) -> None:
        fns = {v: pending.pop(v + "/search") for v in ("plain", "d+1", "d+2")}
        qps, ratio = _paired_qps(fns, queries, per_query)
        for v in ("plain", "d+1", "d+2"):
            row = pending.pop(v)
            row["qps"] = round(qps[v], 1)
            row["time_vs_plain"] = round(ratio[v], 3) if v in ratio else 1.0
            row["load"] = [round(x, 1) for x in os.getloadavg()]
            rows.append(row)
            print(row, flush=True)
        save(rows)  # a run stopped by its time limit keeps what it measured

    # FAISS
    for kind in [k for k in kinds if k in ("ivf", "hnsw")]:
        for variant in ("plain", "d+1", "d+2"):
            if variant == "plain":
                idx, t_b = timed(lambda: build_faiss_index(g, index_type=kind))
                cands = (
                    [{"nprobe": p} for p in (1, 2, 4, 8, 16, 32, 64, 128, 256)]
                    if kind == "ivf"
                    else [{"efSearch": e} for e in (16, 32, 64, 128, 256, 512, 1024)]
                )

                def setp(p, idx=idx):
                    if "nprobe" in p:
                        faiss.extract_index_ivf(idx).nprobe = p["nprobe"]
                    else:
                        faiss.downcast_index(idx.index).hnsw.efSearch = p["efSearch"]

                def search(p, idx=idx, setp=setp):
                    setp(p)
                    return idx.search(probes, 10)[1]

                chk = check_recall(search, cands, ex_plain_probe)
                setp(chk.params)
                qv, params, stored = q, chk.params, chk.recall
            else:
                path = Path(tmp) / f"{kind}-{variant}.faiss"
                _, t_b = timed(lambda: export_faiss(index, path, index_type=kind, form=variant))
                idx = faiss.read_index(str(path))
                side = json.loads(Path(str(path) + ".json").read_text())
                params, stored = side["search_params"], side["recall_check"]["recall_at_10"]
                if "nprobe" in params:
                    faiss.extract_index_ivf(idx).nprobe = params["nprobe"]
                if "efSearch" in params:
                    faiss.downcast_index(faiss.downcast_index(idx).index).hnsw.efSearch = params["efSearch"]
                qv = query_vectors(q, variant)
            found = idx.search(qv, 10)[1]
            emit("faiss", kind, variant, t_b, params, found, lambda x, idx=idx: idx.search(x, 10), stored)
            idx = None
        flush(False, {"plain": q, "d+1": query_vectors(q, "d+1"), "d+2": query_vectors(q, "d+2")})
    # LanceDB
    lance_kinds = [k for k in kinds if k in ("ivf_pq", "ivf_hnsw_sq")]
    if lance_kinds:
        import lancedb

        from dehub.export.lancedb import lancedb_search

        db = lancedb.connect(str(Path(tmp) / "lance"))
        plain_index = dehub.Index(dehub.Plain().fit(g, g[:1], normalize="none"))
        for kind in lance_kinds:
            for variant in ("plain", "d+1", "d+2"):
                form = "d+1" if variant == "plain" else variant
                src = plain_index if variant == "plain" else index
                # plain: the plain vectors as d+1 with a zero bias (the same table, uncorrected)
                table, t_b = timed(
                    lambda: export_lancedb(
                        src, db, name=f"{kind}_{variant.replace('+', 'p')}", form=form, index=kind
                    )
                )
                desc = json.loads(table.schema.field("vector").metadata[b"dehub"])
                params, stored = desc["search_params"], desc["recall_check"]["recall_at_10"]
                found = lancedb_search(table, q, 10)
                emit(
                    "lancedb",
                    kind,
                    variant,
                    t_b,
                    params,
                    found,
                    lambda x, t=table: lancedb_search(t, x, 10),
                    stored,
                )
            flush(True, dict.fromkeys(("plain", "d+1", "d+2"), q[:100]))
            for variant in ("plain", "d+1", "d+2"):
                db.drop_table(f"{kind}_{variant.replace('+', 'p')}")
    # pgvector
    if "pg_hnsw" in kinds:
        import pgserver
        import psycopg

        from dehub.export import export_pgvector
        from dehub.export.pgvector import pgvector_search

        root = tempfile.mkdtemp(prefix="dehub-pg-bench-")
        server = pgserver.get_server(root, cleanup_mode="stop")
        try:
            conn = psycopg.connect(server.get_uri(), autocommit=True)
            conn.execute("SET maintenance_work_mem = '4GB'")
            conn.execute("SET max_parallel_maintenance_workers = 1")
            plain_index = dehub.Index(dehub.Plain().fit(g, g[:1], normalize="none"))
            for variant in ("plain", "d+1", "d+2"):
                form = "d+1" if variant == "plain" else variant
                src = plain_index if variant == "plain" else index
                desc, t_b = timed(
                    lambda: export_pgvector(src, conn, table=f"t_{form[-1]}_{variant[0]}", form=form)
                )
                table = f"t_{form[-1]}_{variant[0]}"
                params, stored = desc["search_params"], desc["recall_check"]["recall_at_10"]
                found = pgvector_search(conn, q, 10, table=table)
                emit("pgvector", "hnsw", variant, t_b, params, found,
                     lambda x, t=table: pgvector_search(conn, x, 10, table=t), stored)  # fmt: skip
            flush(True, dict.fromkeys(("plain", "d+1", "d+2"), q[:100]))
        finally:
            server.cleanup()
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200_000, help="gallery items (d=384 synthetic)")
    p.add_argument("--reference", type=int, default=20_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--stores", default="faiss,lancedb,qdrant,embed")
    p.add_argument("--faiss-types", default="flat,ivf,hnsw")
    p.add_argument("--nprobe", type=int, default=32)
    p.add_argument(
        "--qdrant-n", type=int, default=20_000, help="Qdrant local mode is pure Python (3-4 q/s at 50k here)"
    )
    p.add_argument("--qdrant-queries", type=int, default=50)
    p.add_argument("--embed-texts", type=int, default=2000)
    p.add_argument("--no-ann", action="store_true", help="LanceDB: skip the IVF_PQ rows")
    p.add_argument("--small", action="store_true", help="smoke run: n=5000, d=64, 100 queries")
    p.add_argument(
        "--ann-kinds",
        default="ivf,hnsw,ivf_pq,ivf_hnsw_sq,pg_hnsw",
        help="--stores ann: FAISS ivf/hnsw, LanceDB ivf_pq/ivf_hnsw_sq, pgvector pg_hnsw",
    )
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.small:
        args.n, args.reference, args.queries, args.dim = 5000, 5000, 100, 64
        args.qdrant_n, args.qdrant_queries, args.embed_texts = 2000, 50, 200
    stores = set(args.stores.split(","))
    out: dict = {"machine": machine(), "args": vars(args), "rows": []}
    print(out["machine"], flush=True)
    (data, t_gen) = timed(lambda: make_paired(args.n, args.reference, args.dim, captions_per_image=1))
    g, r, q = data["gallery"], data["reference"], data["queries"][: args.queries]
    del data
    model, t_fit = timed(lambda: dehub.NNN(k=16, alpha=0.75).fit(g, r, normalize="none"))
    plain = dehub.Plain().fit(g, r[:1], normalize="none")
    exact = model.search(q, 10)[1]
    out["setup"] = {"generate_s": round(t_gen, 1), "fit_s": round(t_fit, 1), "n": args.n, "dim": args.dim}
    out["plain_vs_corrected_recall@10"] = round(recall(plain.search(q, 10)[1], exact), 4)
    print(
        out["setup"],
        "plain search's recall of the corrected top-10:",
        out["plain_vs_corrected_recall@10"],
        flush=True,
    )

    def save() -> None:  # after every section: a run stopped by its time limit keeps what it measured
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))

    with tempfile.TemporaryDirectory(prefix="dehub-bench-export-") as tmp:
        if "ann" in stores:
            out["ann"] = bench_ann(
                dehub.Index(model, reference=r),
                g,
                q,
                args,
                tmp,
                save=lambda rows: (out.update(ann=rows), save()),
            )
            save()
        if "faiss" in stores:
            out["rows"] += bench_faiss(model, g, q, exact, args, tmp)
            save()
        if "lancedb" in stores:
            out["rows"] += bench_lancedb(model, q, exact, args, tmp)
            save()
        if "lancedb-recall" in stores:
            out["rows"] += bench_lancedb_recall(model, q, exact, tmp)
            save()
        if "qdrant" in stores:
            out["rows"] += bench_qdrant(model, q, exact, args)
            save()
        if "embed" in stores:
            out["embed"] = bench_embed(args.embed_texts, tmp)
            print("embed:", out["embed"], flush=True)
    out["peak_rss_gib"] = round(rss_gib(), 2)
    out["load_after"] = os.getloadavg()
    print("peak RSS GiB", out["peak_rss_gib"], "load", out["load_after"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
