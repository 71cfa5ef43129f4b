"""ImageFolder datasets: scanning class folders, the train/val split, decoding and augmentation.

    split = resolve_dataset("photos/", val_split=0.2, seed=0)
    split.labels, len(split.train), len(split.val)

Decoding goes through the runtime's ``load_rgb``/``preprocess``, so training sees exactly the pixels
that the device will see. This module needs numpy and Pillow only; ``TrainSet``/``EvalSet`` are plain
sequences that a torch DataLoader can wrap. With a ``cache_dir`` the decoded images live in a
memory-mapped cache entry on disk (``edgecnn.cache``) that every process and epoch shares; without one,
in this process's memory.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .augment import FITTED, FLIP, sample_boxes
from .cache import CachedImages, open_or_build
from .runtime.preprocess import ImageError, is_image_file, load_rgb, preprocess, resize_and_crop
from .runtime.spec import PreprocessSpec

log = logging.getLogger(__name__)

Sample = tuple[Path, int]  # (file, class index)


class DatasetError(ValueError):
    """A data folder that cannot be used as it is; the message says what to change."""


@dataclass
class DatasetSplit:
    root: Path
    labels: tuple[str, ...]
    train: list[Sample]
    val: list[Sample]
    split: str  # "folders" (train/ and val/ given) or "stratified" (made here, see split_record)
    split_record: dict = field(default_factory=dict)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))


def scan_class_folders(root: Path, *, allow_empty: bool = False) -> dict[str, list[Path]]:
    """Map each class (a sub-folder name) to its image files, in sorted order."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = {name: _image_files(root / name) for name in classes}
    if not allow_empty:
        if len(classes) < 2:
            raise DatasetError(
                f"{root}: found {len(classes)} class folder(s); a classifier needs at least 2 "
                "(one sub-folder of images per class, or train/ and val/ holding those)"
            )
        empty = [name for name, paths in files.items() if not paths]
        if empty:
            raise DatasetError(f"{root}: class folder(s) with no images: {', '.join(empty)}")
    return files


def class_samples(data_dir: str | os.PathLike, labels: Sequence[str]) -> tuple[Path, list[Sample]]:
    """The images of a class-folder tree (its ``val/`` when present), indexed by name in ``labels``.

    Matching by name keeps the score right when the folder lacks some classes or sorts them otherwise.
    """
    root = Path(data_dir)
    if (root / "val").is_dir():
        root = root / "val"
    classes = scan_class_folders(root, allow_empty=True)
    if not any(classes.values()):
        raise DatasetError(f"{root}: no images found in class folders")
    unknown = sorted(set(classes) - set(labels))
    if unknown:
        raise DatasetError(f"{root}: class folder(s) {', '.join(unknown)} are not among the model's labels "
                           f"({', '.join(labels)})")
    index = {label: i for i, label in enumerate(labels)}
    return root, [(p, index[c]) for c, paths in classes.items() for p in paths]


def resolve_dataset(data_dir: str | os.PathLike, *, val_split: float = 0.2, seed: int = 0) -> DatasetSplit:
    """Read ``DATA_DIR/train`` and ``DATA_DIR/val``, or split ``DATA_DIR/<class>`` folders by class."""
    root = Path(data_dir)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = scan_class_folders(root / "train")
        val = scan_class_folders(root / "val", allow_empty=True)
        labels = tuple(train)
        unknown = sorted(set(val) - set(labels))
        if unknown:
            raise DatasetError(f"{root / 'val'}: classes not in train/: {', '.join(unknown)}")
        index = {name: i for i, name in enumerate(labels)}
        return DatasetSplit(
            root,
            labels,
            [(p, index[c]) for c, paths in train.items() for p in paths],
            [(p, index[c]) for c, paths in val.items() for p in paths],
            "folders",
        )
    if not 0.0 < val_split < 1.0:
        raise DatasetError(f"--val-split must be between 0 and 1, got {val_split}")
    classes = scan_class_folders(root)
    labels = tuple(classes)
    rng = np.random.default_rng(seed)
    train_samples: list[Sample] = []
    val_samples: list[Sample] = []
    for i, (name, paths) in enumerate(classes.items()):
        if len(paths) < 2:
            raise DatasetError(f"{root / name}: needs at least 2 images to split into train and val, has {len(paths)}")
        order = rng.permutation(len(paths))
        n_val = min(len(paths) - 1, max(1, round(len(paths) * val_split)))
        val_idx = set(order[:n_val].tolist())
        for j, p in enumerate(paths):
            (val_samples if j in val_idx else train_samples).append((p, i))
    record = {
        "val_split": val_split,
        "seed": seed,
        "val": sorted(str(p.relative_to(root)) for p, _ in val_samples),
    }
    return DatasetSplit(root, labels, train_samples, val_samples, "stratified", record)


def write_split(split: DatasetSplit, run_dir: Path) -> None:
    if split.split == "stratified":
        (run_dir / "split.json").write_text(json.dumps(split.split_record, indent=1) + "\n")


def decode_all(
    samples: Sequence[Sample],
    decode: Callable[[Path], np.ndarray],
    *,
    threads: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[np.ndarray], list[int], list[tuple[Path, str]]]:
    """Decode every sample with a thread pool (Pillow releases the GIL); return arrays, targets, failures."""

    def one(sample: Sample) -> np.ndarray | str:
        try:
            return decode(sample[0])
        except ImageError as exc:
            return str(exc)

    arrays: list[np.ndarray] = []
    targets: list[int] = []
    failures: list[tuple[Path, str]] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for n, (sample, result) in enumerate(zip(samples, pool.map(one, samples), strict=True), 1):
            if isinstance(result, str):
                failures.append((sample[0], result))
            else:
                arrays.append(result)
                targets.append(sample[1])
            if progress:
                progress(n, len(samples))
    return arrays, targets, failures


def warn_failures(failures: list[tuple[Path, str]], what: str) -> None:
    if failures:
        for _, reason in failures[:20]:
            log.warning("skipped %s", reason)
        more = " (first 20 listed)" if len(failures) > 20 else ""
        log.warning("skipped %d unreadable %s image(s)%s", len(failures), what, more)


def decode_train_image(path: Path, spec: PreprocessSpec) -> np.ndarray:
    """A training image as stored for augmentation: shorter side = spec.resize (never enlarged), uint8 HWC."""
    image = load_rgb(path, min_side=spec.resize)
    w, h = image.size
    r = spec.resize / min(w, h)
    if r < 1:
        image = image.resize((max(1, round(w * r)), max(1, round(h * r))), Image.Resampling.BILINEAR)
    return np.asarray(image)


class EvalSet:
    """Validation images, preprocessed once exactly as the runtime does: (size, size, 3) uint8.

    ``cache_dir``: keep them in a shared memory-mapped cache entry there (``build=False``: wait for
    another process to build it) instead of this process's memory.
    """

    def __init__(self, samples: Sequence[Sample], spec: PreprocessSpec, *, threads: int = 4,
                 cache_dir: str | os.PathLike | None = None, build: bool = True):
        def decode(path: Path) -> np.ndarray:
            return preprocess(path, spec)

        self.images: Sequence[np.ndarray] | np.ndarray
        self.targets: Sequence[int] | np.ndarray
        if cache_dir is None:
            self.images, self.targets, self.failures = decode_all(samples, decode, threads=threads)
        else:
            cached = open_or_build(samples, lambda chunk: decode_all(chunk, decode, threads=threads), cache_dir=cache_dir,
                                   build=build, fields={"kind": "eval", "size": spec.size, "resize": spec.resize,
                                                        "interpolation": spec.interpolation})
            self.images, self.targets, self.failures = cached.as_array(), cached.targets, cached.failures
        warn_failures(self.failures, "validation")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], int(self.targets[i])


class TrainSet:
    """Training images decoded once (shorter side = spec.resize, never enlarged) and augmented per epoch.

    Augmentation is a random resized crop (and an optional horizontal flip) whose box comes from
    ``augment.sample_boxes``, seeded by (seed, epoch, index), so a run is reproducible whatever the number
    of loader workers or processes. ``cache_dir`` keeps the decoded images in a shared memory-mapped cache
    entry (whole, at their own aspect ratio, so the crops are exactly those of the in-memory path);
    ``build=False`` waits for another process to build it. ``device_augment``: items are (uncropped
    uint8 image, target, box row) for ``augment.collate_boxes``, and the crop happens on the device.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        spec: PreprocessSpec,
        *,
        seed: int = 0,
        scale: tuple[float, float] = (0.35, 1.0),
        hflip: bool = False,
        threads: int = 4,
        cache_dir: str | os.PathLike | None = None,
        build: bool = True,
        device_augment: bool = False,
    ):
        self.spec = spec
        self.seed = seed
        self.scale = scale
        self.hflip = hflip
        self.device_augment = device_augment
        self.epoch = 0

        def decode(path: Path) -> np.ndarray:
            return decode_train_image(path, spec)

        self.images: Sequence[np.ndarray] | CachedImages
        self.targets: Sequence[int] | np.ndarray
        if cache_dir is None:
            self.images, self.targets, self.failures = decode_all(samples, decode, threads=threads)
        else:
            cached = open_or_build(samples, lambda chunk: decode_all(chunk, decode, threads=threads), cache_dir=cache_dir,
                                   build=build, fields={"kind": "train", "resize": spec.resize})
            self.images, self.targets, self.failures = cached, cached.targets, cached.failures
        warn_failures(self.failures, "training")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def box(self, i: int, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Image ``i``'s crop box for the current epoch (``shape``: its (height, width), if known): a row of
        ``augment.sample_boxes``."""
        h, w = (shape or self.images[i].shape)[:2]
        return sample_boxes(self.seed, self.epoch, [i], [(h, w)], scale=self.scale, hflip=self.hflip,
                            eval_crop=(self.spec.size, self.spec.resize))[0]

    def __getitem__(self, i: int) -> tuple[np.ndarray, int] | tuple[np.ndarray, int, np.ndarray]:
        pixels, target = self.images[i], int(self.targets[i])
        box = self.box(i, pixels.shape)
        if self.device_augment:
            return pixels, target, box
        image = Image.fromarray(pixels)
        if box[FITTED]:
            size = (self.spec.size, self.spec.size)
            x0, y0, x1, y1 = (float(v) for v in box[:4])
            image = image.resize(size, Image.Resampling.BILINEAR, box=(x0, y0, x1, y1))
        else:  # the sampled boxes did not fit: the evaluation view
            image = resize_and_crop(image, self.spec)
        if box[FLIP]:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(image, dtype=np.uint8), target


def collate(batch: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    images, targets = zip(*batch, strict=True)
    return np.stack(images), np.asarray(targets, dtype=np.int64)
