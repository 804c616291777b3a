"""Prometheus metrics of one app (``prometheus_client``, a registry per app, never the global one).

``/metrics`` shows request counts by route template, method and status, a latency
histogram per route, error counts, query rows per engine call (how much the batcher
merged), queries served, reloads, the loaded index version and size, whether the index
is available, and for the HNSW backend its efSearch, measured and target recall.
Labelled counters whose labels are known in advance start at 0.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "LATENCY_BUCKETS", "BATCH_BUCKETS", "CONTENT_TYPE"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The metrics of one app, in their own :class:`prometheus_client.CollectorRegistry`."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "dehub_requests", "HTTP requests served.", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "dehub_request_duration_seconds",
            "Time from request to response.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter("dehub_errors", "Responses with status >= 400.", ["route", "kind"], registry=r)
        self.queries = Counter("dehub_queries", "Query vectors searched.", ["kind"], registry=r)
        self.batch = Histogram(
            "dehub_engine_batch_rows",
            "Query rows per engine call (after batching).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.reloads = Counter("dehub_reloads", "Index reloads.", ["result"], registry=r)
        self.version = Gauge("dehub_index_version", "Version number of the index being served.", registry=r)
        self.items = Gauge("dehub_index_items", "Items in the index being served.", registry=r)
        self.available = Gauge(
            "dehub_index_available", "1 while the index file is as loaded, 0 once it changed.", registry=r
        )
        self.ef_search = Gauge("dehub_hnsw_ef_search", "efSearch of the HNSW backend (0: exact).", registry=r)
        self.recall = Gauge(
            "dehub_hnsw_recall_at_10",
            "recall@10 of the HNSW backend against the exact corrected top-10 on its probe queries "
            "(1: exact backend).",
            registry=r,
        )
        self.target_recall = Gauge(
            "dehub_hnsw_target_recall", "recall@10 the efSearch was tuned to.", registry=r
        )
        for kind in ("corrected", "plain"):
            self.queries.labels(kind=kind)
        for result in ("ok", "failed"):
            self.reloads.labels(result=result)
        self.available.set(1)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)
        if status >= 400:
            self.errors.labels(route=route, kind="client" if status < 500 else "server").inc()

    def observe_batch(self, rows: int) -> None:
        self.batch.observe(rows)

    def count_queries(self, kind: str, n: int) -> None:
        self.queries.labels(kind=kind).inc(n)

    def count_reload(self, result: str) -> None:
        self.reloads.labels(result=result).inc()

    def show_index(self, version: int, n_items: int, hnsw: dict | None) -> None:
        self.version.set(version)
        self.items.set(n_items)
        used = bool(hnsw and hnsw.get("used", True))
        self.ef_search.set(hnsw["ef_search"] if hnsw and used else 0)
        self.recall.set(hnsw["recall"] if hnsw and used else 1.0)
        self.target_recall.set(hnsw["target_recall"] if hnsw and used else 1.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
