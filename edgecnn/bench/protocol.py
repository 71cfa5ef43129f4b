"""Talking to bench's worker processes: a row's JSON-lines protocol (Remote, or Local in this process),
and one-shot jobs (profile, cold start, peak probes) that print one JSON line.

Every subprocess runs ``python -m edgecnn.bench.worker JOB ...`` (see worker.py), so the code it runs is
ordinary, linted and type-checked Python.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from .rows import Clock, RowConfig, WorkerError
from .runners import Runner, make_runner

WORKER_MODULE = "edgecnn.bench.worker"


def worker_command(job: str, *args: str) -> list[str]:
    """The command line of a worker process for ``job``."""
    return [sys.executable, "-m", WORKER_MODULE, job, *args]


def run_job(job: str, args: Sequence[str], *, what: str, timeout: float, env: Mapping[str, str] | None = None) -> Any:
    """Run a one-shot worker job and return the JSON it printed last; WorkerError("<what> failed: ...") if it fails."""
    done = subprocess.run(worker_command(job, *args), capture_output=True, text=True, timeout=timeout, check=False,
                          env=None if env is None else dict(env))
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise WorkerError(f"{what} failed: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass  # not Linux: fall back to getrusage below
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB elsewhere


def dispatch(runner: Runner, op: str, kw: Mapping[str, Any]) -> dict[str, Any]:
    """One request to a runner: setup, run (n runs: their seconds, and the process's CPU and wall time around
    them) or finish (peak memory and the runner's extras)."""
    if op == "setup":
        return dict(runner.setup())
    if op == "run":
        # CPU time of the whole process (every intra-op thread) over real wall time, always the real clocks:
        # an injected clock fakes the latencies, not the work the runs did.
        cpu0, wall0 = time.process_time(), time.perf_counter()
        seconds = runner.run(int(kw["n"]))
        return {"seconds": seconds, "cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0}
    if op == "finish":
        return {"peak_rss_mb": peak_rss_mb(), **runner.extra()}
    raise ValueError(f"unknown worker op {op!r}")


class Handle(Protocol):
    """A row's runner, wherever it lives; ``scope`` says whose memory its peak_rss_mb is."""

    scope: str

    def call(self, op: str, timeout: float | None = None, **kw: Any) -> dict[str, Any]: ...

    def close(self) -> None: ...


class Local:
    """A runner in this process (isolate=False): deterministic with an injected clock; memory is shared."""

    scope = "process-so-far"

    def __init__(self, cfg: RowConfig, clock: Clock):
        self.runner: Runner | None = make_runner(cfg, clock)

    def call(self, op: str, timeout: float | None = None, **kw: Any) -> dict[str, Any]:
        assert self.runner is not None, "call after close"
        return dispatch(self.runner, op, kw)

    def close(self) -> None:
        self.runner = None


class Remote:
    """A runner in its own `python -m edgecnn.bench.worker row` process, spoken to in JSON lines."""

    scope = "row"

    def __init__(self, cfg: RowConfig, clock: Clock):
        del clock  # the worker times with its own perf_counter
        self.stderr = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(worker_command("row"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, env=env)
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both are PIPE
        self.stdin: IO[str] = self.proc.stdin
        self.stdout: IO[str] = self.proc.stdout
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.stdout, selectors.EVENT_READ)
        # The configuration is the first line on stdin, not an argument: a folder's image list can outgrow ARG_MAX.
        self.stdin.write(cfg.to_json() + "\n")

    def call(self, op: str, timeout: float | None = None, **kw: Any) -> dict[str, Any]:
        try:
            self.stdin.write(json.dumps({"op": op, **kw}) + "\n")
            self.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(self._died()) from None
        if not self.selector.select(timeout):
            self.close()
            raise WorkerError(f"no answer within {timeout:.0f} s")
        line = self.stdout.readline()
        if not line:
            raise WorkerError(self._died())
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise WorkerError(reply["error"])
        return reply

    def _died(self) -> str:
        self.proc.wait(timeout=10)
        self.stderr.seek(0)
        tail = [ln for ln in self.stderr.read().strip().splitlines() if ln.strip()]
        return f"worker exited with code {self.proc.returncode}: {tail[-1] if tail else 'no message'}"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.stdin.flush()
                self.proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.selector.close()
        self.stderr.close()


def serve_row(stdin: IO[str], stdout_fd: int = 1) -> None:
    """The worker side of Remote: the configuration on the first line, then one request per line until quit."""
    # The protocol owns the real stdout; anything a library prints goes to stderr instead of corrupting it.
    proto = os.fdopen(os.dup(stdout_fd), "w", buffering=1)
    os.dup2(2, stdout_fd)
    sys.stdout = sys.stderr
    runner = make_runner(RowConfig.from_json(stdin.readline()), time.perf_counter)
    for line in stdin:
        msg = json.loads(line)
        op = msg.pop("op")
        if op == "quit":
            break
        try:
            reply = dispatch(runner, op, msg)
        except WorkerError as exc:  # already written for the user: the reason, without a type name
            reply = {"error": str(exc)}
        except Exception as exc:  # reported to the parent, which marks the row unavailable with this reason
            text = str(exc).strip().splitlines()
            reply = {"error": f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")}
        proto.write(json.dumps(reply) + "\n")
