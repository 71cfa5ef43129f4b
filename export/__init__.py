"""Export a checkpoint to a verified ONNX file, and quantize ONNX models to INT8 (or FP16).

    from edgecnn.export import export_onnx, quantize
    export_onnx("runs/shapes/best.pt", "model.onnx", verify_dir="data/shapes/val")
    quantize("model.onnx", "data/shapes/train", "model.int8.onnx", eval_dir="data/shapes/val")

Importing this package is cheap (numpy, Pillow): torch, onnx and onnxruntime load inside the calls.
"""

from .onnx_export import DEFAULT_OPSET, ExportError, ExportResult, export_onnx
from .quantize import QuantizeError, QuantizeResult, quantize

__all__ = ["DEFAULT_OPSET", "ExportError", "ExportResult", "QuantizeError", "QuantizeResult", "export_onnx", "quantize"]
