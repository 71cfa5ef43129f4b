"""A dependency-free progress line: redrawn in place on a terminal, one line per update elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``Progress(total, "epoch 3/10")``; ``update(n, loss=0.41)``; ``close(summary)``."""

    def __init__(self, total: int, prefix: str, *, stream: TextIO | None = None, enabled: bool = True, width: int = 24):
        self.total = max(1, total)
        self.prefix = prefix
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.width = width
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.done = 0
        self._last_draw = 0.0

    def update(self, n: int = 1, **fields: float) -> None:
        self.done += n
        if not self.tty:
            return
        now = time.perf_counter()
        if now - self._last_draw < 0.1 and self.done < self.total:
            return
        self._last_draw = now
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        stats = " ".join(f"{k} {v:.4g}" for k, v in fields.items())
        elapsed = now - self.start
        self.stream.write(f"\r{self.prefix} [{bar}] {self.done}/{self.total} {stats} {elapsed:.0f}s\x1b[K")
        self.stream.flush()

    def close(self, summary: str = "") -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        line = f"{self.prefix} {summary} ({elapsed:.1f}s)"
        self.stream.write(("\r" + line + "\x1b[K\n") if self.tty else line + "\n")
        self.stream.flush()
