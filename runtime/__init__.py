"""edgecnn's standalone runtime: onnxruntime, numpy and Pillow only, so that it runs on a Raspberry Pi.

    from edgecnn.runtime import PreprocessSpec, preprocess
"""

from .preprocess import IMAGE_EXTENSIONS, ImageError, load_rgb, normalize, preprocess, to_model_input
from .spec import PreprocessSpec

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageError",
    "PreprocessSpec",
    "load_rgb",
    "normalize",
    "preprocess",
    "to_model_input",
]
