"""Unknown inputs: the scores, the threshold for a stated recall, and `classify --reject-unknown` on held-out classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgecnn.calibration import auroc
from edgecnn.cli import cli
from edgecnn.runtime.decode import OOD_SCORES, OodRule, is_unknown, ood_score, pick_ood_threshold

pytest.importorskip("torch")
pytest.importorskip("onnx")


def test_scores_and_threshold() -> None:
    z = np.array([[5.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    for score in OOD_SCORES:
        s = ood_score(z, score)
        assert s[0] < s[1], f"{score}: a peaked row is less unknown than a flat one"
    assert ood_score(z, "energy")[0] == pytest.approx(-np.log(np.exp(5) + 2))
    scores = np.arange(100.0)
    t = pick_ood_threshold(scores, 0.95)
    assert (scores <= t).mean() >= 0.95 and (scores <= t - 1).mean() < 0.95
    rule = OodRule("max_logit", -1.0, 0.95)
    assert is_unknown(z[1], rule) is True and is_unknown(z[0], rule) is False
    assert OodRule.from_dict(rule.to_dict()) == rule
    with pytest.raises(ValueError):
        OodRule.from_dict({"score": "magic", "threshold": 0, "recall": 0.9})
    assert auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert auroc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5


def _tints(root: Path, n: int, seed: int, classes=("red", "green", "blue"), tint: bool = True) -> None:
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 120, (32, 32, 3)) + rng.integers(0, 40, 3)
            if tint:
                img[..., c] += int(rng.integers(60, 120))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported tinycnn trained on three tints; training calibrated it and stored the unknown-input rule."""
    from edgecnn.export import export_onnx
    from edgecnn.train import TrainConfig, train

    data = tmp_path_factory.mktemp("ood_data")
    _tints(data / "train", 60, seed=0)
    _tints(data / "val", 40, seed=1)
    run = tmp_path_factory.mktemp("ood_run") / "run"
    train(data, run, TrainConfig(arch="tinycnn", img_size=32, epochs=3, batch_size=16, lr=5e-3, device="cpu"), progress=False)
    return export_onnx(run / "best.pt", run / "model.onnx").path


def test_rejection_flags_held_out_classes(model: Path, tmp_path: Path) -> None:
    from edgecnn.runtime import Classifier

    known, unknown = tmp_path / "known", tmp_path / "unknown"
    _tints(known, 40, seed=5)
    _tints(unknown, 60, seed=6, classes=("plain",), tint=False)  # a class the model never saw: no tint at all
    clf = Classifier(model, device="cpu")
    assert clf.ood_rule is not None and clf.ood_rule.recall == 0.95
    known_files = sorted(known.rglob("*.png"))
    unknown_files = sorted(unknown.rglob("*.png"))
    in_rate = np.mean([p.unknown for p in clf.classify(known_files, reject_unknown=True)])
    out_rate = np.mean([p.unknown for p in clf.classify(unknown_files, reject_unknown=True)])
    assert out_rate > in_rate + 0.3, (in_rate, out_rate)
    assert clf.classify(known_files[0]).unknown is None, "not asked, not judged"

    # The same through the CLI: the JSON flag and the table label.
    args = ["classify", "images", str(unknown / "plain"), str(known / "red"), "-m", str(model), "--reject-unknown", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    flagged = {r["path"] for r in rows if r["unknown"]}
    assert sum("plain" in p for p in flagged) > sum("red" in p for p in flagged)
    table = CliRunner().invoke(cli, ["classify", "images", str(unknown / "plain"), "-m", str(model), "--reject-unknown"])
    assert " unknown " in table.output and "nearest" in table.output
    plain = CliRunner().invoke(cli, ["classify", "images", str(unknown / "plain"), "-m", str(model), "--json"])
    assert '"unknown"' not in plain.output


def test_reject_unknown_needs_a_stored_rule(model: Path, tmp_path: Path) -> None:
    import onnx

    from edgecnn.runtime import Classifier, ModelError
    from edgecnn.runtime.spec import META_OOD

    proto = onnx.load(str(model))
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key != META_OOD]
    del proto.metadata_props[:]
    for k, v in keep:
        proto.metadata_props.add(key=k, value=v)
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(img)
    with pytest.raises(ModelError, match="edgecnn calibrate"):
        Classifier(bare, device="cpu").classify(img, reject_unknown=True)
    result = CliRunner().invoke(cli, ["classify", "images", str(img), "-m", str(bare), "--reject-unknown"])
    assert result.exit_code == 1 and "edgecnn calibrate" in result.output
