"""Training augmentation: the random resized crop boxes (numpy, one draw for every path) and their batched crop in torch.

    boxes = sample_boxes(seed, epoch, indices, sizes, scale=(0.7, 1.0), hflip=False, eval_crop=(32, 32))
    x = crop_resize_batch(pixels_uint8_nhwc, boxes[:, :4], 32, boxes[:, 4] > 0)     # (N, 3, 32, 32) float

The CPU path (``data.TrainSet``) crops each image with Pillow; the device path ships the uint8 images and
their boxes to the GPU and crops the whole batch there with ``torchvision.ops.roi_align``, so the CPU only
feeds bytes. Both read their boxes from ``sample_boxes``, whose generator is seeded by (seed, epoch, index):
the same run draws the same boxes on either path, whatever the number of workers or processes. The
pixels differ only by interpolation: Pillow's antialiased bilinear filter against roi_align's average of
bilinear samples per output pixel (the same when enlarging; within a few levels when shrinking).

This module imports torch only inside the functions that need it: ``data`` uses ``sample_boxes`` with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from .runtime.spec import PreprocessSpec

RATIO = (3 / 4, 4 / 3)  # aspect ratios of the random crop, drawn log-uniformly
ATTEMPTS = 10  # draws before falling back to the evaluation view

# Columns of a box row.
X0, Y0, X1, Y1, FLIP, FITTED = range(6)


def _draw(rng: np.random.Generator, width: int, height: int, scale: tuple[float, float]) -> tuple[int, int, int, int] | None:
    area = width * height
    for _ in range(ATTEMPTS):
        target = area * rng.uniform(*scale)
        ratio = np.exp(rng.uniform(np.log(RATIO[0]), np.log(RATIO[1])))
        cw, ch = round(np.sqrt(target * ratio)), round(np.sqrt(target / ratio))
        if 0 < cw <= width and 0 < ch <= height:
            x0, y0 = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
            return x0, y0, x0 + cw, y0 + ch
    return None


def eval_box(width: int, height: int, size: int, resize: int) -> tuple[float, float, float, float]:
    """The evaluation view as a box in the image: the same geometry as ``runtime.preprocess.resize_and_crop``
    (shorter side to ``resize``, centre ``size`` square, its integer rounding included)."""
    if width <= height:
        new_w, new_h = resize, max(resize, int(resize * height / width))
    else:
        new_w, new_h = max(resize, int(resize * width / height)), resize
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    sx, sy = width / new_w, height / new_h
    return left * sx, top * sy, (left + size) * sx, (top + size) * sy


def sample_boxes(
    seed: int,
    epoch: int,
    indices: Sequence[int],
    sizes: Sequence[tuple[int, int]] | np.ndarray,
    *,
    scale: tuple[float, float],
    hflip: bool,
    eval_crop: tuple[int, int],
) -> np.ndarray:
    """Random resized crop boxes: one (x0, y0, x1, y1, flip, fitted) float32 row per (index, (height, width)).

    ``fitted`` is 0 when ten draws did not fit and the row holds the evaluation view (``eval_crop`` =
    (size, resize)) instead; the CPU path then crops with ``resize_and_crop`` exactly as evaluation does.
    """
    rows = np.zeros((len(indices), 6), np.float32)
    for k, (i, (h, w)) in enumerate(zip(indices, sizes, strict=True)):
        rng = np.random.default_rng([seed, epoch, int(i)])
        box = _draw(rng, int(w), int(h), scale)
        rows[k, :4] = box if box is not None else eval_box(int(w), int(h), *eval_crop)
        rows[k, FITTED] = box is not None
        rows[k, FLIP] = hflip and rng.random() < 0.5  # drawn after the box, as it always was
    return rows


def crop_resize_batch(pixels: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor) -> torch.Tensor:
    """Crop ``boxes`` (N, 4: x0, y0, x1, y1 in pixels) out of ``pixels`` (N, H, W, 3) uint8 and resize each to
    ``size`` x ``size``; mirror where ``flip``. Returns (N, 3, size, size) float on 0..255, on pixels' device.

    ``aligned=True`` puts pixel centres at +0.5 as Pillow does, and the adaptive sampling ratio (about
    box/size samples per output pixel and axis) averages the input when shrinking, as an antialiased
    resize does.
    """
    import torch
    from torchvision.ops import roi_align

    n = pixels.shape[0]
    x = pixels.permute(0, 3, 1, 2).float()
    rois = torch.cat([torch.arange(n, device=x.device, dtype=x.dtype)[:, None], boxes.to(x.device, x.dtype)], dim=1)
    out = roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    flip = flip.to(out.device).view(n, 1, 1, 1)
    return torch.where(flip, out.flip(-1), out)


def collate_boxes(batch: list[tuple[np.ndarray, int, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image, target, box row) items -> uint8 (N, H, W, 3) canvas, int64 targets, float32 boxes; torch tensors,
    so that a DataLoader with ``pin_memory`` pins them for an asynchronous copy to the GPU.

    Images smaller than the canvas are padded by repeating their last row and column: the crop's
    outermost samples may fall up to half a pixel past the image, and must see the edge, not zeros.
    """
    import torch

    images, targets, boxes = zip(*batch, strict=True)
    height = max(a.shape[0] for a in images)
    width = max(a.shape[1] for a in images)
    canvas = np.empty((len(images), height, width, 3), np.uint8)
    for k, a in enumerate(images):
        h, w = a.shape[:2]
        canvas[k, :h, :w] = a
        canvas[k, h:, :w] = a[h - 1 : h]
        canvas[k, :, w:] = canvas[k, :, w - 1 : w]
    return torch.from_numpy(canvas), torch.as_tensor(targets, dtype=torch.int64), torch.from_numpy(np.stack(boxes))


def batch_inputs(batch: tuple, spec: PreprocessSpec, device: torch.device, channels_last: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch -> (normalized model input, targets) on ``device``.

    Takes either the CPU path's (uint8 crops, targets) numpy pair, or the device path's (uint8 canvas,
    targets, boxes) from ``collate_boxes``, which is cropped here on ``device``.
    """
    import torch

    from .models.inputs import pixels_to_tensor

    if len(batch) == 2:
        pixels, targets = batch
        x = pixels_to_tensor(torch.as_tensor(pixels), spec, device, channels_last)
        return x, torch.as_tensor(targets).to(device, non_blocking=True)
    canvas, targets, boxes = batch
    canvas = canvas.to(device, non_blocking=True)
    boxes = boxes.to(device, non_blocking=True)
    crops = crop_resize_batch(canvas, boxes[:, X0 : Y1 + 1], spec.size, boxes[:, FLIP] > 0)
    # pixels_to_tensor owns the normalization; it takes NHWC, so hand it a view (no copy).
    x = pixels_to_tensor(crops.permute(0, 2, 3, 1), spec, device, channels_last)
    return x, targets.to(device, non_blocking=True)
