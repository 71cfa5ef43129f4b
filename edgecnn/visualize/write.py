"""visualize(): a model's pictures and their index page, written to a folder.

    written = visualize("runs/shapes/best.pt", "viz/", image="cat.jpg")   # kernels.png, features_*.png,
                                                                           # softmax.png, index.html
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

from .pages import write_index
from .pictures import render_features, render_kernels, render_softmax
from .views import VisualizeError, load_view


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "layer"


def visualize(model_path: str | os.PathLike, out_dir: str | os.PathLike, *,
              image: str | os.PathLike | None = None) -> list[Path]:
    """Write kernels.png (and, with ``image``, features_<layer>.png and softmax.png) and index.html.

    Returns the written files, index.html last.
    """
    from ..runtime.preprocess import preprocess

    view = load_view(model_path)
    pixels = None
    if image is not None:
        if not Path(image).is_file():
            raise VisualizeError(f"{image}: no such image file")
        pixels = preprocess(image, view.spec)  # raises ImageError naming the file for an unreadable one
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[tuple[str, str]] = []
    render_kernels(view).save(out / "kernels.png")
    entries.append(("kernels.png", f"Learned kernels. Top: the first convolution's {view.first_kernels.shape[0]} "
                                   f"filters, in colour ({view.kernel_note}); they respond to edges and colour blobs. "
                                   "Below: how strongly each deeper filter reads each input channel."))
    if image is not None and pixels is not None:
        acts, probs = view.run(pixels)
        for name, caption, maps in acts:
            file = f"features_{_slug(name)}.png"
            render_features(name, caption, maps, pixels=pixels).save(out / file)
            entries.append((file, f"Feature maps at {name} ({caption}): early layers respond to edges and colours, "
                                  "later ones to parts and whole shapes, at lower resolution."))
        picture, sv = render_softmax(probs, view.spec.labels, pixels=pixels, title=f"softmax for {Path(image).name}")
        picture.save(out / "softmax.png")
        entries.append(("softmax.png", f"Class probabilities: {sv.winner} at {sv.probs[0]:.1%}, margin {sv.margin:.2f} "
                                       f"to the runner-up ({sv.verdict})."))
    intro = (f"<p>Model <code>{html.escape(str(model_path))}</code> ({view.source}), input "
             f"{view.spec.size}x{view.spec.size}, classes: {html.escape(', '.join(view.spec.labels))}"
             + (f"; image <code>{html.escape(str(image))}</code>" if image is not None else "") + ".</p>")
    index = write_index(out, entries, title=f"Inside {Path(model_path).name}", intro=intro)
    return [out / f for f, _ in entries] + [index]
