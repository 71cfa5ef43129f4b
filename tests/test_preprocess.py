"""Decoding and preprocessing: every image mode to RGB, EXIF orientation, first frames, bad files, the resize."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecnn.runtime import ImageError, PreprocessSpec, load_rgb, preprocess

SPEC = PreprocessSpec(size=16, labels=("red", "green", "blue"), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


# ------------------------------------------------------------------------------------------------ images
def _rgb_of(path: Path) -> np.ndarray:
    return np.asarray(load_rgb(path)).astype(int)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "P-transparent", "RGBA", "CMYK", "I;16", "1", "RGB"])
def test_every_image_mode_becomes_rgb(tmp_path, mode) -> None:
    base = Image.new("RGB", (20, 12), (200, 60, 30))
    base.paste((10, 40, 250), (0, 0, 10, 12))  # left half blue, right half orange
    if mode == "I;16":
        grey = np.full((12, 20), 40000, np.uint16)
        image = Image.fromarray(grey)
        assert image.mode == "I;16"
        expected = np.full((12, 20, 3), round(40000 / 257), int)
    elif mode == "1":
        image = base.convert("L").point(lambda v: 255 if v > 100 else 0).convert("1")
        expected = np.asarray(image.convert("RGB")).astype(int)
    elif mode == "P-transparent":
        image = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        blue_index = image.getpixel((0, 0))
        image.info["transparency"] = blue_index
        expected = np.asarray(base).astype(int).copy()
        expected[:, :10] = 255  # transparent pixels on the white background
    elif mode in ("LA", "RGBA"):
        image = base.convert(mode)
        alpha = Image.new("L", base.size, 255)
        alpha.paste(0, (0, 0, 10, 12))  # left half fully transparent
        image.putalpha(alpha)
        expected = np.asarray(base.convert(mode[:-1]).convert("RGB")).astype(int).copy()
        expected[:, :10] = 255
    else:
        image = base.convert(mode)
        expected = np.asarray(image.convert("RGB")).astype(int)
    suffix = ".tif" if mode in ("CMYK", "I;16") else ".png"
    path = tmp_path / f"img{suffix}"
    image.save(path)
    out = _rgb_of(path)
    assert out.shape == (12, 20, 3)
    assert np.abs(out - expected).max() <= 2, mode


def test_exif_orientation_is_applied(tmp_path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    out = _rgb_of(path)
    assert out.shape == (40, 20, 3)  # portrait after rotation
    assert out[2, 10, 0] > 200 and out[-3, 10, 2] > 200  # the red half ends up on top


def test_animated_images_use_the_first_frame(tmp_path) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((250, 0, 0), (0, 0, 250), (0, 250, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(path).n_frames == 3
    out = _rgb_of(path)
    assert out[8, 8, 0] > 200 and out[8, 8, 2] < 50


def _bomb_png(path: Path, side: int = 40000) -> Path:
    """A PNG header claiming side x side pixels: Pillow must refuse it before decoding anything."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


def bad_files(root: Path) -> dict[str, tuple[Path, str]]:
    """Each kind of bad file, with the phrase its error must contain."""
    root.mkdir(parents=True, exist_ok=True)
    good = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good, format="JPEG")
    (root / "empty.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 3])
    (root / "notes.png").write_text("this is not an image\n")
    (root / "folder.jpg").mkdir(exist_ok=True)
    link = root / "dangling.jpg"
    if not link.is_symlink():
        link.symlink_to(root / "gone.jpg")
    return {
        "empty": (root / "empty.jpg", "empty file"),
        "truncated": (root / "truncated.jpg", "unreadable image"),
        "not an image": (root / "notes.png", "not an image"),
        "bomb": (_bomb_png(root / "bomb.png"), "decompression bomb"),
        "directory": (root / "folder.jpg", "is a directory"),
        "missing": (link, "no such file"),
    }


def test_each_bad_file_kind_has_a_clear_error(tmp_path) -> None:
    for kind, (path, phrase) in bad_files(tmp_path).items():
        with pytest.raises(ImageError) as info:
            preprocess(path, SPEC)
        assert phrase in str(info.value) and path.name in str(info.value), kind


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path) -> None:
    path = tmp_path / "secret.jpg"
    Image.new("RGB", (8, 8)).save(path)
    path.chmod(0)
    with pytest.raises(ImageError, match="permission denied"):
        preprocess(path, SPEC)


def _two_step_resize_crop(image: Image.Image, size: int, resize: int, interpolation: str) -> np.ndarray:
    """The textbook centre crop: resize the shorter side to ``resize``, then cut the middle square."""
    w, h = image.size
    new_w, new_h = (resize, max(resize, int(resize * h / w))) if w <= h else (max(resize, int(resize * w / h)), resize)
    filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
               "nearest": Image.Resampling.NEAREST}
    resized = image.resize((new_w, new_h), filters[interpolation]) if (new_w, new_h) != (w, h) else image
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    return np.asarray(resized.crop((left, top, left + size, top + size))).astype(int)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_one_step_resize_matches_resize_then_crop(interpolation: str) -> None:
    """resize_and_crop resizes only the kept square (bilinear shrinking); its pixels are the two-step pipeline's,
    to within 1 of 255, and the cases it leaves to the two steps are exactly theirs."""
    from edgecnn.runtime.preprocess import resize_and_crop
    from edgecnn.runtime.spec import PreprocessSpec

    rng = np.random.default_rng(1)
    for _ in range(40):
        w, h = (int(v) for v in rng.integers(24, 500, 2))
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for size, crop_pct in ((64, 1.0), (224, 0.875), (32, 0.9)):
            spec = PreprocessSpec(size=size, crop_pct=crop_pct, interpolation=interpolation)
            got = np.asarray(resize_and_crop(image, spec)).astype(int)
            want = _two_step_resize_crop(image, size, spec.resize, interpolation)
            assert got.shape == want.shape == (size, size, 3)
            one_step = interpolation == "bilinear" and spec.resize < min(w, h)
            assert np.abs(got - want).max() <= (1 if one_step else 0), (w, h, size, crop_pct)


def test_exif_without_a_turn_leaves_the_image_alone(tmp_path) -> None:
    """Orientation 1 (and EXIF without an orientation) decode as the plain file does."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    plain, tagged = tmp_path / "plain.png", tmp_path / "tagged.png"
    image.save(plain)
    exif = Image.Exif()
    exif[0x0112] = 1
    exif[0x010F] = "camera"
    image.save(tagged, exif=exif)
    assert np.array_equal(_rgb_of(plain), _rgb_of(tagged))
    turned = tmp_path / "turned.png"
    exif[0x0112] = 3  # upside down
    image.save(turned, exif=exif)
    assert np.array_equal(_rgb_of(turned), _rgb_of(plain)[::-1, ::-1])
