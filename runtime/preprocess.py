"""Image decoding and preprocessing, shared bit-for-bit by training, export checks, calibration and the runtime.

    pixels = preprocess("cat.jpg", spec)          # (size, size, 3) uint8, RGB
    batch = to_model_input(np.stack([pixels]), spec, layout="NCHW", dtype="float32")

Only numpy and Pillow: this module runs on the device.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .spec import PreprocessSpec

ImageInput = str | os.PathLike | Image.Image | np.ndarray

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}

# Transparent pixels are composited onto this background, in training and at run time alike.
BACKGROUND = (255, 255, 255)
ORIENTATION = 0x0112  # the EXIF tag that says how a camera held the picture


class ImageError(ValueError):
    """An input that cannot be turned into an RGB image; the message names the file and the reason."""


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def load_rgb(source: ImageInput | bytes, *, min_side: int | None = None, bgr: bool = False) -> Image.Image:
    """Open ``source`` as an RGB PIL image: EXIF orientation applied, first frame, alpha on white.

    ``min_side`` lets a JPEG decode at a reduced scale (Pillow's draft mode) while keeping the shorter
    side at least that long; every caller that passes the spec's ``resize`` gets the same pixels.
    ``bgr`` says a numpy array is in OpenCV's channel order. ``bytes`` are an encoded file held in memory
    (an HTTP body); errors then name its length instead of a path.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, bgr=bgr)
    if isinstance(source, Image.Image):
        return _to_rgb(_upright(source))
    data = source if isinstance(source, bytes) else None
    path = Path(f"{len(source)} bytes") if isinstance(source, bytes) else Path(source)
    try:
        if (len(data) if data is not None else path.stat().st_size) == 0:
            raise ImageError(f"{path}: empty file")
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            if min_side and image.format == "JPEG":
                width, height = image.size
                scale = min_side / max(1, min(width, height))
                if scale < 1:
                    image.draft("RGB", (int(np.ceil(width * scale)), int(np.ceil(height * scale))))
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            image.load()
            return _to_rgb(_upright(image))
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (unrecognized format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: refused as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt data as OSError/SyntaxError/ValueError.
        raise ImageError(f"{path}: unreadable image ({exc})") from None


def _upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says; the image itself when there is nothing to turn.

    ImageOps.exif_transpose copies an image that needs no turning, and parsing the EXIF costs as much as
    resizing does: most files have no orientation other than 1, so look before calling it.
    """
    if "exif" not in image.info and not hasattr(image, "tag_v2"):  # no EXIF block at all (TIFF keeps tags apart)
        return image
    if image.getexif().get(ORIENTATION, 1) in (0, 1):
        return image
    return ImageOps.exif_transpose(image) or image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _array_to_rgb(np.asarray(image))
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _array_to_rgb(array: np.ndarray, *, bgr: bool = False) -> Image.Image:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(f"array of shape {array.shape} is not an image; expected HxW, HxWx3 or HxWx4")
    if array.dtype != np.uint8:
        array = _to_uint8(array)
    if bgr and array.shape[2] >= 3:
        array = array[:, :, [2, 1, 0] + ([3] if array.shape[2] == 4 else [])]
    if array.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(np.repeat(array, 3, axis=2)), "RGB")
    if array.shape[2] == 4:
        return _to_rgb(Image.fromarray(np.ascontiguousarray(array), "RGBA"))
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale integer images of more than 8 bits, and float images on 0..1, to 0..255."""
    if np.issubdtype(array.dtype, np.floating):
        peak = float(np.nanmax(array)) if array.size else 0.0
        scaled = array * 255.0 if peak <= 1.0 else array
        return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)
    values = array.astype(np.int64)
    if values.max(initial=0) > 255:  # 16-bit data (I;16 PNG, TIFF): keep the top 8 bits' worth
        return np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
    return np.clip(values, 0, 255).astype(np.uint8)


def resize_and_crop(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """Resize the shorter side to ``spec.resize`` and take the centre ``spec.size`` square."""
    width, height = image.size
    short = spec.resize
    if width <= height:
        new_w, new_h = short, max(short, int(short * height / width))
    else:
        new_w, new_h = max(short, int(short * width / height)), short
    left = int(round((new_w - spec.size) / 2.0))
    top = int(round((new_h - spec.size) / 2.0))
    if new_w < width and spec.interpolation == "bilinear":
        # Shrinking (the usual photo): resize only the square that the centre crop keeps. Pillow's ``box`` is
        # that square in source pixels at the full resize's scale, so the filter weights (clipped at the
        # image's edges, not the box's) are the full resize's: the same pixels to within 1 of 255 (float
        # rounding), without the work on the cropped-off sides or the intermediate image. The other cases
        # keep the two steps: enlarging or nearest-neighbour, the box moves the sample grid by a rounding;
        # bicubic, whose negative lobes are clipped between Pillow's two passes, differed by up to 21.
        sx, sy = width / new_w, height / new_h
        box = (left * sx, top * sy, (left + spec.size) * sx, (top + spec.size) * sy)
        return image.resize((spec.size, spec.size), _FILTERS[spec.interpolation], box=box)
    if (new_w, new_h) != image.size:
        image = image.resize((new_w, new_h), _FILTERS[spec.interpolation])
    if (left, top, new_w, new_h) != (0, 0, spec.size, spec.size):
        image = image.crop((left, top, left + spec.size, top + spec.size))
    return image


def preprocess(source: ImageInput | bytes, spec: PreprocessSpec, *, bgr: bool = False) -> np.ndarray:
    """Decode ``source`` and return the model's view of it: a (size, size, 3) uint8 RGB array."""
    image = load_rgb(source, min_side=spec.resize, bgr=bgr)
    return np.asarray(resize_and_crop(image, spec), dtype=np.uint8)


def normalize(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, normalized with the spec's mean and std."""
    mean = np.asarray(spec.mean255, dtype=np.float32)
    inv_std = np.asarray(spec.inv_std255, dtype=np.float32)
    out = (pixels.astype(np.float32) - mean) * inv_std
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def to_model_input(pixels: np.ndarray, spec: PreprocessSpec, *, layout: str, dtype: str) -> np.ndarray:
    """Turn a uint8 NHWC batch into what a graph input of ``layout`` and ``dtype`` expects."""
    if dtype == "uint8":
        return pixels if layout == "NHWC" else np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
    nchw = normalize(pixels, spec).astype(dtype, copy=False)
    return nchw if layout == "NCHW" else np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))


def batches(pixels: np.ndarray, size: int, *, pad: bool = False) -> Iterator[tuple[np.ndarray, int]]:
    """Chunks of ``size`` images, each with its number of real images.

    ``pad`` fills a short last chunk up to ``size`` for a graph with a fixed batch dimension; the caller keeps
    the first n rows of the answer. The padding repeats the last image rather than adding black ones, so
    that a calibration pass over the chunks sees no pixel value the data does not have.
    """
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for start in range(0, len(pixels), size):
        chunk = pixels[start : start + size]
        n = len(chunk)
        if pad and n < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - n, axis=0)])
        yield chunk, n
