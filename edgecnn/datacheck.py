"""Dataset checks: unreadable files, exact and near duplicates (leakage across train/val), balance, tiny images, mislabels.

    report = check_dataset("photos/", model="runs/photos/best.pt")
    report.problems, report.to_dict()["duplicates"]

Read-only, in the spirit of cleanlab: nothing in the dataset is changed, every finding names its files,
suspects are ranked by the evidence against their label. The dataset is read as `edgecnn train` reads
it (``data.resolve_dataset``: train/ and val/, or class folders split the way training splits them).

Fingerprints stream through a thread pool with a bounded window, so memory grows with the number of
files (about 2.5 kB each, measured: the path, a SHA-256, a 64-bit perceptual hash, an 8x8 colour
thumbnail), not with their pixels. Near duplicates
are found by multi-index hashing, not all pairs: the 64-bit pHash is cut into ``BANDS`` bands of 8
bits; two hashes within ``NEAR_MAX_DISTANCE`` bits agree exactly on at least one band (pigeonhole), so
only images that share a band value are compared. A candidate pair is confirmed when its colour
thumbnails also agree (mean absolute difference <= ``THUMB_MAX_MAD`` of 255), which rejects distinct
images whose grey structure happens to match (two gradients of other colours with a patch each).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from .data import DatasetSplit, resolve_dataset
from .runtime.preprocess import ImageError, load_rgb

log = logging.getLogger(__name__)

HASH_SIDE = 32  # pHash: DCT of a 32x32 grey image, the 8x8 lowest frequencies against their median
THUMB_SIDE = 8  # RGB thumbnail used to confirm a near-duplicate candidate
BANDS = 8  # multi-index hashing: 8 bands of 8 bits; any pair within 7 bits shares a band
NEAR_MAX_DISTANCE = 7  # Hamming distance (of 64 bits) up to which two pHashes are candidates
THUMB_MAX_MAD = 12.0  # confirmation: mean |difference| of the 8x8 RGB thumbnails, 0..255 scale
# Measured on 1,000 synthetic 32 px images and 900 resized/re-encoded copies (JPEG q50..85, 0.75x..2x):
# copies had pHash distance <= 7 in 95% of cases and RGB thumbnail MAD <= 9.6 (99%: 8.3); distinct pairs
# within 8 bits had MAD >= 25. A grey thumbnail let same-layout images of other colours through.
SMALL_FRACTION = 0.5  # an image whose shorter side is below this share of the model input is "far smaller"
IMBALANCE_RATIO = 5.0  # largest / smallest class (training split) from which imbalance counts as a problem
SUSPECT_MIN_PROB = 0.5  # a suspect is predicted as another class with at least this probability
MAX_LISTED = 100  # suspects and small images listed (the counts cover all)

_DCT = np.sqrt(2.0 / HASH_SIDE) * np.cos(np.pi * (2 * np.arange(HASH_SIDE)[None, :] + 1) * np.arange(HASH_SIDE)[:, None]
                                         / (2 * HASH_SIDE))
_DCT[0] /= np.sqrt(2.0)  # orthonormal DCT-II basis


@dataclass
class DataReport:
    root: str
    split: str  # "folders" or "stratified" (as training would split)
    labels: tuple[str, ...]
    files: int
    classes: dict[str, dict[str, int]]  # class -> {"train": n, "val": n}
    unreadable: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    small: list[dict[str, Any]] = field(default_factory=list)
    small_count: int = 0
    imbalance: dict[str, Any] = field(default_factory=dict)
    suspects: list[dict[str, Any]] = field(default_factory=list)
    suspect_count: int = 0
    model: str | None = None
    input_size: int | None = None
    seconds: float = 0.0

    @property
    def leaks(self) -> list[dict[str, Any]]:
        return [d for d in self.duplicates if d["across_splits"]]

    @property
    def problems(self) -> int:
        """Findings that make the exit code 1."""
        return (len(self.unreadable) + len(self.duplicates) + self.small_count + self.suspect_count
                + int(bool(self.imbalance.get("problem"))))

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root, "split": self.split, "files": self.files, "labels": list(self.labels),
            "classes": self.classes, "imbalance": self.imbalance, "unreadable": self.unreadable,
            "duplicates": self.duplicates, "leaks": len(self.leaks), "small": self.small, "small_count": self.small_count,
            "input_size": self.input_size, "model": self.model, "suspects": self.suspects,
            "suspect_count": self.suspect_count, "problems": self.problems, "seconds": round(self.seconds, 3),
        }


# ------------------------------------------------------------------------------------------- fingerprints
@dataclass(frozen=True)
class Fingerprint:
    sha256: bytes
    phash: int  # 64 bits
    thumb: np.ndarray  # (THUMB_SIDE * THUMB_SIDE * 3,) uint8 RGB
    size: tuple[int, int]  # width, height as stored


def perceptual_hash(grey: Image.Image) -> int:
    """pHash: 32x32 grey, 2-D DCT, the 8x8 lowest frequencies compared with their median (DC excluded)."""
    g = np.asarray(grey.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BILINEAR), dtype=np.float64)
    coeffs = (_DCT @ g @ _DCT.T)[:8, :8].ravel()
    bits = coeffs > np.median(coeffs[1:])
    return int(np.packbits(bits).view(">u8")[0])


def fingerprint(path: Path) -> Fingerprint:
    """Content hash, perceptual hash, thumbnail and stored size of one file; ImageError as training raises it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: {exc.strerror or exc}") from None
    image = load_rgb(path, min_side=HASH_SIDE)  # the decoder training uses: same verdict on what is unreadable
    try:
        with Image.open(io.BytesIO(data)) as header:
            size = header.size
    except Exception:  # load_rgb read it, so this cannot fail in practice; the decoded size is a fine fallback
        size = image.size
    thumb = np.asarray(image.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR), dtype=np.uint8).ravel()
    return Fingerprint(hashlib.sha256(data).digest(), perceptual_hash(image.convert("L")), thumb, size)


T = TypeVar("T")
R = TypeVar("R")


def bounded_map(fn: Callable[[T], R], items: Iterable[T], *, threads: int = 4, window: int = 256) -> Iterator[tuple[T, R | Exception]]:
    """(item, fn(item) or the ImageError/OSError it raised), in input order; at most ``window`` in flight."""

    def call(item: T) -> R | Exception:
        try:
            return fn(item)
        except (ImageError, OSError, MemoryError) as exc:
            return exc

    pending: deque[tuple[T, Future]] = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="edgecnn-check") as pool:
        source = iter(items)
        try:
            for item in source:
                pending.append((item, pool.submit(call, item)))
                if len(pending) >= window:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:
                future.cancel()


# ------------------------------------------------------------------------------------------- duplicates
def near_pairs(hashes: np.ndarray, *, max_distance: int = NEAR_MAX_DISTANCE, bands: int = BANDS,
               chunk: int = 1024) -> set[tuple[int, int]]:
    """Index pairs (i < j) whose 64-bit hashes differ in at most ``max_distance`` bits, by multi-index hashing.

    Exhaustive when ``max_distance < bands`` (pigeonhole); the work is the sum of squared bucket sizes,
    not n squared.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    bits = 64 // bands
    mask = np.uint64((1 << bits) - 1)
    found: set[tuple[int, int]] = set()
    for b in range(bands):
        keys = (hashes >> np.uint64(b * bits)) & mask
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(keys)]
        for s, e in zip(starts, ends, strict=True):
            if e - s < 2:
                continue
            members = np.sort(order[s:e])
            x = hashes[members]
            for r0 in range(0, len(members), chunk):  # row blocks keep a huge bucket in bounded memory
                rows = x[r0 : r0 + chunk]
                dist = np.bitwise_count(rows[:, None] ^ x[None, :])
                ii, jj = np.nonzero(dist <= max_distance)
                ii = ii + r0
                keep = jj > ii
                for i, j in zip(members[ii[keep]].tolist(), members[jj[keep]].tolist(), strict=True):
                    found.add((i, j))
    return found


def _groups(pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.setdefault(i, i) != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    out: dict[int, list[int]] = {}
    for i in parent:
        out.setdefault(root(i), []).append(i)
    return sorted(sorted(g) for g in out.values())


# ------------------------------------------------------------------------------------------- the check
@dataclass
class _Entry:
    path: Path
    split: str
    label: str


def _entries(split: DatasetSplit) -> list[_Entry]:
    return ([_Entry(p, "train", split.labels[i]) for p, i in split.train]
            + [_Entry(p, "val", split.labels[i]) for p, i in split.val])


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _finding(kind: str, members: Sequence[_Entry], root: Path) -> dict[str, Any]:
    return {
        "kind": kind,
        "paths": [_rel(e.path, root) for e in members],
        "splits": [e.split for e in members],
        "labels": [e.label for e in members],
        "across_splits": len({e.split for e in members}) > 1,
        "across_classes": len({e.label for e in members}) > 1,
    }


def check_dataset(
    data_dir: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    input_size: int | None = None,
    val_split: float = 0.2,
    seed: int = 0,
    threads: int = 4,
    min_prob: float = SUSPECT_MIN_PROB,
    progress: Callable[[int, int], None] | None = None,
) -> DataReport:
    """Check ``data_dir`` as `edgecnn train` would read it; with ``model`` (.pt or .onnx) also rank suspects."""
    import time

    start = time.perf_counter()
    split = resolve_dataset(data_dir, val_split=val_split, seed=seed)
    root = split.root
    entries = _entries(split)
    classes = {label: {"train": 0, "val": 0} for label in split.labels}
    for e in entries:
        classes[e.label][e.split] += 1

    spec = predict = None
    if model is not None:
        from .evaluate import load_predictor

        spec, predict = load_predictor(model)
        input_size = input_size or spec.size

    good: list[int] = []
    shas: list[bytes] = []
    hashes: list[int] = []
    thumbs: list[np.ndarray] = []
    report = DataReport(str(root), split.split, split.labels, len(entries), classes, model=str(model) if model else None,
                        input_size=input_size)
    small: list[tuple[int, dict[str, Any]]] = []
    for n, (index, result) in enumerate(bounded_map(lambda i: fingerprint(entries[i].path), range(len(entries)),
                                                    threads=threads), 1):
        entry = entries[index]
        if isinstance(result, Exception):
            text = str(result)
            prefix = f"{entry.path}: "
            report.unreadable.append({"path": _rel(entry.path, root), "error": text[len(prefix):] if text.startswith(prefix) else text})
        else:
            good.append(index)
            shas.append(result.sha256)
            hashes.append(result.phash)
            thumbs.append(result.thumb)
            if input_size and min(result.size) < SMALL_FRACTION * input_size:
                small.append((min(result.size), {"path": _rel(entry.path, root), "size": list(result.size)}))
        if progress:
            progress(n, len(entries))

    # Exact duplicates: the same bytes.
    by_sha: dict[bytes, list[int]] = {}
    for k, sha in enumerate(shas):
        by_sha.setdefault(sha, []).append(k)
    exact = [g for g in by_sha.values() if len(g) > 1]
    for g in exact:
        report.duplicates.append(_finding("exact", [entries[good[k]] for k in g], root))
    # Near duplicates: close pHash, confirmed by the thumbnails; pairs of identical bytes are already listed.
    if hashes:
        thumb_arr = np.stack(thumbs).astype(np.int16)
        confirmed = [(i, j) for i, j in near_pairs(np.asarray(hashes, dtype=np.uint64))
                     if shas[i] != shas[j] and np.abs(thumb_arr[i] - thumb_arr[j]).mean() <= THUMB_MAX_MAD]
        for g in _groups(confirmed):
            report.duplicates.append(_finding("near", [entries[good[k]] for k in g], root))
    # Leakage first: it is the finding that silently inflates the validation accuracy.
    report.duplicates.sort(key=lambda d: (not d["across_splits"], not d["across_classes"], d["kind"], d["paths"]))

    small.sort(key=lambda item: item[0])
    report.small_count = len(small)
    report.small = [s for _, s in small[:MAX_LISTED]]

    counts = {label: c["train"] for label, c in classes.items()}
    largest, smallest = max(counts.values()), min(counts.values())
    ratio = largest / smallest if smallest else float("inf")
    empty_val = sorted(label for label, c in classes.items() if c["val"] == 0)
    report.imbalance = {
        "largest": max(counts, key=counts.__getitem__), "smallest": min(counts, key=counts.__getitem__),
        "ratio": round(ratio, 3) if smallest else None, "no_val": empty_val,
        "problem": ratio >= IMBALANCE_RATIO or bool(empty_val),
    }

    if predict is not None and spec is not None:
        suspects = _suspects([entries[i] for i in good], spec, predict, root, threads=threads, min_prob=min_prob)
        report.suspect_count = len(suspects)
        report.suspects = suspects[:MAX_LISTED]
    report.seconds = time.perf_counter() - start
    return report


def _suspects(entries: Sequence[_Entry], spec: Any, predict: Callable[[np.ndarray], np.ndarray], root: Path, *,
              threads: int, min_prob: float, batch_size: int = 64) -> list[dict[str, Any]]:
    """Images predicted as another class with probability >= ``min_prob``, least support for their label first.

    The evidence is the probability the model gives the folder's label: the lower, the more suspicious
    (cleanlab's self-confidence). Classes the model does not know are skipped, not judged.
    """
    from .runtime.preprocess import preprocess

    index = {label: i for i, label in enumerate(spec.labels)}
    judged = [e for e in entries if e.label in index]
    found: list[tuple[float, float, dict[str, Any]]] = []
    batch: list[tuple[_Entry, np.ndarray]] = []

    def flush() -> None:
        probs = predict(np.stack([pixels for _, pixels in batch]))
        for (entry, _), row in zip(batch, probs, strict=True):
            label = index[entry.label]
            predicted = int(row.argmax())
            if predicted != label and row[predicted] >= min_prob:
                found.append((float(row[label]), -float(row[predicted]), {
                    "path": _rel(entry.path, root), "label": entry.label, "predicted": spec.labels[predicted],
                    "prob": round(float(row[predicted]), 6), "label_prob": round(float(row[label]), 6),
                    "split": entry.split}))
        batch.clear()

    for entry, pixels in bounded_map(lambda e: preprocess(e.path, spec), judged, threads=threads, window=4 * batch_size):
        if isinstance(pixels, np.ndarray):
            batch.append((entry, pixels))
            if len(batch) == batch_size:
                flush()
    if batch:
        flush()
    found.sort(key=lambda item: (item[0], item[1]))
    return [item[2] for item in found]


# ------------------------------------------------------------------------------------------- for `train`
def split_duplicates(split: DatasetSplit) -> list[list[Path]]:
    """Groups of byte-identical files present in both train and val: the cheap leakage check training runs.

    Files are grouped by size first and only sizes that occur in both splits are hashed, so a clean
    dataset costs one stat per file.
    """
    def sizes(samples: Sequence[tuple[Path, int]]) -> dict[int, list[Path]]:
        out: dict[int, list[Path]] = {}
        for path, _ in samples:
            try:
                out.setdefault(path.stat().st_size, []).append(path)
            except OSError:
                continue  # unreadable files are training's to report
        return out

    train_sizes, val_sizes = sizes(split.train), sizes(split.val)
    groups: list[list[Path]] = []
    for size in sorted(set(train_sizes) & set(val_sizes)):
        by_sha: dict[bytes, tuple[list[Path], list[Path]]] = {}
        for which, paths in ((0, train_sizes[size]), (1, val_sizes[size])):
            for path in paths:
                try:
                    digest = hashlib.sha256(path.read_bytes()).digest()
                except OSError:
                    continue
                by_sha.setdefault(digest, ([], []))[which].append(path)
        groups += [train + val for train, val in by_sha.values() if train and val]
    return groups


def warn_split_duplicates(split: DatasetSplit, *, show: int = 3) -> list[list[Path]]:
    """Log a warning naming the first few train/val duplicates (training goes on); returns all groups."""
    groups = split_duplicates(split)
    if groups:
        named = "; ".join(" = ".join(_rel(p, split.root) for p in g) for g in groups[:show])
        more = f" (first {show} shown)" if len(groups) > show else ""
        log.warning("%d image(s) of the validation set are exact copies of training images, which inflates the "
                    "validation accuracy: %s%s; run `edgecnn data check %s` for the full list",
                    len(groups), named, more, split.root)
    return groups


__all__ = [
    "BANDS",
    "NEAR_MAX_DISTANCE",
    "DataReport",
    "Fingerprint",
    "bounded_map",
    "check_dataset",
    "fingerprint",
    "near_pairs",
    "perceptual_hash",
    "split_duplicates",
    "warn_split_duplicates",
]
