"""Data-parallel training under PyTorch's own launcher (torchrun), 2 gloo processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edgecnn.checkpoint import load_checkpoint
from edgecnn.evaluate import evaluate

pytestmark = pytest.mark.slow

ARGS = ["--arch", "tinycnn", "--img-size", "32", "--batch-size", "16", "--device", "cpu", "-q"]


def _env() -> dict[str, str]:
    return {**os.environ, "EDGECNN_DIST_TIMEOUT": "60", "PYTHONUNBUFFERED": "1"}


def _check_run(run: Path, shapes_dir: Path, epochs: int) -> None:
    names = sorted(p.name for p in run.iterdir())
    assert names == ["best.pt", "curves.png", "last.pt", "metrics.json", "reliability.png", "report", "report.html"], names  # one set, by rank 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert len(metrics["epochs"]) == epochs
    state = torch.load(run / "best.pt", weights_only=True)["state_dict"]
    assert not any(k.startswith("module.") for k in state)
    model = load_checkpoint(run / "best.pt").build_model()  # plain model, no DDP wrapper needed
    rebuilt = model.state_dict()  # the trained weights, not a fresh initialization
    assert rebuilt.keys() == state.keys() and all(torch.equal(rebuilt[k], state[k]) for k in state)
    # Validation under DDP covered every image exactly once: a single-process eval agrees.
    report = evaluate(run / "best.pt", shapes_dir / "val")
    assert report.accuracy == pytest.approx(metrics["val_accuracy"], abs=1e-9)


def test_torchrun_two_processes(shapes_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "edgecnn", "train", str(shapes_dir), "-o", str(run), "--epochs", "2", *ARGS]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_run(run, shapes_dir, epochs=2)


def test_nproc_option_and_killed_run_resumes(shapes_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "nproc"
    cmd = [sys.executable, "-m", "edgecnn", "train", str(shapes_dir), "-o", str(run), "--epochs", "4", "--nproc", "2", *ARGS]
    proc = subprocess.Popen(cmd, env=_env(), start_new_session=True, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.json"
    deadline = time.time() + 240
    while not (metrics.is_file() and len(json.loads(metrics.read_text())["epochs"]) >= 1):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, "no epoch finished in time"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers, as a crash or an OOM kill would
    proc.wait()
    before = json.loads(metrics.read_text())["epochs"]
    done = len(before)
    assert 1 <= done < 4
    resumed = subprocess.run(cmd + ["--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _check_run(run, shapes_dir, epochs=4)
    history = json.loads(metrics.read_text())["epochs"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[:done] == before  # the finished epochs were kept, not redone


def test_failed_distributed_run_is_a_clear_error(tmp_path: Path) -> None:
    """A worker that fails takes the run down with a non-zero exit and a message, not a hang."""
    cmd = [sys.executable, "-m", "edgecnn", "train", str(tmp_path), "-o", str(tmp_path / "r"), "--nproc", "2", *ARGS]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "distributed training failed" in proc.stderr
