"""Prometheus text-format metrics of one app (no global registry, no dependency).

``/metrics`` shows request counts by route, method and status, a request-latency
histogram per route, error counts, the rows per engine call (how much the batcher
merged), queries served, reloads and the loaded index version.
"""

from __future__ import annotations

import threading
from collections import defaultdict

__all__ = ["Metrics", "LATENCY_BUCKETS", "BATCH_BUCKETS"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
        self.total += 1
        self.sum += value


def _labels(**kv: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in kv.items())
    return "{" + inner + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters and histograms rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[str, _Histogram] = {}
        self._errors: dict[tuple[str, str], int] = defaultdict(int)
        self._batch = _Histogram(BATCH_BUCKETS)
        self._queries: dict[str, int] = defaultdict(int)
        self._reloads: dict[str, int] = defaultdict(int)
        self.index_version = 0
        self.index_items = 0

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(route, method, str(status))] += 1
            h = self._latency.get(route)
            if h is None:
                h = self._latency[route] = _Histogram(LATENCY_BUCKETS)
            h.observe(seconds)
            if status >= 400:
                self._errors[(route, "client" if status < 500 else "server")] += 1

    def observe_batch(self, rows: int) -> None:
        with self._lock:
            self._batch.observe(float(rows))

    def count_queries(self, kind: str, n: int) -> None:
        with self._lock:
            self._queries[kind] += n

    def count_reload(self, result: str) -> None:
        with self._lock:
            self._reloads[result] += 1

    def render(self) -> str:
        out: list[str] = []
        with self._lock:
            out += [
                "# HELP dehub_requests_total HTTP requests served.",
                "# TYPE dehub_requests_total counter",
            ]
            for (route, method, status), n in sorted(self._requests.items()):
                out.append(f"dehub_requests_total{_labels(route=route, method=method, status=status)} {n}")
            out += [
                "# HELP dehub_request_duration_seconds Time from request to response.",
                "# TYPE dehub_request_duration_seconds histogram",
            ]
            for route, h in sorted(self._latency.items()):
                for b, c in zip(h.buckets, h.counts):
                    out.append(f"dehub_request_duration_seconds_bucket{_labels(route=route, le=repr(b))} {c}")
                out.append(
                    f"dehub_request_duration_seconds_bucket{_labels(route=route, le='+Inf')} {h.total}"
                )
                out.append(f"dehub_request_duration_seconds_sum{_labels(route=route)} {h.sum:.6f}")
                out.append(f"dehub_request_duration_seconds_count{_labels(route=route)} {h.total}")
            out += [
                "# HELP dehub_errors_total Responses with status >= 400.",
                "# TYPE dehub_errors_total counter",
            ]
            for (route, kind), n in sorted(self._errors.items()):
                out.append(f"dehub_errors_total{_labels(route=route, kind=kind)} {n}")
            out += [
                "# HELP dehub_queries_total Query vectors searched.",
                "# TYPE dehub_queries_total counter",
            ]
            for kind, n in sorted(self._queries.items()):
                out.append(f"dehub_queries_total{_labels(kind=kind)} {n}")
            out += [
                "# HELP dehub_engine_batch_rows Query rows per engine call (after batching).",
                "# TYPE dehub_engine_batch_rows histogram",
            ]
            h = self._batch
            for b, c in zip(h.buckets, h.counts):
                out.append(f'dehub_engine_batch_rows_bucket{{le="{int(b)}"}} {c}')
            out.append(f'dehub_engine_batch_rows_bucket{{le="+Inf"}} {h.total}')
            out.append(f"dehub_engine_batch_rows_sum {h.sum:.0f}")
            out.append(f"dehub_engine_batch_rows_count {h.total}")
            out += ["# HELP dehub_reloads_total Index reloads.", "# TYPE dehub_reloads_total counter"]
            for result, n in sorted(self._reloads.items()):
                out.append(f"dehub_reloads_total{_labels(result=result)} {n}")
            out += [
                "# HELP dehub_index_version Version number of the index being served.",
                "# TYPE dehub_index_version gauge",
                f"dehub_index_version {self.index_version}",
                "# HELP dehub_index_items Items in the index being served.",
                "# TYPE dehub_index_items gauge",
                f"dehub_index_items {self.index_items}",
            ]
        return "\n".join(out) + "\n"
