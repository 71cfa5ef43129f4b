"""edgecnn's standalone runtime: onnxruntime, numpy and Pillow only, so that it runs on a Raspberry Pi.

    from edgecnn.runtime import Classifier
    clf = Classifier("model.int8.onnx")            # labels and preprocessing come from the model's metadata
    print(clf.classify("cat.jpg", top_k=3).top)    # [Class(index=2, label='cat', prob=0.93), ...]

OpenCV (cameras, video) and picamera2 are imported only when frames are read.
"""

from .classifier import Classifier, ModelSource, check_external_data, read_labels
from .decode import Class, is_uncertain, looks_like_probabilities, margin, softmax, top_k
from .files import classify_files
from .preprocess import (
    IMAGE_EXTENSIONS,
    ImageError,
    batches,
    is_image_file,
    load_rgb,
    normalize,
    preprocess,
    to_model_input,
)
from .results import FileResult, FrameResult, Prediction, StageTimes, StreamStats
from .session import DEVICES, ModelError, available_devices, create_session, providers_for
from .sources import BadPath, CameraError, FrameSource, expand_paths, open_frames
from .spec import PROBABILITIES_OUTPUT, PreprocessSpec

__all__ = [
    "DEVICES",
    "IMAGE_EXTENSIONS",
    "PROBABILITIES_OUTPUT",
    "BadPath",
    "CameraError",
    "Class",
    "Classifier",
    "FileResult",
    "FrameResult",
    "FrameSource",
    "ImageError",
    "ModelError",
    "ModelSource",
    "Prediction",
    "PreprocessSpec",
    "StageTimes",
    "StreamStats",
    "available_devices",
    "batches",
    "check_external_data",
    "classify_files",
    "create_session",
    "expand_paths",
    "is_image_file",
    "is_uncertain",
    "load_rgb",
    "looks_like_probabilities",
    "margin",
    "normalize",
    "open_frames",
    "preprocess",
    "providers_for",
    "read_labels",
    "softmax",
    "to_model_input",
    "top_k",
]
