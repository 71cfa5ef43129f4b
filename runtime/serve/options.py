"""What `edgecnn serve` and `app.pyz --serve` are told: the server's options, checked, and their defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

MB = 1 << 20
# Inference threads unless told otherwise: one, which onnxruntime runs without spin-waiting. Batching keeps
# it busy, and the other cores decode images; with 2+ threads onnxruntime spins between runs, which cost
# CPU the decoders need (benchmarks/serve_load.py measures the server's CPU per request both ways).
DEFAULT_THREADS = 1


@dataclass(frozen=True)
class ServeOptions:
    """What `serve` is told on its command line (model loading aside)."""

    host: str = "127.0.0.1"  # 0.0.0.0 makes it reachable from the network (use a token)
    port: int = 8080  # 0 picks a free port (printed at start-up)
    max_batch: int = 16  # images per session.run; 1 turns micro-batching off
    max_wait_ms: float = 2.0  # how long a batch waits for requests that are still being decoded
    max_body_mb: float = 10.0  # larger request bodies get 413
    max_queue: int = 64  # classify requests held at once (reading, decoding, batching); more get 503
    token: str | None = None  # when set, all but / and /healthz need "Authorization: Bearer TOKEN"
    camera: str | None = None  # frame source of the live view (camera index, video file, URL, picamera)
    decode_threads: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))  # image decoders

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.decode_threads < 1:
            raise ValueError("max_batch, max_queue and decode_threads must be >= 1")
        if self.max_wait_ms < 0 or self.max_body_mb <= 0:
            raise ValueError(f"max_wait_ms must be >= 0 and max_body_mb > 0, got {self.max_wait_ms} and {self.max_body_mb}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port}: give 0..65535")

    @property
    def max_body(self) -> int:
        return int(self.max_body_mb * MB)
