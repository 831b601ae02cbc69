"""Prometheus metrics of the scoring service, in a registry of its own.

Import order matters: Feast's first online read imports ``feast.metrics``, which sets
``PROMETHEUS_MULTIPROCESS_DIR`` in the process when it is unset, and ``prometheus_client``
decides at *its* import whether values live in memory or in files of that folder. This module
imports ``prometheus_client`` (and ``rankflow.serving.app`` imports this module before
anything that imports Feast), so the service's counters stay in process memory and ``/metrics``
reads them directly. A per-app :class:`ServiceMetrics` registry also keeps two apps in one test
process apart.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST

# Milliseconds matter here: the goal is p99 < 20 ms for one candidate.
_LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.004,
    0.006,
    0.008,
    0.010,
    0.015,
    0.020,
    0.030,
    0.045,
    0.060,
    0.090,
    0.150,
    0.300,
    0.600,
    1.0,
    2.5,
)


class ServiceMetrics:
    """Every metric ``/metrics`` shows; one instance per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "rankflow_requests",
            "Requests by endpoint and HTTP status",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "rankflow_request_latency_seconds",
            "Time to answer a /score request, by arm",
            ["arm"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "rankflow_errors",
            "Failed requests by kind "
            "(validation, too_large, point_in_time, unavailable, internal, no_model)",
            ["kind"],
            registry=r,
        )
        self.arm_requests = Counter(
            "rankflow_arm_requests", "Scored requests per arm", ["arm"], registry=r
        )
        self.scored_items = Counter(
            "rankflow_scored_items", "Candidates scored per arm", ["arm"], registry=r
        )
        self.missing_features = Counter(
            "rankflow_missing_features",
            "Feature values served as missing (not found, null, or older than the view's TTL)",
            ["feature_view", "reason"],
            registry=r,
        )
        self.unknown_entities = Counter(
            "rankflow_unknown_entities",
            "Users / items without any stored row, scored with the training defaults",
            ["entity"],
            registry=r,
        )
        self.model_version = Gauge(
            "rankflow_model_version",
            "1 for the registered version serving each arm",
            ["arm", "model", "version"],
            registry=r,
        )
        self.model_swaps = Counter(
            "rankflow_model_swaps", "Alias moves picked up while serving", ["arm"], registry=r
        )
        self.log_rows = Counter(
            "rankflow_log_rows",
            "Served-feature log rows by outcome (written, dropped)",
            ["outcome"],
            registry=r,
        )
        self.log_buffer = Gauge(
            "rankflow_log_buffer_rows", "Log rows waiting for the background writer", registry=r
        )
        self.log_flush_errors = Counter(
            "rankflow_log_flush_errors", "Log batches the writer could not write", registry=r
        )
        for outcome in ("written", "dropped"):
            self.log_rows.labels(outcome)

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)
