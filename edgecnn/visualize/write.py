"""visualize(): a model's pictures and their index page, written to a folder.

    result = visualize("runs/shapes/best.pt", "viz/", image="cat.jpg")   # kernels.png, features_*.png,
    result.files                                                          # softmax.png, index.html
    visualize("model.int8.onnx", "viz/q", image="cat.jpg")               # + fp32_vs_int8.png (model.onnx beside it)
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compare import LayerDiff, check_comparable, compare_layers, reference_beside
from .pages import write_index
from .pictures import render_comparison, render_features, render_kernels, render_softmax
from .views import VisualizeError, load_view


@dataclass
class Visualization:
    """What visualize() wrote, and where in the model each feature map was taken."""

    files: list[Path]  # the pictures, index.html last
    layers: list[dict[str, Any]] = field(default_factory=list)  # name, caption, tensor, shape per layer shown
    reference: Path | None = None  # the model compared against, if any
    comparison: list[LayerDiff] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"files": [str(p) for p in self.files], "layers": self.layers,
                "reference": None if self.reference is None else str(self.reference),
                "comparison": [d.to_dict() for d in self.comparison]}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "layer"


def _table(header: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table style="font-size:smaller"><tr>{cells}</tr>{body}</table>'


def visualize(model_path: str | os.PathLike, out_dir: str | os.PathLike, *,
              image: str | os.PathLike | None = None, compare: str | os.PathLike | None = None,
              auto_compare: bool = True) -> Visualization:
    """Write kernels.png (and, with ``image``, features_<layer>.png and softmax.png) and index.html.

    With ``image`` and a reference model (``compare``, or with ``auto_compare`` the FP32 ``MODEL.onnx``
    beside a quantized ``MODEL.int8.onnx`` / ``MODEL.fp16.onnx``), also <ref>_vs_<precision>.png, e.g.
    fp32_vs_int8.png: each layer's maps in both models and their difference, and both softmaxes.
    """
    from ..runtime.preprocess import preprocess

    view = load_view(model_path)
    if compare is not None and image is None:
        raise VisualizeError("comparing two models needs an image: give --image too")
    reference_path = Path(compare) if compare is not None else (
        reference_beside(model_path) if auto_compare and image is not None and view.precision != "fp32" else None)
    reference = load_view(reference_path) if reference_path is not None else None
    if reference is not None and reference_path is not None:
        check_comparable(reference, view, reference_path, Path(model_path))
    pixels = None
    if image is not None:
        if not Path(image).is_file():
            raise VisualizeError(f"{image}: no such image file")
        pixels = preprocess(image, view.spec)  # raises ImageError naming the file for an unreadable one
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[tuple[str, str]] = []
    result = Visualization([], reference=reference_path)
    render_kernels(view).save(out / "kernels.png")
    entries.append(("kernels.png", f"Learned kernels. Top: the first convolution's {view.first_kernels.shape[0]} "
                                   f"filters, in colour ({view.kernel_note}); they respond to edges and colour blobs. "
                                   "Below: how strongly each deeper filter reads each input channel."))
    details = ""
    if image is not None and pixels is not None:
        acts, probs = view.run(pixels)
        for act in acts:
            file = f"features_{_slug(act.name)}.png"
            render_features(act.name, act.caption, act.maps, pixels=pixels).save(out / file)
            entries.append((file, f"Feature maps at {act.name} ({act.caption}): early layers respond to edges and "
                                  "colours, later ones to parts and whole shapes, at lower resolution."))
            result.layers.append({"name": act.name, "caption": act.caption, "tensor": act.tensor,
                                  "shape": list(act.maps.shape)})
        picture, sv = render_softmax(probs, view.spec.labels, pixels=pixels, title=f"softmax for {Path(image).name}")
        picture.save(out / "softmax.png")
        entries.append(("softmax.png", f"Class probabilities: {sv.winner} at {sv.probs[0]:.1%}, margin {sv.margin:.2f} "
                                       f"to the runner-up ({sv.verdict})."))
        details = _table(["layer", "taken at", "shape"],
                         [[html.escape(a.name), f"<code>{html.escape(a.tensor)}</code>", "x".join(map(str, a.maps.shape))]
                          for a in acts])
        if reference is not None and reference_path is not None:
            ref_acts, ref_probs = reference.run(pixels)
            result.comparison = compare_layers(ref_acts, acts)
            ref_label, label = reference.precision, view.precision
            if ref_label == label:  # e.g. --compare with another FP32 file: tell the two apart by format
                ref_label, label = f"{reference.source} {ref_label}", f"{view.source} {label}"
            file = f"{_slug(ref_label)}_vs_{_slug(label)}.png"
            render_comparison(ref_acts, acts, result.comparison, ref_probs, probs, view.spec.labels,
                              reference_label=ref_label, label=label, pixels=pixels).save(out / file)
            worst = max(result.comparison, key=lambda d: d.relative_error)
            entries.append((file, f"{ref_label} ({reference_path.name}) against {label} ({Path(model_path).name}), "
                                  f"layer by layer on the same image: the maps of each, the difference, and both "
                                  f"softmaxes. Largest relative error {worst.relative_error:.1%} at {worst.name}."))
            details += _table(["layer", "cosine", "relative error", f"{ref_label} tensor", f"{label} tensor"],
                              [[html.escape(d.name), f"{d.cosine:.4f}", f"{d.relative_error:.2%}",
                                f"<code>{html.escape(d.reference_tensor)}</code>", f"<code>{html.escape(d.tensor)}</code>"]
                               for d in result.comparison])
    intro = (f"<p>Model <code>{html.escape(str(model_path))}</code> ({view.source}, {view.precision}), input "
             f"{view.spec.size}x{view.spec.size}, classes: {html.escape(', '.join(view.spec.labels))}"
             + (f"; image <code>{html.escape(str(image))}</code>" if image is not None else "")
             + (f"; compared with <code>{html.escape(str(reference_path))}</code>" if reference_path is not None else "")
             + ".</p>")
    index = write_index(out, entries, title=f"Inside {Path(model_path).name}", intro=intro, outro=details)
    result.files = [out / f for f, _ in entries] + [index]
    return result
