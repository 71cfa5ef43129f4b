"""Training at scale: the memory-mapped image cache, crops on the device, and runs that survive a lost process."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgecnn import cache as C
from edgecnn.augment import FITTED, FLIP, batch_inputs, collate_boxes, crop_resize_batch, sample_boxes
from edgecnn.data import EvalSet, TrainSet, resolve_dataset
from edgecnn.runtime.preprocess import resize_and_crop
from edgecnn.runtime.spec import PreprocessSpec


def _random_images(root: Path, shapes: list[tuple[int, int]], *, seed: int = 0, smooth: int = 4) -> Path:
    """Two classes of random images of the given (height, width); ``smooth`` > 1 enlarges coarse noise."""
    rng = np.random.default_rng(seed)
    for k, (h, w) in enumerate(shapes):
        folder = root / ("a" if k % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (h // smooth + 1, w // smooth + 1, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR).save(folder / f"{k:05d}.png")
    return root


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Squares, wide and tall images, and some smaller than the crop, so every path of the crop is taken."""
    shapes = [(64, 64), (40, 130), (120, 50), (20, 30), (48, 48), (33, 70)] * 6
    return _random_images(tmp_path_factory.mktemp("mixed"), shapes)


def _old_crop(pixels: np.ndarray, spec: PreprocessSpec, seed: int, epoch: int, i: int, scale: tuple[float, float],
              hflip: bool) -> np.ndarray:
    """TrainSet.__getitem__ as it was before the cache and augment.sample_boxes: the golden reference."""
    rng = np.random.default_rng([seed, epoch, i])
    image = Image.fromarray(pixels)
    w, h = image.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = round(np.sqrt(target * ratio)), round(np.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            image = image.resize((spec.size, spec.size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
            break
    else:
        image = resize_and_crop(image, spec)
    if hflip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image, dtype=np.uint8)


# ------------------------------------------------------------------------------------------ the cache
def test_cached_sets_give_the_same_pixels_as_in_memory(mixed_dir: Path, tmp_path: Path) -> None:
    samples = resolve_dataset(mixed_dir, val_split=0.25).train
    spec = PreprocessSpec(size=32, labels=("a", "b"), crop_pct=0.875)
    memory = TrainSet(samples, spec, seed=3, scale=(0.9, 1.0), hflip=True, threads=1)
    cached = TrainSet(samples, spec, seed=3, scale=(0.9, 1.0), hflip=True, threads=1, cache_dir=tmp_path)
    assert isinstance(cached.images, C.CachedImages) and isinstance(memory.images, list)
    unfitted = 0
    for epoch in range(3):
        memory.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(memory)):
            a, b = memory[i], cached[i]
            assert a[1] == b[1]
            np.testing.assert_array_equal(a[0], b[0])
            # ...and both are exactly what training did before the cache existed.
            np.testing.assert_array_equal(b[0], _old_crop(memory.images[i], spec, 3, epoch, i, (0.9, 1.0), True))
            unfitted += not cached.box(i)[FITTED]
    assert unfitted > 0  # the fallback to the evaluation view was exercised too
    ev_memory = EvalSet(samples, spec, threads=1)
    ev_cached = EvalSet(samples, spec, threads=1, cache_dir=tmp_path)
    np.testing.assert_array_equal(np.stack(ev_memory.images), np.stack(ev_cached.images))
    assert list(ev_memory.targets) == list(ev_cached.targets)


def test_cache_is_reused_and_rebuilt_when_files_change(mixed_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    samples = resolve_dataset(mixed_dir, val_split=0.25).train[:8]
    spec = PreprocessSpec(size=32, labels=("a", "b"))
    first = TrainSet(samples, spec, cache_dir=tmp_path).images.folder
    built = {"n": 0}
    real_build = C._build

    def counting_build(*args, **kwargs):
        built["n"] += 1
        return real_build(*args, **kwargs)

    monkeypatch.setattr(C, "_build", counting_build)
    assert TrainSet(samples, spec, cache_dir=tmp_path).images.folder == first
    assert built["n"] == 0  # opened, not decoded again
    assert TrainSet(samples, PreprocessSpec(size=40, labels=("a", "b")), cache_dir=tmp_path).images.folder != first
    assert built["n"] == 1  # another size is another entry
    st = samples[0][0].stat()
    os.utime(samples[0][0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file was touched (edited)
    changed = TrainSet(samples, spec, cache_dir=tmp_path).images.folder
    assert changed != first and built["n"] == 2
    assert TrainSet(samples[1:], spec, cache_dir=tmp_path).images.folder not in (first, changed)  # one removed
    assert not list(tmp_path.glob(".*.tmp")), "temporary build folders left behind"


def test_unreadable_images_are_remembered_by_the_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _random_images(tmp_path / "d", [(16, 16)] * 4)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    samples = resolve_dataset(root, val_split=0.5).train + resolve_dataset(root, val_split=0.5).val
    spec = PreprocessSpec(size=8, labels=("a", "b"))
    for _ in range(2):  # built, then opened: the warning comes both times
        caplog.clear()
        ds = EvalSet(samples, spec, cache_dir=tmp_path / "cache")
        assert len(ds) == len(samples) - 1 and ds.images.shape == (len(samples) - 1, 8, 8, 3)
        assert "broken.png" in caplog.text and "1 unreadable" in caplog.text


def test_waiting_process_opens_what_the_builder_built(mixed_dir: Path, tmp_path: Path) -> None:
    samples = resolve_dataset(mixed_dir, val_split=0.25).val
    spec = PreprocessSpec(size=16, labels=("a", "b"))
    got: dict[str, EvalSet] = {}
    waiter = threading.Thread(target=lambda: got.setdefault("ds", EvalSet(samples, spec, cache_dir=tmp_path, build=False)))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive(), "a non-builder must wait for the entry, not decode it itself"
    built = EvalSet(samples, spec, cache_dir=tmp_path)
    waiter.join(10)
    assert not waiter.is_alive()
    np.testing.assert_array_equal(np.asarray(got["ds"].images), np.asarray(built.images))


def test_cached_images_pickle_without_their_pixels(mixed_dir: Path, tmp_path: Path) -> None:
    """DataLoader workers started by spawn/forkserver receive the folder and map it, not a copy of the data."""
    samples = resolve_dataset(mixed_dir, val_split=0.25).train
    images = TrainSet(samples, PreprocessSpec(size=32, labels=("a", "b")), cache_dir=tmp_path).images
    blob = pickle.dumps(images)
    assert len(blob) < 2000 < images.pixels.nbytes
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again[5], images[5])


def test_cached_set_does_not_grow_private_memory(tmp_path: Path) -> None:
    """Reading every image of a cached set leaves private memory flat; the in-memory set (the control) grows."""

    def rss_anon_kb() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
        pytest.skip("no RssAnon in /proc/self/status")

    root = _random_images(tmp_path / "d", [(64, 64)] * 1000, smooth=1)
    samples = resolve_dataset(root, val_split=0.1).train  # 900 images x 12 KB = 11 MB decoded
    spec = PreprocessSpec(size=64, labels=("a", "b"))
    TrainSet(samples, spec, cache_dir=tmp_path / "cache")  # built here; measured below when opened
    growth = {}
    for name, cache_dir in (("cached", tmp_path / "cache"), ("memory", None)):
        before = rss_anon_kb()
        ds = TrainSet(samples, spec, cache_dir=cache_dir, threads=1)
        checksum = sum(int(ds.images[i][0, 0, 0]) for i in range(len(ds)))
        growth[name] = rss_anon_kb() - before
        assert checksum >= 0
        del ds
    assert growth["memory"] > 6000, growth  # the control: the measurement can see the images
    assert growth["cached"] < 1500, growth


def test_unwritable_cache_dir_is_a_clear_error(mixed_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    samples = resolve_dataset(mixed_dir, val_split=0.25).val
    with pytest.raises(C.CacheError, match="--cache-dir"):
        EvalSet(samples, PreprocessSpec(size=16, labels=("a", "b")), cache_dir=blocker / "cache")


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EDGECNN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.default_cache_dir() == tmp_path / "xdg" / "edgecnn" / "datasets"
    monkeypatch.setenv("EDGECNN_CACHE_DIR", str(tmp_path / "mine"))
    assert C.default_cache_dir() == tmp_path / "mine"


# ------------------------------------------------------------------------------------ crops on the device
def test_both_paths_draw_the_same_boxes(mixed_dir: Path) -> None:
    samples = resolve_dataset(mixed_dir, val_split=0.25).train
    spec = PreprocessSpec(size=32, labels=("a", "b"))
    cpu = TrainSet(samples, spec, seed=5, scale=(0.5, 1.0), hflip=True)
    dev = TrainSet(samples, spec, seed=5, scale=(0.5, 1.0), hflip=True, device_augment=True)
    for epoch in (0, 7):
        cpu.set_epoch(epoch)
        dev.set_epoch(epoch)
        sizes = [cpu.images[i].shape[:2] for i in range(len(cpu))]
        boxes = sample_boxes(5, epoch, range(len(cpu)), sizes, scale=(0.5, 1.0), hflip=True, eval_crop=(32, 32))
        reversed_order = sample_boxes(5, epoch, range(len(cpu))[::-1], sizes[::-1], scale=(0.5, 1.0), hflip=True,
                                      eval_crop=(32, 32))
        np.testing.assert_array_equal(boxes, reversed_order[::-1])  # a box depends on (seed, epoch, index) only
        for i in range(len(dev)):
            pixels, target, box = dev[i]
            np.testing.assert_array_equal(box, boxes[i])
            np.testing.assert_array_equal(pixels, cpu.images[i])  # the device path ships the whole image
            assert target == cpu[i][1]
    assert 0 < boxes[:, FLIP].mean() < 1
    other = sample_boxes(6, 7, range(len(cpu)), sizes, scale=(0.5, 1.0), hflip=True, eval_crop=(32, 32))
    assert not np.array_equal(boxes, other)


@pytest.mark.parametrize("crop_pct, scale, max_mean", [(1.0, (0.35, 1.0), 0.6), (0.5, (0.9, 1.0), 2.5)])
def test_device_crop_matches_pillow(mixed_dir: Path, crop_pct: float, scale: tuple[float, float], max_mean: float) -> None:
    """The batched roi_align crop (here on CPU tensors) against Pillow's, image by image, flips and fallbacks
    included; crop_pct 1.0 mostly enlarges (the same bilinear filter), 0.5 shrinks (antialiasing differs)."""
    samples = resolve_dataset(mixed_dir, val_split=0.25).train
    spec = PreprocessSpec(size=32, labels=("a", "b"), crop_pct=crop_pct)
    cpu = TrainSet(samples, spec, seed=1, scale=scale, hflip=True)
    dev = TrainSet(samples, spec, seed=1, scale=scale, hflip=True, device_augment=True)
    reference = np.stack([cpu[i][0] for i in range(len(cpu))]).astype(np.float32)
    canvas, targets, boxes = collate_boxes([dev[i] for i in range(len(dev))])
    assert canvas.dtype == torch.uint8 and canvas.shape[1:] == (max(a.shape[0] for a in cpu.images),
                                                                max(a.shape[1] for a in cpu.images), 3)
    out = crop_resize_batch(canvas, boxes[:, :4], 32, boxes[:, FLIP] > 0)
    assert out.shape == (len(dev), 3, 32, 32) and out.dtype == torch.float32
    error = np.abs(out.permute(0, 2, 3, 1).numpy() - reference)
    assert error.mean() < max_mean, error.mean()
    shifted = boxes.clone()
    shifted[:, [0, 2]] += 2  # the control: a crop two pixels off is far worse
    wrong = crop_resize_batch(canvas, shifted[:, :4], 32, boxes[:, FLIP] > 0)
    assert np.abs(wrong.permute(0, 2, 3, 1).numpy() - reference).mean() > 3 * max_mean


def test_batch_inputs_normalizes_both_paths_alike(mixed_dir: Path) -> None:
    samples = resolve_dataset(mixed_dir, val_split=0.25).train[:12]
    spec = PreprocessSpec(size=32, labels=("a", "b"))
    cpu = TrainSet(samples, spec, seed=2, scale=(0.35, 1.0))
    dev = TrainSet(samples, spec, seed=2, scale=(0.35, 1.0), device_augment=True)
    pixels = np.stack([cpu[i][0] for i in range(12)])
    targets = np.asarray([cpu[i][1] for i in range(12)])
    x_cpu, y_cpu = batch_inputs((pixels, targets), spec, torch.device("cpu"))
    x_dev, y_dev = batch_inputs(collate_boxes([dev[i] for i in range(12)]), spec, torch.device("cpu"))
    assert x_cpu.shape == x_dev.shape == (12, 3, 32, 32)
    assert torch.equal(y_cpu, y_dev)
    assert (x_cpu - x_dev).abs().mean() < 0.6 / 255 / min(spec.std)


@pytest.mark.slow
def test_gpu_augment_trains_like_the_cpu_path(shapes_dir: Path, tmp_path: Path) -> None:
    """--gpu-augment on, forced on CPU tensors: the same run within interpolation noise of the Pillow path."""
    from edgecnn.train import TrainConfig, train

    results = {}
    for mode in ("off", "on"):
        config = TrainConfig(arch="tinycnn", img_size=32, epochs=1, batch_size=16, lr=5e-3, device="cpu",
                             gpu_augment=mode, calibrate=False)
        results[mode] = train(shapes_dir, tmp_path / mode, config, progress=False, cache_dir=tmp_path / "cache")
    off, on = results["off"].history, results["on"].history
    for a, b in zip(off, on, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.03)
    assert on[-1]["train_loss"] != off[-1]["train_loss"]  # not the same path twice


def test_loader_workers_do_not_change_the_batches(shapes_dir: Path, tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    from edgecnn.data import collate

    samples = resolve_dataset(shapes_dir).train
    ds = TrainSet(samples, PreprocessSpec(size=32, labels=("a", "b", "c")), seed=4, cache_dir=tmp_path)
    ds.set_epoch(3)
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=16, num_workers=workers, collate_fn=collate, shuffle=False)
        batches[workers] = [b[0] for b in loader]
    for a, b in zip(batches[0], batches[2], strict=True):
        np.testing.assert_array_equal(a, b)


def test_training_report_reads_the_validation_cache(shapes_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The report at the end of a run scores the validation images from training's cache entry: nothing is
    decoded into rank 0's memory again, and the figures are those of the in-memory path."""
    from edgecnn import data
    from edgecnn.report import write_training_report
    from edgecnn.train import TrainConfig, train

    run, cache = tmp_path / "run", tmp_path / "cache"
    config = TrainConfig(arch="tinycnn", img_size=32, epochs=1, batch_size=16, device="cpu", calibrate=False)
    train(shapes_dir, run, config, progress=False, cache_dir=cache)
    entries = sorted(p.name for p in cache.iterdir())
    val_samples = resolve_dataset(shapes_dir).val
    decoded: list[int] = []
    real_decode_all = data.decode_all
    monkeypatch.setattr(data, "decode_all", lambda samples, *a, **k: decoded.append(len(samples)) or real_decode_all(
        samples, *a, **k))
    write_training_report(run, val_samples=val_samples, cache_dir=cache)
    assert decoded == [] and sorted(p.name for p in cache.iterdir()) == entries
    cached_html = (run / "report.html").read_text()
    write_training_report(run, val_samples=val_samples)  # the control: without the cache it decodes them all
    assert decoded == [len(val_samples)]
    assert (run / "report.html").read_text() == cached_html


# -------------------------------------------------------------------------------------- lost processes
ARGS = ["--arch", "tinycnn", "--img-size", "32", "--batch-size", "16", "--device", "cpu", "--epochs", "3",
        "--no-calibrate", "-q"]
TIMING = ("seconds", "train_images_per_s")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGECNN_TEST_KILL_AFTER_EPOCH"}
    return {**env, "EDGECNN_DIST_TIMEOUT": "60", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.slow
def test_lost_process_restarts_and_ends_as_if_left_alone(shapes_dir: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "edgecnn", "train", str(shapes_dir), "--nproc", "2", *ARGS]
    straight = subprocess.run(cmd + ["-o", str(tmp_path / "straight")], env=_env(), capture_output=True, text=True,
                              timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]
    verbose = [a for a in cmd if a != "-q"]  # the progress lines say what happened
    killed = subprocess.run(verbose + ["-o", str(tmp_path / "killed"), "--max-restarts", "1"], capture_output=True,
                            text=True, env=_env(EDGECNN_TEST_KILL_AFTER_EPOCH="1:2"), timeout=300)
    assert killed.returncode == 0, killed.stderr[-3000:]
    assert "--max-restarts=1" in killed.stderr
    assert "exitcode: -9" in killed.stderr, killed.stderr[-3000:]  # rank 1 did die of SIGKILL...
    assert "after epoch 2" in killed.stderr, killed.stderr[-3000:]  # ...and the new group resumed by itself
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert [h["epoch"] for h in b["epochs"]] == [1, 2, 3]
    strip = [[{k: v for k, v in h.items() if k not in TIMING} for h in m["epochs"]] for m in (a, b)]
    assert strip[0] == strip[1]
    assert a["val_accuracy"] == b["val_accuracy"]
    wa = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["state_dict"]
    for key, value in wa.items():
        assert torch.equal(value, wb[key]), key


@pytest.mark.slow
def test_lost_process_without_restarts_fails_fast(shapes_dir: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "edgecnn", "train", str(shapes_dir), "--nproc", "2", "-o", str(tmp_path / "r"), *ARGS]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=_env(EDGECNN_TEST_KILL_AFTER_EPOCH="1:2"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "distributed training failed" in proc.stderr and "--max-restarts N" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr.split("distributed training failed")[-1]
    assert time.monotonic() - t0 < 120
    assert len(json.loads((tmp_path / "r" / "metrics.json").read_text())["epochs"]) == 2  # died where it was told to
