"""torch.distributed set-up for `torchrun`: reads the launcher's environment, picks the backend and device.

One process (no torchrun) is a world of size 1 and needs no process group. Under torchrun the backend
is NCCL on CUDA and gloo on CPU, with a timeout so that a dead peer ends the run instead of hanging it.
Under ``torchrun --max-restarts N`` a lost process makes torchrun restart the whole group; ``restart_count``
tells the new processes that they are a restart, so that training resumes from ``last.pt`` by itself.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

# A collective that waits longer than this for a peer fails, and torchrun takes the run down.
DEFAULT_TIMEOUT_S = 300
# Test hook: "RANK:EPOCH" makes that rank SIGKILL itself after that epoch, on a group's first attempt only.
TEST_KILL_ENV = "EDGECNN_TEST_KILL_AFTER_EPOCH"


@dataclass(frozen=True)
class DistContext:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str) -> torch.device:
    """``auto`` is CUDA when a GPU is present, else CPU; ``cuda`` without a GPU is an error."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU (CPU build, or no driver); use --device cpu")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def setup(requested_device: str = "auto") -> DistContext:
    """Join the process group that torchrun describes in the environment (if any)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    device = pick_device(requested_device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        # N processes on one machine share its cores instead of each taking all of them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    if restart_count() > 0 and local_rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        log.warning("torchrun restarted this group with its rendezvous store shared, where the new processes can read "
                    "the dead ones' addresses and fail to connect; set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for "
                    "torchrun (edgecnn train --max-restarts does)")
    if world_size > 1 and not dist.is_initialized():
        timeout = timedelta(seconds=int(os.environ.get("EDGECNN_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
        extra: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=timeout,
            **extra,
        )
    return DistContext(rank, local_rank, world_size, local_world, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: object, ctx: DistContext) -> object:
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(module: torch.nn.Module, ctx: DistContext) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts buffers at the start of each forward, but the forward then updates them locally, so
    after the last training step each process holds slightly different statistics. Validation must use
    the statistics that rank 0 saves in the checkpoint, or its accuracy would not be the checkpoint's.
    """
    if ctx.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def restart_count() -> int:
    """How many times torchrun has restarted this group (0 on the first attempt, and outside torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def kill_for_test(ctx: DistContext, epoch: int) -> None:
    """For the tests of ``--max-restarts`` only: ``EDGECNN_TEST_KILL_AFTER_EPOCH=RANK:EPOCH`` kills that rank
    with SIGKILL (as an OOM kill or a lost node would) once ``epoch`` (1-based) is done, on the first attempt."""
    spec = os.environ.get(TEST_KILL_ENV)
    if not spec or restart_count() > 0:
        return
    rank, after = (int(v) for v in spec.split(":"))
    if ctx.rank == rank and epoch == after:
        os.kill(os.getpid(), signal.SIGKILL)
