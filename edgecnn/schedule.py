"""How a training run steps: the optimizer, the warm-up + cosine learning-rate schedule and mixed precision."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .train_config import TrainConfig


def lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The learning-rate factor per step: linear warm-up to 1, then a cosine down to 0.01."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def frozen_step_count(config: TrainConfig, total_steps: int, *, has_weights: bool, new_head: bool) -> int:
    """Steps that train the classifier alone: all of them for a linear probe; a warm-up when the classifier is new."""
    if config.freeze_backbone:
        return total_steps
    return round(config.head_warmup * total_steps) if has_weights and new_head else 0


def make_optimizer(params: Any, config: TrainConfig, *, total_steps: int, warmup_steps: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW or SGD (nesterov) at ``config.peak_lr`` over ``params`` (param groups), and its per-step schedule."""
    if config.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(params, lr=config.peak_lr, betas=(0.9, 0.999))
    else:
        optimizer = torch.optim.SGD(params, lr=config.peak_lr, momentum=0.9, nesterov=True)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, warmup_steps))


def autocast_dtype(amp: bool, cuda: bool) -> torch.dtype | None:
    """The autocast dtype of --amp (None: full precision): bfloat16 where supported, else float16 on CUDA."""
    if not amp:
        return None
    if cuda:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def grad_scaler(amp_dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A loss scaler, active only for float16 (bfloat16 has float32's range and needs none)."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
