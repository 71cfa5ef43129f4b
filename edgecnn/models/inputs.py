"""How pixels become a model's input tensor: the model side owns it; training, evaluation and export import it.

    x = pixels_to_tensor(torch.from_numpy(pixels), spec, torch.device("cpu"))   # (N, H, W, 3) uint8 -> NCHW
"""

from __future__ import annotations

import torch

from ..runtime.spec import PreprocessSpec


def pixels_to_tensor(pixels: torch.Tensor, spec: PreprocessSpec, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> normalized float NCHW on ``device``; same arithmetic as runtime.normalize."""
    x = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    mean = torch.tensor(spec.mean255, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    inv_std = torch.tensor(spec.inv_std255, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    x = (x - mean) * inv_std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
