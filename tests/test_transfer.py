"""Starting weights: --pretrained offline, --weights FILE, --init CKPT, --freeze-backbone, the few-images recipe."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from edgecnn.checkpoint import file_sha256, load_checkpoint
from edgecnn.cli import cli
from edgecnn.models import create_model
from edgecnn.transfer import (
    TransferError,
    class_weights,
    hub_checkpoint_path,
    imbalance_message,
    is_classifier,
    load_start,
    plan_epochs,
)

ARCH = "mobilenet_v3_small"  # the cheapest torchvision entry: 32 px trains in a second


def _torchvision_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A 1000-class torchvision state_dict, as the ImageNet download would hold, with random weights."""
    import torchvision.models

    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():  # BatchNorm statistics unlike the fresh defaults, so that loading them is visible
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.state_dict()


def _backbone(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not is_classifier(k, arch)}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, differ[:5]


@pytest.fixture(scope="module")
def tv_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v3_small.pth"
    torch.save(_torchvision_state(ARCH), path)
    return path


def _train_cli(*args: str) -> object:
    return CliRunner().invoke(cli, ["train", *args, "-q", "--cache-dir", "none", "--no-calibrate"])


def test_pretrained_offline_is_one_line_error_naming_weights(tmp_path: Path, shapes_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty hub cache, and a proxy on a closed local port: the download fails at once, with or without internet.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    result = _train_cli(str(shapes_dir), "-o", str(tmp_path / "run"), "--arch", ARCH, "--pretrained", "--img-size", "32")
    assert result.exit_code == 1
    # torch.hub announces the download attempt on a line of its own; the error itself is one line.
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("Downloading: ")]
    assert len(lines) == 1 and lines[0].startswith("Error: --pretrained"), result.output
    assert "--weights FILE" in lines[0] and "mobilenet_v3_small-047dcff4.pth" in lines[0]
    assert "Traceback" not in result.output and not (tmp_path / "run" / "last.pt").exists()


def test_pretrained_reads_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the file where torch.hub keeps it, --pretrained needs no network; the record names the enum."""
    import torchvision.models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    url = torchvision.models.get_weight("MobileNet_V3_Small_Weights.IMAGENET1K_V1").url
    cached = hub_checkpoint_path(url)
    cached.parent.mkdir(parents=True)
    state = _torchvision_state(ARCH, seed=1)
    torch.save(state, cached)
    model = create_model(ARCH, num_classes=3)
    start = load_start(model, ARCH, ("a", "b", "c"), pretrained=True)
    assert start.kind == "pretrained" and start.weights == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
    assert start.sha256 == file_sha256(cached) and start.new_head
    _assert_same(_backbone(model.state_dict(), ARCH), _backbone(state, ARCH))


def test_pretrained_needs_an_architecture_with_weights() -> None:
    with pytest.raises(TransferError, match="resnet8 has no pretrained weights; --pretrained works for"):
        load_start(create_model("resnet8", num_classes=2), "resnet8", ("a", "b"), pretrained=True)


def test_weights_file_loads_and_trains(tmp_path: Path, shapes_dir: Path, tv_weights: Path) -> None:
    model = create_model(ARCH, num_classes=3)
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if is_classifier(k, ARCH)}
    start = load_start(model, ARCH, ("a", "b", "c"), weights=tv_weights)
    state = torch.load(tv_weights, weights_only=True)
    _assert_same(_backbone(model.state_dict(), ARCH), _backbone(state, ARCH))
    assert model.classifier[3].out_features == 3  # the classifier is replaced for the dataset's classes
    _assert_same({k: v for k, v in model.state_dict().items() if is_classifier(k, ARCH)}, fresh_head)
    assert start.kind == "weights" and start.sha256 == file_sha256(tv_weights)

    run = tmp_path / "run"
    result = _train_cli(str(shapes_dir), "-o", str(run), "--arch", ARCH, "--weights", str(tv_weights),
                        "--img-size", "32", "--epochs", "2", "--batch-size", "16")
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt.init["kind"] == "weights" and ckpt.init["sha256"] == file_sha256(tv_weights)
    assert ckpt.spec.crop_pct == 0.875 and ckpt.spec.size == 32  # the architecture's data config travels
    trained = ckpt.data["state_dict"]
    assert any(not torch.equal(trained[k], state[k]) for k in _backbone(state, ARCH))  # the warm-up ended: it trained


def test_mismatched_or_foreign_files_are_refused(tmp_path: Path, shapes_dir: Path) -> None:
    other = tmp_path / "resnet18.pth"
    torch.save(_torchvision_state("resnet18"), other)
    with pytest.raises(TransferError) as info:
        load_start(create_model(ARCH, num_classes=3), ARCH, ("a", "b", "c"), weights=other)
    message = str(info.value)
    assert "does not fit mobilenet_v3_small" in message and "missing" in message and "unexpected" in message
    assert "\n" not in message

    narrow = tmp_path / "narrow.pth"  # the right names, the wrong shapes: another width of the same family
    state = _torchvision_state(ARCH)
    state["features.0.0.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, narrow)
    with pytest.raises(TransferError, match=r"1 of other shape .*features\.0\.0\.weight \(8, 3, 3, 3\) vs \(16, 3, 3, 3\)"):
        load_start(create_model(ARCH, num_classes=3), ARCH, ("a", "b", "c"), weights=narrow)

    text = tmp_path / "notes.pth"
    text.write_text("not weights at all\n")
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listing)
    for bad, expected in ((text, "not a state_dict file"), (listing, "not a state_dict (found list)")):
        result = _train_cli(str(shapes_dir), "-o", str(tmp_path / "r"), "--arch", ARCH, "--weights", str(bad),
                            "--img-size", "32")
        assert result.exit_code == 1 and expected in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_init_with_other_labels_keeps_backbone_and_replaces_head(checkpoint: Path) -> None:
    parent = load_checkpoint(checkpoint)
    labels = ("p", "q", "r", "s")  # not the parent's classes
    torch.manual_seed(123)
    model = create_model(parent.arch, num_classes=len(labels))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    start = load_start(model, parent.arch, labels, init=checkpoint)
    assert start.kind == "checkpoint" and start.new_head
    assert start.parent == {"path": str(checkpoint), "sha256": file_sha256(checkpoint)}
    _assert_same(_backbone(model.state_dict(), parent.arch), _backbone(parent.data["state_dict"], parent.arch))
    head = {k: v for k, v in model.state_dict().items() if is_classifier(k, parent.arch)}
    assert head and head["head.fc.weight"].shape[0] == 4
    _assert_same(head, {k: fresh[k] for k in head})

    same = create_model(parent.arch, num_classes=parent.spec.num_classes)
    start = load_start(same, parent.arch, parent.spec.labels, init=checkpoint)
    assert not start.new_head
    _assert_same(same.state_dict(), parent.data["state_dict"])  # same labels: the whole model continues


def test_init_of_another_architecture_is_refused(checkpoint: Path) -> None:
    with pytest.raises(TransferError, match="is a tinycnn checkpoint, but this run trains resnet8; pass --arch tinycnn"):
        load_start(create_model("resnet8", num_classes=2), "resnet8", ("a", "b"), init=checkpoint)


def test_freeze_backbone_leaves_backbone_unchanged(tmp_path: Path, checkpoint: Path) -> None:
    from edgecnn.synth import synthesize

    data = tmp_path / "other"
    synthesize(data, classes=4, per_class=10, size=32, seed=5)
    run = tmp_path / "probe"
    result = _train_cli(str(data), "-o", str(run), "--init", str(checkpoint), "--freeze-backbone", "--epochs", "3",
                        "--batch-size", "8")
    assert result.exit_code == 0, result.output
    parent, child = load_checkpoint(checkpoint), load_checkpoint(run / "last.pt")
    assert child.arch == parent.arch and child.spec.size == parent.spec.size  # taken from the parent
    assert child.init["kind"] == "checkpoint" and child.init["parent"]["sha256"] == file_sha256(checkpoint)
    # Weights and BatchNorm running statistics alike: a frozen backbone that drifts is not frozen.
    _assert_same(_backbone(child.data["state_dict"], child.arch), _backbone(parent.data["state_dict"], parent.arch))
    assert not torch.equal(child.data["state_dict"]["head.fc.bias"][:3], parent.data["state_dict"]["head.fc.bias"])


def test_freeze_backbone_needs_starting_weights() -> None:
    from edgecnn.train import TrainConfig

    with pytest.raises(ValueError, match="--freeze-backbone .* needs starting weights"):
        TrainConfig(arch="tinycnn", freeze_backbone=True)
    with pytest.raises(ValueError, match="alternatives"):
        TrainConfig(arch="tinycnn", pretrained=True, init="x.pt")


def test_small_dataset_gets_min_steps() -> None:
    assert plan_epochs(None, steps_per_epoch=1, min_steps=300, default=30) == 300
    assert plan_epochs(None, steps_per_epoch=7, min_steps=300, default=30) == 43
    assert plan_epochs(None, steps_per_epoch=50, min_steps=300, default=30) == 30
    assert plan_epochs(5, steps_per_epoch=1, min_steps=300, default=30) == 5  # --epochs given: as given


def test_min_steps_in_a_run(tmp_path: Path) -> None:
    from edgecnn.synth import synthesize
    from edgecnn.train import TrainConfig, train

    data = tmp_path / "few"
    synthesize(data, classes=2, per_class=5, size=32, seed=0)  # 8 training images: one step per epoch
    result = train(data, tmp_path / "run", TrainConfig(arch="tinycnn", min_steps=40, device="cpu", calibrate=False),
                   progress=False, cache_dir=None)
    assert result.epochs_run == 40
    assert load_checkpoint(tmp_path / "run" / "last.pt").data["train_config"]["epochs"] == 40


def test_imbalance_warning_and_balance(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert imbalance_message(("a", "b"), (10, 4)) is None  # 2.5x
    message = imbalance_message(("a", "b", "c"), (30, 10, 12))
    assert message and "'a' has 30 training images, 'b' 10 (3.0x)" in message and "--balance" in message
    weights = class_weights([30, 10, 20])
    assert weights == pytest.approx([60 / 90, 2.0, 1.0])
    assert sum(w * c for w, c in zip(weights, [30, 10, 20], strict=True)) == pytest.approx(60)  # mean 1 per image

    import shutil

    from edgecnn.synth import synthesize
    from edgecnn.train import TrainConfig, train

    data = tmp_path / "skewed"
    synthesize(data, classes=2, per_class=20, size=32, seed=0)
    for extra in sorted((data / "train" / "square").iterdir())[4:]:  # 16 circles, 4 squares
        extra.unlink()
    caplog.set_level(logging.WARNING)
    train(data, tmp_path / "run", TrainConfig(arch="tinycnn", epochs=1, device="cpu", calibrate=False),
          progress=False, cache_dir=None)
    assert any("class imbalance: 'circle' has 16" in r.getMessage() for r in caplog.records)
    caplog.clear()
    shutil.rmtree(tmp_path / "run")
    train(data, tmp_path / "run", TrainConfig(arch="tinycnn", epochs=1, device="cpu", calibrate=False, balance=True),
          progress=False, cache_dir=None)
    assert not any("class imbalance" in r.getMessage() for r in caplog.records)
