"""Prometheus metrics (docs/serving.md, "Metrics"): `ranker_*`, base units, labels from small fixed sets.

Each app owns its registry, so several apps in one process (tests) never share counters.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
COUNT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
PROBABILITY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


class ServiceMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("ranker_requests_total", "HTTP requests", ["route", "status"], registry=r)
        self.request_seconds = Histogram(
            "ranker_request_duration_seconds", "Request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram("ranker_inference_duration_seconds", "One forward pass", buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("ranker_queue_wait_seconds", "Time queued before a batch", buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("ranker_batch_size", "Requests per forward pass", buckets=COUNT_BUCKETS, registry=r)
        self.candidates = Histogram("ranker_candidates_per_request", "Candidates per request", buckets=COUNT_BUCKETS, registry=r)
        self.history_events = Histogram(
            "ranker_history_events_per_request", "History events per request", buckets=COUNT_BUCKETS, registry=r
        )
        self.predicted = ProbabilityHistogram()
        r.register(self.predicted)
        self.oov = Counter("ranker_oov_total", "Unknown ids mapped to OOV", ["field"], registry=r)
        self.inference_errors = Counter("ranker_inference_errors_total", "Failed forward passes", ["reason"], registry=r)
        self.model_info = Gauge("ranker_model_info", "Served model", ["name", "version", "git_sha"], registry=r)
        self.model_loaded = Gauge("ranker_model_loaded", "1 when a model is loaded and warm", registry=r)
        self.reloads = Counter("ranker_model_reloads_total", "Reload attempts", ["result"], registry=r)
        self.inflight = Gauge("ranker_inflight_requests", "Requests being handled", registry=r)
        self.queue_depth = Gauge("ranker_queue_depth", "Requests waiting for a batch", registry=r)
        self.state_entries = Gauge("ranker_state_cache_entries", "Users with a cached recurrent state", registry=r)
        self.state_bytes = Gauge("ranker_state_cache_bytes", "Bytes of cached recurrent state", registry=r)
        self.state_lookups = Counter("ranker_state_cache_lookups_total", "State cache lookups", ["result"], registry=r)


class ProbabilityHistogram:
    """`ranker_predicted_probability{task}`: every served probability, counted with one numpy
    call per request and task (a thousand candidates would otherwise cost a thousand observes)."""

    def __init__(self) -> None:
        self.edges = np.array(PROBABILITY_BUCKETS)
        self.lock = threading.Lock()
        self.counts: dict[str, np.ndarray] = {}
        self.sums: dict[str, float] = {}

    def observe_many(self, task: str, values: np.ndarray) -> None:
        per_bucket = np.bincount(np.searchsorted(self.edges, values, side="left"), minlength=len(self.edges) + 1)
        with self.lock:
            self.counts[task] = self.counts.get(task, np.zeros(len(self.edges) + 1, dtype=np.int64)) + per_bucket
            self.sums[task] = self.sums.get(task, 0.0) + float(values.sum())

    def describe(self):
        return [HistogramMetricFamily("ranker_predicted_probability", "Served probabilities", labels=["task"])]

    def collect(self):
        family = HistogramMetricFamily("ranker_predicted_probability", "Served probabilities", labels=["task"])
        with self.lock:
            for task, counts in self.counts.items():
                cumulative = np.cumsum(counts)
                buckets = [(repr(float(edge)), int(c)) for edge, c in zip(self.edges, cumulative[:-1])]
                family.add_metric([task], buckets + [("+Inf", int(cumulative[-1]))], self.sums[task])
        yield family


def request_metrics(metrics: ServiceMetrics):
    """An HTTP middleware counting every request, routed or refused, by path template and status."""

    async def measure(request: Request, call_next):
        started = time.monotonic()
        metrics.inflight.inc()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            metrics.inflight.dec()
            # Routing sets scope["route"] inside call_next: label by the path template, never the path.
            template = getattr(request.scope.get("route"), "path", None) or "unmatched"
            metrics.requests.labels(route=template, status=str(status)).inc()
            metrics.request_seconds.labels(route=template).observe(time.monotonic() - started)

    return measure
