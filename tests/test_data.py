"""Synthetic data and ImageFolder handling: determinism, the split, and the error paths."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecnn.data import DatasetError, EvalSet, resolve_dataset
from edgecnn.runtime.spec import PreprocessSpec
from edgecnn.synth import synthesize


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_synth_is_deterministic(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", classes=3, per_class=10, size=32, seed=7)
    synthesize(tmp_path / "b", classes=3, per_class=10, size=32, seed=7)
    synthesize(tmp_path / "c", classes=3, per_class=10, size=32, seed=8)
    assert (a.train_images, a.val_images) == (24, 6)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_synth_classes_are_not_separable_by_mean_colour(tmp_path: Path) -> None:
    """A nearest-centroid classifier on mean RGB must stay near chance: shape, not colour, carries the class."""
    synthesize(tmp_path, classes=5, per_class=60, size=32, seed=0)
    split = resolve_dataset(tmp_path)

    def features(samples):
        return np.array([np.asarray(Image.open(p), dtype=np.float32).mean((0, 1)) for p, _ in samples]), \
            np.array([t for _, t in samples])

    xtr, ytr = features(split.train)
    xva, yva = features(split.val)
    centroids = np.stack([xtr[ytr == c].mean(0) for c in range(5)])
    pred = np.argmin(((xva[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == yva).mean() < 0.4  # chance is 0.2


def test_train_val_folders(shapes_dir: Path) -> None:
    split = resolve_dataset(shapes_dir)
    assert split.split == "folders"
    assert split.labels == ("circle", "square", "triangle") or split.labels == tuple(sorted(split.labels))
    assert len(split.train) == 3 * 48 and len(split.val) == 3 * 12


def _class_folders(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 10 % 255, 0, 0)).save(root / name / f"{i}.png")
    return root


def test_stratified_split_is_deterministic_and_per_class(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "d", {"b": 10, "a": 20, "c": 5})
    s1 = resolve_dataset(root, val_split=0.2, seed=3)
    s2 = resolve_dataset(root, val_split=0.2, seed=3)
    s3 = resolve_dataset(root, val_split=0.2, seed=4)
    assert s1.labels == ("a", "b", "c")  # class index = sorted folder name
    assert s1.split == "stratified"
    assert [str(p) for p, _ in s1.val] == [str(p) for p, _ in s2.val]
    assert [str(p) for p, _ in s1.val] != [str(p) for p, _ in s3.val]
    per_class = {c: sum(1 for _, t in s1.val if t == i) for i, c in enumerate(s1.labels)}
    assert per_class == {"a": 4, "b": 2, "c": 1}
    assert not {p for p, _ in s1.val} & {p for p, _ in s1.train}
    assert s1.split_record["val"] and s1.split_record["seed"] == 3


def test_fewer_than_two_classes_is_an_error(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "d", {"only": 4})
    with pytest.raises(DatasetError, match="at least 2"):
        resolve_dataset(root)


def test_empty_class_is_an_error(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "d", {"a": 4, "b": 4})
    (root / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        resolve_dataset(root)


def test_unreadable_files_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _class_folders(tmp_path / "d", {"a": 3, "b": 3})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "b" / "empty.jpg").write_bytes(b"")
    split = resolve_dataset(root, val_split=0.5)
    samples = split.train + split.val
    with caplog.at_level(logging.WARNING):
        ds = EvalSet(samples, PreprocessSpec(size=8, labels=split.labels))
    assert len(ds) == len(samples) - 2
    text = caplog.text
    assert "broken.png" in text and "empty.jpg" in text and "2 unreadable" in text


def test_image_extensions_any_case(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for name, ext in (("a", "JPG"), ("a", "webp"), ("b", "TIFF"), ("b", "bmp"), ("b", "gif")):
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / name / f"x.{ext}", format={"JPG": "JPEG", "TIFF": "TIFF"}.get(ext, ext.upper()))
    (root / "a" / "notes.txt").write_text("not an image")
    split = resolve_dataset(root, val_split=0.5)
    assert len(split.train) + len(split.val) == 5
