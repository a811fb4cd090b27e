"""Prometheus metrics: HTTP figures in one registry per app (several apps in one test process
never collide), and domain figures (credits) in one process-wide registry that domains record into.

Each server process keeps its own figures; with several workers, scrape each or run one per port.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

DOMAIN_REGISTRY = CollectorRegistry()
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@lru_cache(maxsize=4096)
def _child(metric: Any, labels: tuple[str, ...]) -> Any:
    return metric.labels(*labels)


def labelled(metric: M, *labels: str) -> M:
    """`metric.labels(*labels)`, remembered: prometheus_client checks and looks the labels up
    under a lock on every call, a noticeable part of a fast request. Children are never removed
    here, so a remembered one stays the one the registry renders."""
    return _child(metric, labels)  # type: ignore[no-any-return]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sessionary_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sessionary_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labelled(self.requests, method, route, str(status)).inc()
        labelled(self.latency, method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(DOMAIN_REGISTRY)
