"""`edgecnn data check`: planted duplicates, near duplicates, leakage, unreadable and tiny files, mislabels; a clean set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgecnn.cli import cli
from edgecnn.data import resolve_dataset
from edgecnn.datacheck import check_dataset, near_pairs, split_duplicates, warn_split_duplicates


def _synth(root: Path, seed: int = 0) -> Path:
    from edgecnn.synth import synthesize

    synthesize(root, classes=3, per_class=20, size=32, seed=seed)
    return root


def _tints(root: Path, n: int, seed: int, classes: tuple[str, ...] = ("red", "green", "blue")) -> None:
    """Noise images told apart by a strong tint: a tiny model learns them in seconds."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 120, (32, 32, 3)) + rng.integers(0, 40, 3)
            img[..., c] += int(rng.integers(60, 120))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name / f"{seed}_{i}.png")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _synth(tmp_path_factory.mktemp("planted"))
    t = root / "train"
    shutil.copy(t / "circle" / "circle_00000.png", root / "val" / "circle" / "leak.png")  # exact, across the split
    shutil.copy(t / "square" / "square_00002.png", t / "triangle" / "twin.png")  # exact, across classes
    src = Image.open(t / "triangle" / "triangle_00003.png")
    src.resize((48, 48), Image.Resampling.BICUBIC).save(root / "val" / "triangle" / "near.jpg", quality=80)  # near, leak
    src2 = Image.open(t / "square" / "square_00005.png")
    src2.resize((40, 40), Image.Resampling.BILINEAR).save(t / "square" / "near_copy.jpg", quality=70)  # near, same class
    (t / "circle" / "broken.png").write_bytes(Image.open(t / "circle" / "circle_00001.png").tobytes()[:50])
    (t / "square" / "empty.jpg").write_bytes(b"")
    data = open(t / "circle" / "circle_00002.png", "rb").read()
    (t / "circle" / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(t / "triangle" / "tiny.png")
    return root


def _dups(report, kind: str) -> list[dict]:
    return [d for d in report.duplicates if d["kind"] == kind]


def test_planted_problems_are_all_found(planted: Path) -> None:
    report = check_dataset(planted, input_size=32)
    unreadable = {u["path"] for u in report.unreadable}
    assert unreadable == {"train/circle/broken.png", "train/square/empty.jpg", "train/circle/truncated.png"}
    assert all(u["error"] for u in report.unreadable)

    exact = {frozenset(d["paths"]): d for d in _dups(report, "exact")}
    leak = exact[frozenset({"train/circle/circle_00000.png", "val/circle/leak.png"})]
    assert leak["across_splits"] and not leak["across_classes"]
    twin = exact[frozenset({"train/square/square_00002.png", "train/triangle/twin.png"})]
    assert twin["across_classes"] and not twin["across_splits"]
    assert len(exact) == 2

    near = {frozenset(d["paths"]): d for d in _dups(report, "near")}
    assert near[frozenset({"train/triangle/triangle_00003.png", "val/triangle/near.jpg"})]["across_splits"]
    assert not near[frozenset({"train/square/square_00005.png", "train/square/near_copy.jpg"})]["across_splits"]
    assert len(near) == 2, f"no false near duplicates among the distinct images: {list(near)}"

    assert report.duplicates[0]["across_splits"], "leakage is listed first"
    assert [s["path"] for s in report.small] == ["train/triangle/tiny.png"]
    assert report.problems == 3 + 4 + 1


def test_cli_json_and_exit_codes(planted: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["data", "check", str(planted), "--img-size", "32", "--json"])
    assert result.exit_code == 1, result.output
    obj = json.loads(result.output)
    assert obj["classes"]["circle"] == {"train": 18, "val": 5}  # 16 + broken + truncated; 4 + leak
    assert {"path", "error"} <= set(obj["unreadable"][0])
    assert {"kind", "paths", "across_splits"} <= set(obj["duplicates"][0])
    assert obj["suspects"] == []

    text = CliRunner().invoke(cli, ["data", "check", str(planted), "--img-size", "32"])
    assert text.exit_code == 1 and "LEAKAGE" in text.output and "val/circle/leak.png" in text.output

    clean = _synth(tmp_path / "clean", seed=3)
    ok = CliRunner().invoke(cli, ["data", "check", str(clean), "--img-size", "32", "--json"])
    assert ok.exit_code == 0, ok.output
    obj = json.loads(ok.output)
    assert obj["duplicates"] == [] and obj["unreadable"] == [] and obj["small"] == [] and obj["problems"] == 0

    missing = CliRunner().invoke(cli, ["data", "check", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    one_class = tmp_path / "one" / "only"
    one_class.mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(one_class / "a.png")
    usage = CliRunner().invoke(cli, ["data", "check", str(tmp_path / "one")])
    assert usage.exit_code == 2 and "at least 2" in usage.output


def test_near_pairs_is_exhaustive_within_the_distance() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 400, dtype=np.uint64)
    flips = [np.uint64(sum(1 << int(b) for b in rng.choice(64, k, replace=False))) for k in range(1, 8)]
    hashes = np.concatenate([base, base[:7] ^ np.array(flips, dtype=np.uint64)])
    found = near_pairs(hashes, max_distance=7)
    brute = {(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
             if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 7}
    assert found == brute and {(k, 400 + k) for k in range(7)} <= found


def test_train_warns_about_split_duplicates(planted: Path, caplog: pytest.LogCaptureFixture) -> None:
    split = resolve_dataset(planted)
    groups = split_duplicates(split)
    assert [sorted(p.name for p in g) for g in groups] == [["circle_00000.png", "leak.png"]]
    with caplog.at_level("WARNING"):
        warn_split_duplicates(split)
    assert "leak.png" in caplog.text and "edgecnn data check" in caplog.text


def test_mislabeled_images_rank_first(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A model trained on clean data flags red images planted in the green folder, most suspicious first."""
    from edgecnn.train import TrainConfig, train

    clean = tmp_path_factory.mktemp("tints")
    _tints(clean, 40, seed=0)
    run = tmp_path_factory.mktemp("tint_run")
    train(clean, run, TrainConfig(arch="tinycnn", img_size=32, epochs=3, batch_size=16, lr=5e-3, device="cpu"),
          progress=False)
    dirty = tmp_path_factory.mktemp("dirty")
    _tints(dirty, 30, seed=1)
    planted_red = tmp_path_factory.mktemp("red")
    _tints(planted_red, 4, seed=2, classes=("red",))
    for f in (planted_red / "red").iterdir():
        shutil.copy(f, dirty / "green" / f"planted_{f.name}")
    report = check_dataset(dirty, model=run / "best.pt", input_size=32)
    top = [s["path"] for s in report.suspects[:4]]
    assert all("planted_" in p for p in top), report.suspects[:8]
    assert all(s["predicted"] == "red" and s["label"] == "green" and s["prob"] >= 0.5 for s in report.suspects[:4])
    probs = [s["label_prob"] for s in report.suspects]
    assert probs == sorted(probs), "ranked by the probability left for the folder's label, lowest first"
