"""See inside a model: its first-layer kernels, deeper kernel magnitudes, feature maps and softmax.

    result = visualize("runs/shapes/best.pt", "viz/", image="cat.jpg")   # kernels.png, features_stage*.png,
    result.files                                                          # softmax.png, index.html

A ``.pt`` checkpoint shows everything; an ``.onnx`` model shows what its graph holds (the exported
weights, with BatchNorm folded in, and the activations onnxruntime computes). Feature maps are named by
stage (stage<N> = the N-th feature block: features[N-1], or resnet18's conv1, layer1..4) in every format,
taken at the same points of FP32 and INT8 graphs, so a quantized model can be compared with its FP32
original (fp32_vs_int8.png). One module per job: views (a model as a ModelView, from .pt or .onnx;
stages says what a stage is, onnx_graph reads the graph), compare (FP32 against quantized),
pictures (drawing, with Pillow through edgecnn.plot), pages (self-contained HTML) and write (visualize():
the folder).
"""

from .compare import LayerDiff, compare_layers, reference_beside
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
    render_comparison,
    render_features,
    render_kernels,
    render_softmax,
    softmax_view,
)
from .views import MAX_DEPTHS, Activation, ModelView, VisualizeError, load_view
from .write import Visualization, visualize

__all__ = [
    "AMBIGUOUS_MARGIN",
    "Activation",
    "CONFIDENT_MARGIN",
    "MAX_BARS",
    "MAX_CHANNELS",
    "MAX_DEEP_LAYERS",
    "MAX_DEPTHS",
    "LayerDiff",
    "ModelView",
    "Picture",
    "SoftmaxView",
    "Tile",
    "Visualization",
    "VisualizeError",
    "check_references",
    "compare_layers",
    "figure",
    "html_page",
    "load_view",
    "reference_beside",
    "render_comparison",
    "render_features",
    "render_kernels",
    "render_softmax",
    "softmax_view",
    "visualize",
    "write_index",
]
