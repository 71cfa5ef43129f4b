"""See inside a model: its first-layer kernels, deeper kernel magnitudes, feature maps and softmax.

    written = visualize("runs/shapes/best.pt", "viz/", image="cat.jpg")   # kernels.png, features_*.png,
                                                                           # softmax.png, index.html

A ``.pt`` checkpoint shows everything; an ``.onnx`` model shows what its graph holds (the exported
weights, with BatchNorm folded in, and the activations onnxruntime computes). One module per job:
views (a model as a ModelView, from .pt or .onnx; onnx_graph reads the graph), pictures (drawing, with
Pillow through edgecnn.plot), pages (self-contained HTML) and write (visualize(): the folder).
"""

from .pages import check_references, figure, html_page, write_index
from .pictures import (
    AMBIGUOUS_MARGIN,
    CONFIDENT_MARGIN,
    MAX_BARS,
    MAX_CHANNELS,
    MAX_DEEP_LAYERS,
    Picture,
    SoftmaxView,
    Tile,
    render_features,
    render_kernels,
    render_softmax,
    softmax_view,
)
from .views import MAX_DEPTHS, ModelView, VisualizeError, load_view
from .write import visualize

__all__ = [
    "AMBIGUOUS_MARGIN",
    "CONFIDENT_MARGIN",
    "MAX_BARS",
    "MAX_CHANNELS",
    "MAX_DEEP_LAYERS",
    "MAX_DEPTHS",
    "ModelView",
    "Picture",
    "SoftmaxView",
    "Tile",
    "VisualizeError",
    "check_references",
    "figure",
    "html_page",
    "load_view",
    "render_features",
    "render_kernels",
    "render_softmax",
    "softmax_view",
    "visualize",
    "write_index",
]
