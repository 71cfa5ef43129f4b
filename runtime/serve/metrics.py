"""The server's Prometheus metrics, in a registry of their own (one per app, so that tests can make several).

    metrics = Metrics(model_load_s=0.4)
    metrics.observe("/v1/classify", 200, 0.012)
    body, content_type = metrics.render()
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Seconds: from a fast cache hit on a desktop to a slow batch on a Raspberry Pi 3.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Requests by route and status, request latency, batch sizes, inference time, queue depth, model load time."""

    def __init__(self, *, model_load_s: float = 0.0):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("edgecnn_requests", "HTTP requests answered, by route and status code.",
                                ["route", "status"], registry=r)
        self.latency = Histogram("edgecnn_request_seconds", "Time from request to response, by route.", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("edgecnn_batch_size", "Images per session.run.", buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram("edgecnn_inference_seconds", "Time of one session.run (a whole batch).",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("edgecnn_queue_depth",
                                 "Classify requests held now (reading, decoding, waiting for or in a batch).", registry=r)
        self.rejected = Counter("edgecnn_rejected", "Classify requests refused with 503 because the queue was full.",
                                registry=r)
        self.model_load = Gauge("edgecnn_model_load_seconds", "Time taken to load the model at start-up.", registry=r)
        self.model_load.set(model_load_s)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
