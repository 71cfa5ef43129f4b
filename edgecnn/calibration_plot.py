"""The reliability diagram: accuracy per confidence bin against the diagonal of perfect calibration (a PIL image)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .calibration import ECE_BINS, reliability

if TYPE_CHECKING:
    from PIL import Image


def reliability_diagram(probs: np.ndarray, targets: np.ndarray, *, title: str, bins: int = ECE_BINS,
                        size: tuple[int, int] = (440, 440)) -> Image.Image:
    """Accuracy per confidence bin as bars against the diagonal (perfect calibration); gaps shaded red.

    Bars under the diagonal: overconfident in that bin; above it: underconfident. The bar's number is
    its image count, so sparse bins can be read for what they are.
    """
    from PIL import Image, ImageDraw

    from .plot import AXIS, GRID, HIGHLIGHT, MUTED, font, text_size

    mean_conf, accuracy, counts = reliability(probs, targets, bins)
    width, height = size
    left, right, top, bottom = 56, 16, 40, 48
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    w, h = width - left - right, height - top - bottom

    def px(x: float, y: float) -> tuple[float, float]:
        return left + x * w, top + (1 - y) * h

    for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        draw.line([px(0, t), px(1, t)], fill=GRID)
        label = f"{t:.1f}"
        tw, th = text_size(draw, label, 12)
        draw.text((left - tw - 6, px(0, t)[1] - th / 2 - 2), label, fill=AXIS, font=font(12))
        draw.text((px(t, 0)[0] - tw / 2, top + h + 6), label, fill=AXIS, font=font(12))
    for b in range(bins):
        if counts[b] == 0:
            continue
        x0, x1 = b / bins, (b + 1) / bins
        draw.rectangle([px(x0, accuracy[b]), px(x1, 0)], fill=MUTED, outline="white")
        lo, hi = sorted((accuracy[b], mean_conf[b]))
        if hi - lo > 1e-3:
            draw.rectangle([px(x0 + 0.25 / bins, hi), px(x1 - 0.25 / bins, lo)], outline=HIGHLIGHT, width=2)
        text = str(int(counts[b]))
        tw, _ = text_size(draw, text, 10)
        if tw < w / bins + 6:
            draw.text((px((x0 + x1) / 2, 0)[0] - tw / 2, px(0, accuracy[b])[1] - 14), text, fill=AXIS, font=font(10))
    draw.line([px(0, 0), px(1, 1)], fill=AXIS, width=1)
    draw.rectangle([px(0, 1), px(1, 0)], outline=AXIS)
    xl = f"confidence (top-1 probability), {bins} bins"
    tw, _ = text_size(draw, xl, 13)
    draw.text(((width - tw) / 2, height - 24), xl, fill=AXIS, font=font(13))
    ylabel = Image.new("RGBA", (text_size(draw, "accuracy", 13)[0] + 4, 18), (255, 255, 255, 0))
    ImageDraw.Draw(ylabel).text((2, 0), "accuracy", fill=AXIS, font=font(13))
    rotated = ylabel.rotate(90, expand=True)
    image.paste(rotated, (4, top + (h - rotated.height) // 2), rotated)
    tw, _ = text_size(draw, title, 15)
    draw.text(((width - tw) / 2, 10), title, fill="black", font=font(15))
    return image
