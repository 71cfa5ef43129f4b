"""Decoded images cached on disk as raw uint8 and memory-mapped, so that every process and epoch shares one copy.

    images = open_or_build(samples, decode, fields={"kind": "train", "resize": 64}, cache_dir=default_cache_dir())
    images[i]        # (h, w, 3) uint8, a read-only view of the mapped file

An entry is a folder ``<cache_dir>/<kind>-<key>/`` holding ``pixels.u8`` (every image's bytes, one after
another), ``index.npy`` (offset, height, width, target per image) and ``meta.json`` (the unreadable files).
The key hashes the cache format, Pillow's version, the decoding fields (sizes, interpolation) and, per
sample, its absolute path, size, mtime and class: touching, adding or removing one file makes a new entry.
Entries are built into a temporary folder and renamed into place, so a reader never sees half of one and
two builders (nodes sharing a cache folder) cannot corrupt each other: the second rename loses, harmlessly.

The pages live in the kernel's page cache, not in any process's private memory: N processes on a machine
map the same pages, and a dataset larger than RAM is paged in from disk as it is read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import PIL

log = logging.getLogger(__name__)

# Bump when the layout or the decoding changes: old entries then stop matching and are rebuilt.
CACHE_FORMAT = 1
CHUNK = 512  # images decoded per round while building: bounds the builder's memory whatever the dataset size
STALE_TMP_S = 24 * 3600  # a temporary build folder older than this was left by a killed builder


class CacheError(OSError):
    """The cache folder cannot be created or written; the message names the folder and the fix."""


def default_cache_dir() -> Path:
    """``$EDGECNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgecnn/datasets``, else ``~/.cache/edgecnn/datasets``.

    Not beside the data: datasets are often read-only (a shared mount, a package), and a cache on a
    network file system would defeat the point of reading pages from local disk.
    """
    if os.environ.get("EDGECNN_CACHE_DIR"):
        return Path(os.environ["EDGECNN_CACHE_DIR"])
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "edgecnn" / "datasets"


def cache_key(samples: Sequence[tuple[Path, int]], fields: dict[str, object]) -> str:
    """A digest of everything the decoded bytes depend on; the sample order is part of it (index i = sample i)."""
    h = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "pillow": PIL.__version__, **fields}, sort_keys=True).encode())
    for path, target in samples:
        try:
            st = os.stat(path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:  # a vanished file decodes as a failure; it still counts in the key
            size, mtime = -1, -1
        h.update(f"{os.path.abspath(path)}\0{size}\0{mtime}\0{target}\n".encode())
    return h.hexdigest()[:32]


class CachedImages:
    """A read-only sequence of (h, w, 3) uint8 images in a cache entry; pickles as its folder name, not its bytes."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        meta = json.loads((self.folder / "meta.json").read_text())
        self.failures: list[tuple[Path, str]] = [(Path(p), reason) for p, reason in meta["failures"]]
        self._open()

    def _open(self) -> None:
        # Plain ndarray views of the mappings: indexing an np.memmap costs ~10x more per image (subclass upkeep).
        self.index = np.asarray(np.load(self.folder / "index.npy", mmap_mode="r"))  # (n, 4): offset, h, w, target
        pixels = self.folder / "pixels.u8"
        # numpy cannot map an empty file: a set whose every image failed has no pixels.
        self.pixels = np.asarray(np.memmap(pixels, dtype=np.uint8, mode="r")) if pixels.stat().st_size \
            else np.zeros(0, np.uint8)

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn/forkserver get the folder and map it themselves.
        return {"folder": self.folder, "failures": self.failures}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        offset, h, w, _ = self.index[i].tolist()
        return self.pixels[offset : offset + h * w * 3].reshape(h, w, 3)

    @property
    def targets(self) -> list[int]:
        """The class of each image, as a list (small ints: 8 bytes an image, and O(1) to index)."""
        return self.index[:, 3].tolist()

    @property
    def sizes(self) -> np.ndarray:
        """(n, 2) heights and widths."""
        return np.asarray(self.index[:, 1:3])

    def as_array(self) -> np.ndarray:
        """All images as one (n, h, w, 3) memory-mapped array; every image must have the same shape."""
        n = len(self)
        if n == 0:
            return np.zeros((0, 1, 1, 3), np.uint8)
        h, w = (int(v) for v in self.index[0, 1:3])
        assert (self.index[:, 1] == h).all() and (self.index[:, 2] == w).all(), "images of different shapes"
        return self.pixels[: n * h * w * 3].reshape(n, h, w, 3)


def open_or_build(
    samples: Sequence[tuple[Path, int]],
    decode_all: Callable[[Sequence[tuple[Path, int]]], tuple[list[np.ndarray], list[int], list[tuple[Path, str]]]],
    *,
    fields: dict[str, object],
    cache_dir: str | os.PathLike,
    build: bool = True,
    poll_s: float = 0.2,
) -> CachedImages:
    """The cache entry for ``samples``: opened if present, else built (``build``) or waited for.

    ``decode_all(chunk)`` returns (arrays, targets, failures) for a chunk of samples. Under torchrun one
    process per machine builds (``build=True``) while the others wait for the entry to appear; a builder
    that dies takes the group down (torchrun), so the waiters need no timeout of their own.
    """
    root = Path(cache_dir).expanduser()
    folder = root / f"{fields.get('kind', 'images')}-{cache_key(samples, fields)}"
    if folder.is_dir():
        return CachedImages(folder)
    if not build:
        log.info("waiting for another process to cache %d images in %s", len(samples), folder)
        while not folder.is_dir():
            time.sleep(poll_s)
        return CachedImages(folder)
    try:
        _build(folder, samples, decode_all, fields)
    except OSError as exc:
        raise CacheError(f"cannot write the image cache in {root} ({exc.strerror or exc}); pass --cache-dir with a "
                         "writable folder that has room, or --cache-dir none to decode into memory") from None
    return CachedImages(folder)


def _build(folder: Path, samples: Sequence[tuple[Path, int]], decode_all: Callable, fields: dict[str, object]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(folder.parent)
    tmp = folder.parent / f".{folder.name}.{os.getpid()}.{time.time_ns()}.tmp"
    tmp.mkdir()
    log.info("caching %d decoded images in %s", len(samples), folder)
    try:
        index = np.zeros((len(samples), 4), np.int64)
        failures: list[tuple[str, str]] = []
        n = offset = 0
        with open(tmp / "pixels.u8", "wb") as f:
            for start in range(0, len(samples), CHUNK):
                arrays, targets, failed = decode_all(samples[start : start + CHUNK])
                for array, target in zip(arrays, targets, strict=True):
                    array = np.ascontiguousarray(array, dtype=np.uint8)
                    assert array.ndim == 3 and array.shape[2] == 3, array.shape
                    f.write(array.data)
                    index[n] = (offset, array.shape[0], array.shape[1], target)
                    offset += array.size
                    n += 1
                failures += [(str(p), reason) for p, reason in failed]
            f.flush()
            os.fsync(f.fileno())
        np.save(tmp / "index.npy", index[:n])
        meta = {"format": CACHE_FORMAT, "fields": fields, "images": n, "bytes": offset, "failures": failures}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        try:
            os.rename(tmp, folder)  # atomic; fails if another builder's entry is already there
        except OSError:
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale(root: Path) -> None:
    now = time.time()
    for path in root.glob(".*.tmp"):
        try:
            if now - path.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass  # another process removed it first
