"""The Prometheus series ``fcnx serve`` adds to KServe's own on ``/metrics``: requests by
outcome, the time each image waited in the batching queue, the time each batch computed,
and the batch sizes. ``fcnx bench --url`` reads the queue/compute split from them."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LABELS = ["model"]
_SECONDS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 120.0)

REQUESTS = Counter(
    "fcnx_requests", "inference requests by outcome (ok, bad_request, error)", [*LABELS, "outcome"]
)
IMAGES = Counter("fcnx_images", "images segmented", LABELS)
QUEUE_SECONDS = Histogram(
    "fcnx_queue_seconds", "time an image waited for its batch to start", LABELS, buckets=_SECONDS
)
COMPUTE_SECONDS = Histogram(
    "fcnx_compute_seconds", "time a batch took on the model (Segmenter: tiles, infer, blend)", LABELS,
    buckets=_SECONDS,
)  # fmt: skip
BATCH_SIZE = Histogram(
    "fcnx_batch_size",
    "images per batch the model ran",
    LABELS,
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
)
REQUEST_SECONDS = Histogram(
    "fcnx_request_seconds",
    "server-side time of an infer request, queue and compute",
    LABELS,
    buckets=_SECONDS,
)
