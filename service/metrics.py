"""Prometheus metrics (serving.md §11): `ranker_*`, base units, labels from small fixed sets.

Each app owns its registry, so several apps in one process (tests) never share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
COUNT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
PROBABILITY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


class ServiceMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("ranker_requests_total", "HTTP requests", ["route", "status"], registry=r)
        self.request_seconds = Histogram("ranker_request_duration_seconds", "Request latency", ["route"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram("ranker_inference_duration_seconds", "One forward pass",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("ranker_queue_wait_seconds", "Time queued before a batch", buckets=LATENCY_BUCKETS,
                                    registry=r)
        self.batch_size = Histogram("ranker_batch_size", "Requests per forward pass", buckets=COUNT_BUCKETS, registry=r)
        self.candidates = Histogram("ranker_candidates_per_request", "Candidates per request", buckets=COUNT_BUCKETS,
                                    registry=r)
        self.history_events = Histogram("ranker_history_events_per_request", "History events per request",
                                        buckets=COUNT_BUCKETS, registry=r)
        self.predicted = Histogram("ranker_predicted_probability", "Served probabilities", ["task"],
                                   buckets=PROBABILITY_BUCKETS, registry=r)
        self.oov = Counter("ranker_oov_total", "Unknown ids mapped to OOV", ["field"], registry=r)
        self.inference_errors = Counter("ranker_inference_errors_total", "Failed forward passes", ["reason"], registry=r)
        self.model_info = Gauge("ranker_model_info", "Served model", ["name", "version", "git_sha"], registry=r)
        self.model_loaded = Gauge("ranker_model_loaded", "1 when a model is loaded and warm", registry=r)
        self.reloads = Counter("ranker_model_reloads_total", "Reload attempts", ["result"], registry=r)
        self.inflight = Gauge("ranker_inflight_requests", "Requests being handled", registry=r)
        self.queue_depth = Gauge("ranker_queue_depth", "Requests waiting for a batch", registry=r)
