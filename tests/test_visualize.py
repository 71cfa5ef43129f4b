"""`edgecnn visualize` and the training report: every picture rendered for the tiny trained model and checked."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgecnn.cli import cli
from edgecnn.plot import BAD
from edgecnn.visualize import (
    Picture,
    VisualizeError,
    load_view,
    render_features,
    render_kernels,
    render_softmax,
    softmax_view,
    visualize,
)


def _image(shapes_dir: Path) -> Path:
    return sorted((shapes_dir / "val" / "circle").iterdir())[0]


def _html_refs(page: Path) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page.read_text())


def _check_tiles(picture: Picture, png: Path | None = None) -> None:
    """No tile is blank: each shows at least two colours; a flat one is hatched and labelled in red."""
    image = Image.open(png).convert("RGB") if png else picture.image
    assert picture.tiles, "a picture of tiles without tiles"
    red = tuple(int(BAD[i : i + 2], 16) for i in (1, 3, 5))
    for tile in picture.tiles:
        crop = np.asarray(image.crop(tile.box)).reshape(-1, 3)
        assert crop.shape[0] >= 16, f"tile {tile.label} is too small to see: {tile.box}"
        assert len(np.unique(crop, axis=0)) >= 2, f"tile {tile.label} at {tile.box} is uniform"
        if tile.flat:
            assert (np.abs(crop.astype(int) - red).sum(1) < 60).any(), f"flat tile {tile.label} carries no label"


@pytest.fixture(scope="module")
def view(checkpoint: Path):
    return load_view(checkpoint)


def test_kernels_picture(view, tmp_path: Path) -> None:
    picture = render_kernels(view)
    assert view.first_kernels.shape == (16, 3, 3, 3)
    assert len(view.deep_kernels) == 2  # tinycnn: three convolutions
    assert len(picture.tiles) == 16 + 2
    first = picture.tiles[:16]
    assert all(t.box[2] - t.box[0] >= 30 for t in first), "3x3 kernels must be upscaled to be visible"
    assert picture.image.width >= 400 and picture.image.height >= 200
    png = picture.save(tmp_path / "kernels.png")
    _check_tiles(picture, png)


def test_feature_maps_every_depth(view, shapes_dir: Path, tmp_path: Path) -> None:
    from edgecnn.runtime import preprocess

    pixels = preprocess(_image(shapes_dir), view.spec)
    acts, probs = view.run(pixels)
    assert [a.name for a in acts] == ["stage1", "stage2", "stage3"]
    assert [a.maps.shape for a in acts] == [(16, 16, 16), (32, 8, 8), (64, 4, 4)]  # 32x32 input, stride 2 each
    assert probs.shape == (3,) and abs(float(probs.sum()) - 1) < 1e-5
    for name, caption, maps, _ in acts:
        picture = render_features(name, caption, maps, pixels=pixels)
        assert len(picture.tiles) == maps.shape[0]
        assert all(t.box[2] - t.box[0] >= 48 for t in picture.tiles), "feature tiles too small to read"
        _check_tiles(picture, picture.save(tmp_path / f"{name}.png"))


def test_dead_channel_is_labelled_not_blank() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((4, 6, 6)).astype(np.float32)
    maps[2] = 0.0  # a ReLU that never fired
    picture = render_features("stage1", "test", maps)
    assert [t.flat for t in picture.tiles] == [False, False, True, False]
    _check_tiles(picture)
    # More channels than the picture holds: the most active are kept, in channel order.
    wide = rng.random((80, 4, 4)).astype(np.float32)
    wide[:10] *= 10
    picture = render_features("stage9", "test", wide, max_channels=16)
    labels = [t.label for t in picture.tiles]
    assert len(labels) == 16 and all(f"c{i}" in labels for i in range(10))


def test_softmax_bars_sum_to_one_and_verdicts_differ() -> None:
    labels = ("circle", "square", "triangle")
    sure, sure_view = render_softmax(np.array([0.02, 0.95, 0.03]), labels)
    coin, coin_view = render_softmax(np.array([0.40, 0.38, 0.22]), labels)
    for v in (sure_view, coin_view):
        assert abs(sum(v.probs) - 1) < 1e-9 and list(v.probs) == sorted(v.probs, reverse=True)
    assert (sure_view.winner, sure_view.runner_up, sure_view.verdict) == ("square", "triangle", "confident")
    assert sure_view.margin == pytest.approx(0.92)
    assert (coin_view.winner, coin_view.verdict) == ("circle", "ambiguous") and coin_view.margin == pytest.approx(0.02)
    # The verdict band is coloured: green for a clear answer, red for a coin toss.
    band = lambda p: p.image.getpixel((5, 5))  # noqa: E731
    assert band(sure)[1] > band(sure)[0] and band(coin)[0] > band(coin)[1]
    # Many classes: the ten most probable, then the rest summed, still one in total.
    probs = np.random.default_rng(1).dirichlet(np.ones(15))
    many = softmax_view(probs, [f"class{i}" for i in range(15)])
    assert len(many.probs) == 11 and many.labels[-1] == "5 others" and abs(sum(many.probs) - 1) < 1e-9
    with pytest.raises(VisualizeError, match="sum to one"):
        softmax_view(np.array([2.0, -1.0]), ("a", "b"))


def test_visualize_writes_pictures_and_an_offline_index(checkpoint: Path, shapes_dir: Path, tmp_path: Path, view) -> None:
    out = tmp_path / "viz"
    written = visualize(checkpoint, out, image=_image(shapes_dir)).files
    names = [p.name for p in written]
    assert names == ["kernels.png", "features_stage1.png", "features_stage2.png", "features_stage3.png",
                     "softmax.png", "index.html"]
    for path in written[:-1]:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width >= 300 and im.height >= 100
            assert len(np.unique(np.asarray(im.convert("L")))) > 8, f"{path.name} looks empty"
    # kernels.png is exactly the picture whose tiles test_kernels_picture checked.
    assert np.array_equal(np.asarray(Image.open(out / "kernels.png").convert("RGB")), np.asarray(render_kernels(view).image))
    refs = _html_refs(out / "index.html")
    assert sorted(refs) == sorted(names[:-1]), "index.html shows every picture and nothing else"
    assert all(not r.startswith(("/", "http")) and (out / r).is_file() for r in refs)
    # Without an image: kernels only.
    assert [p.name for p in visualize(checkpoint, tmp_path / "k").files] == ["kernels.png", "index.html"]


@pytest.fixture(scope="module")
def tiny_onnx(checkpoint: Path, shapes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.onnx, model.int8.onnx and model.fp16.onnx of the tiny trained model, side by side as quantize writes them."""
    from edgecnn.export.onnx_export import export_onnx
    from edgecnn.export.quantize import quantize

    folder = tmp_path_factory.mktemp("tiny-onnx")
    export_onnx(checkpoint, folder / "model.onnx")
    quantize(folder / "model.onnx", shapes_dir / "train", folder / "model.int8.onnx", force=True)
    quantize(folder / "model.onnx", shapes_dir / "train", folder / "model.fp16.onnx", fp16=True, force=True)
    return folder


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_onnx_model_shows_the_same_network(tiny_onnx: Path, shapes_dir: Path, tmp_path: Path, view) -> None:
    from edgecnn.runtime import preprocess

    model = tiny_onnx / "model.onnx"
    onnx_view = load_view(model)
    # Export folds BatchNorm (the .pt view folds it too) and 1/(255*std) into the first conv (undone for display).
    assert "undone" in onnx_view.kernel_note
    np.testing.assert_allclose(onnx_view.first_kernels, view.first_kernels, atol=1e-5)
    for (_, a, _), (_, b, _) in zip(view.deep_kernels, onnx_view.deep_kernels, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    pixels = preprocess(_image(shapes_dir), view.spec)
    (pt_acts, pt_probs), (ox_acts, ox_probs) = view.run(pixels), onnx_view.run(pixels)
    np.testing.assert_allclose(ox_probs, pt_probs, atol=1e-5)
    for a, b in zip(pt_acts, ox_acts, strict=True):  # the stages' outputs, same names, same values
        assert a.name == b.name
        np.testing.assert_allclose(b.maps, a.maps, atol=1e-4)
    written = visualize(model, tmp_path / "viz", image=_image(shapes_dir)).files
    assert [p.name for p in written] == ["kernels.png", "features_stage1.png", "features_stage2.png",
                                         "features_stage3.png", "softmax.png", "index.html"]
    assert all((tmp_path / "viz" / r).is_file() for r in _html_refs(written[-1]))

    # A static INT8 (QDQ) model: its weights are shown as the graph dequantizes them.
    q_view = load_view(tiny_onnx / "model.int8.onnx")
    assert q_view.precision == "int8"
    scale = np.abs(view.first_kernels).max()
    assert 0 < np.abs(q_view.first_kernels - view.first_kernels).max() < 0.05 * scale
    # Every stage is shown as the int8 values the next layer reads (after the Q/DQ pair that absorbed the ReLU).
    q_acts, _ = q_view.run(pixels)
    assert all("quantized" in a.caption and a.tensor.endswith("DequantizeLinear_Output") for a in q_acts), q_acts
    assert all(a.maps.min() >= 0 for a in q_acts)

    # An FP16 model: float16 weights and activations (the extra outputs must be declared float16).
    h_view = load_view(tiny_onnx / "model.fp16.onnx")
    np.testing.assert_allclose(h_view.first_kernels, view.first_kernels, atol=2e-3 * scale)
    h_acts, h_probs = h_view.run(pixels)
    np.testing.assert_allclose(h_probs, pt_probs, atol=2e-3)
    np.testing.assert_allclose(h_acts[-1].maps, pt_acts[-1].maps, atol=2e-2 * float(np.abs(pt_acts[-1].maps).max()))


def test_layers_are_named_and_taken_alike_in_every_format(tiny_onnx: Path, shapes_dir: Path, view) -> None:
    from edgecnn.runtime import preprocess

    pixels = preprocess(_image(shapes_dir), view.spec)
    runs = {"pt": view.run(pixels)[0]}
    for kind in ("onnx", "int8.onnx", "fp16.onnx"):
        runs[kind] = load_view(tiny_onnx / f"model.{kind}").run(pixels)[0]
    for kind, acts in runs.items():
        assert [a.name for a in acts] == ["stage1", "stage2", "stage3"], kind
        assert [a.maps.shape for a in acts] == [a.maps.shape for a in runs["pt"]], kind
        # Captions say what the layer is; raw ONNX tensor names stay in .tensor (index.html's table, --json).
        assert all("features[" in a.caption and "Linear" not in a.caption and "relu" not in a.caption for a in acts)
    assert runs["pt"][-1].tensor == "features.2" and runs["onnx"][-1].tensor != runs["int8.onnx"][-1].tensor
    # The same tensors: each INT8 map is the FP32 map of its layer, quantized (and not another layer's).
    for fp32, int8 in zip(runs["onnx"], runs["int8.onnx"], strict=True):
        assert _cosine(fp32.maps, int8.maps) > 0.99, fp32.name
        np.testing.assert_allclose(int8.maps, fp32.maps, atol=0.1 * float(fp32.maps.max()))


def _random_bn_checkpoint(path: Path, arch: str = "resnet8", size: int = 32) -> None:
    """An untrained ``arch`` with BatchNorm statistics drawn at random, so that its maps are not all alike."""
    import torch
    from test_zoo import randomize_batchnorm

    from edgecnn.checkpoint import FORMAT, save_checkpoint
    from edgecnn.models import create_model
    from edgecnn.runtime.spec import PreprocessSpec

    torch.manual_seed(0)
    model = create_model(arch, num_classes=3)
    randomize_batchnorm(model)
    spec = PreprocessSpec(size=size, labels=("circle", "square", "triangle"))
    save_checkpoint(path, {"format": FORMAT, "arch": arch, "model_args": {}, "spec": spec.to_dict(),
                           "state_dict": model.state_dict()})


@pytest.fixture(scope="module")
def resnet_onnx(shapes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A residual network (where a QDQ graph's Add output and its branch's Conv output look alike) in .pt, FP32, INT8."""
    from edgecnn.export.onnx_export import export_onnx
    from edgecnn.export.quantize import quantize

    folder = tmp_path_factory.mktemp("resnet-onnx")
    _random_bn_checkpoint(folder / "best.pt")
    export_onnx(folder / "best.pt", folder / "model.onnx")
    quantize(folder / "model.onnx", shapes_dir / "train", folder / "model.int8.onnx", force=True)
    return folder


def _extra_output(model_path: Path, tensor: str, pixels: np.ndarray) -> np.ndarray:
    """One tensor of an ONNX graph on these pixels (the graph takes uint8 NHWC)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([tensor], {session.get_inputs()[0].name: pixels[None]})[0][0]


def test_int8_stage_is_the_fp32_stage_in_a_residual_network(resnet_onnx: Path, shapes_dir: Path) -> None:
    import onnx

    from edgecnn.runtime import preprocess

    pt, fp32, int8 = (load_view(resnet_onnx / f) for f in ("best.pt", "model.onnx", "model.int8.onnx"))
    pixels = preprocess(_image(shapes_dir), fp32.spec)
    acts = {v.precision + v.source: v.run(pixels)[0] for v in (pt, fp32, int8)}
    names = [[a.name for a in run] for run in acts.values()]
    assert names[0] == names[1] == names[2] == ["stage1", "stage2", "stage3", "stage4"], names
    for a, b in zip(acts["fp32pt"], acts["fp32onnx"], strict=True):
        np.testing.assert_allclose(b.maps, a.maps, atol=1e-4)
    deepest_fp32, deepest_int8 = acts["fp32onnx"][-1], acts["int8onnx"][-1]
    for a, b in zip(acts["fp32onnx"], acts["int8onnx"], strict=True):
        assert _cosine(a.maps, b.maps) > 0.99, a.name
    # Control: the tensor the old rule showed for INT8 (the last Conv's dequantized output, the residual branch
    # before the Add) has the same shape but is another tensor; the cosine tells them apart.
    graph = onnx.load(str(resnet_onnx / "model.int8.onnx")).graph
    producer = {o: n for n in graph.node for o in n.output}
    add = producer[producer[producer[deepest_int8.tensor].input[0]].input[0]]  # DQ <- Q <- Add
    assert (producer[deepest_int8.tensor].op_type, add.op_type) == ("DequantizeLinear", "Add")
    for branch in add.input:  # the last Conv's dequantized output (the old rule's pick) and the shortcut's
        wrong = _extra_output(resnet_onnx / "model.int8.onnx", branch, pixels)
        assert wrong.shape == deepest_int8.maps.shape
        assert _cosine(deepest_fp32.maps, wrong) < 0.9, branch


def test_stage_points_without_weight_names_still_agree(resnet_onnx: Path) -> None:
    """A graph whose weights lost torch's names: each convolution counts as a stage, alike in FP32 and INT8."""
    import onnx

    from edgecnn.visualize.onnx_graph import stage_points

    def renamed(path: Path) -> onnx.GraphProto:
        graph = onnx.load(str(path)).graph
        rename = {t.name: f"w{i}" for i, t in enumerate(graph.initializer) if t.name.startswith("features.")}
        for t in graph.initializer:
            t.name = rename.get(t.name, t.name)
        for n in graph.node:
            n.input[:] = [rename.get(i, i) for i in n.input]
        return graph

    named = stage_points(onnx.load(str(resnet_onnx / "model.onnx")).graph)
    fp32, int8 = (stage_points(renamed(resnet_onnx / f)) for f in ("model.onnx", "model.int8.onnx"))
    assert [p.block for p in named] == ["features.0", "features.1", "features.2", "features.3"]
    assert not any(p.block for p in fp32 + int8)
    assert [p.index for p in fp32] == [p.index for p in int8] and len(fp32) >= len(named)
    assert all(p.quantized for p in int8) and not any(p.quantized for p in fp32)
    # The stage outputs are among them: the last one is the network's last map in both.
    assert fp32[-1].tensor == named[-1].tensor


def test_stage_blocks_from_module_paths_and_weight_names() -> None:
    """One rule names the stages from a .pt's module paths and from the weight names an ONNX graph keeps."""
    from edgecnn.visualize.stages import stage_blocks, stage_caption, weight_module

    resnet = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.downsample.0", "head"]
    assert stage_blocks(resnet, "head") == ["conv1", "layer1", "layer2"]  # the classifier is no stage
    assert stage_blocks(resnet) == ["conv1", "layer1", "layer2", "head"]
    names = ("conv1.weight", "layer2.0.downsample.0.weight", "stage3.1.branch2.0.weight_quantized", "val_12", "onnx::Conv_3")
    assert [weight_module(w) for w in names] == ["conv1", "layer2.0.downsample.0", "stage3.1.branch2.0", None, None]
    # With a features Sequential, its children are the stages and nothing outside it is (as before).
    assert stage_blocks(["stem.0", "features.0.0", "features.0.1", "features.10.block.0", "classifier.1"]) == [
        "features.0", "features.10"]
    assert stage_caption("features.10", 10, 12) == "output of features[10], stage 11 of 12"
    assert stage_caption("layer3", 3, 5) == "output of layer3, stage 4 of 5"


# Per model: its stages' blocks, and the first stage's maps on a 32 px input (resnet18's and ShuffleNet's
# first stage is conv1 with the maxpool after it: 32 -> 16 -> 8).
ZOO_STAGES = {
    "resnet18": (["conv1", "layer1", "layer2", "layer3", "layer4"], (64, 8, 8)),
    "shufflenet_v2_x1_0": (["conv1", "stage2", "stage3", "stage4", "conv5"], (24, 8, 8)),
    # A features model whose first and last stages end in HardSwish, an op of its own in the graph.
    "mobilenet_v3_small": ([f"features[{i}]" for i in range(13)], (16, 16, 16)),
}


@pytest.fixture(scope="module", params=sorted(ZOO_STAGES))
def zoo_onnx(request: pytest.FixtureRequest, shapes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A torchvision model (untrained, random BatchNorm statistics) as best.pt, model.onnx and model.int8.onnx."""
    from edgecnn.export.onnx_export import export_onnx
    from edgecnn.export.quantize import quantize

    arch = request.param
    folder = tmp_path_factory.mktemp(arch)
    _random_bn_checkpoint(folder / "best.pt", arch)
    export_onnx(folder / "best.pt", folder / "model.onnx")
    quantize(folder / "model.onnx", shapes_dir / "train", folder / "model.int8.onnx", force=True)
    return arch, folder


@pytest.mark.slow
def test_every_stage_alike_in_pt_fp32_and_int8(zoo_onnx: tuple[str, Path], shapes_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecnn.runtime import preprocess
    from edgecnn.visualize import views

    monkeypatch.setattr(views, "MAX_DEPTHS", 16)  # every stage, not four spread over them
    arch, folder = zoo_onnx
    blocks, first = ZOO_STAGES[arch]
    pt, fp32, int8 = (load_view(folder / f) for f in ("best.pt", "model.onnx", "model.int8.onnx"))
    pixels = preprocess(_image(shapes_dir), fp32.spec)
    runs = {v.precision + v.source: v.run(pixels)[0] for v in (pt, fp32, int8)}
    for kind, acts in runs.items():
        assert [a.name for a in acts] == [f"stage{i + 1}" for i in range(len(blocks))], kind
        assert [a.caption.split(",")[0] for a in acts] == [f"output of {b}" for b in blocks], kind
        assert [a.maps.shape for a in acts] == [a.maps.shape for a in runs["fp32pt"]], kind
    assert runs["fp32pt"][0].maps.shape == first
    for a, b, c in zip(runs["fp32pt"], runs["fp32onnx"], runs["int8onnx"], strict=True):
        # The tensor the .pt view hooks (after the activation, the maxpool, the channel shuffle), not a neighbour.
        np.testing.assert_allclose(b.maps, a.maps, atol=1e-4 * max(1.0, float(np.abs(a.maps).max())), err_msg=a.name)
        assert _cosine(b.maps, c.maps) > 0.99, (arch, a.name)
        assert "quantized" in c.caption and "quantized" not in b.caption


def test_fp32_vs_int8_picture(tiny_onnx: Path, checkpoint: Path, shapes_dir: Path, tmp_path: Path) -> None:
    int8 = tiny_onnx / "model.int8.onnx"
    out = tmp_path / "viz"
    result = visualize(int8, out, image=_image(shapes_dir))  # model.onnx lies beside it: compared on its own
    assert result.reference == tiny_onnx / "model.onnx"
    names = [p.name for p in result.files]
    assert names == ["kernels.png", "features_stage1.png", "features_stage2.png", "features_stage3.png",
                     "softmax.png", "fp32_vs_int8.png", "index.html"]
    with Image.open(out / "fp32_vs_int8.png") as im:
        im.verify()
    with Image.open(out / "fp32_vs_int8.png") as im:
        assert im.format == "PNG" and im.width >= 400 and im.height >= 600
        assert len(np.unique(np.asarray(im.convert("L")))) > 16
    assert "fp32_vs_int8.png" in _html_refs(result.files[-1])
    page = result.files[-1].read_text()
    assert all(f"<code>{entry['tensor']}</code>" in page for entry in result.layers)  # raw names: in the table
    assert [d.name for d in result.comparison] == [entry["name"] for entry in result.layers]
    assert all(d.cosine > 0.99 and d.relative_error < 0.2 for d in result.comparison), result.comparison
    assert all(d.tensor == entry["tensor"] for d, entry in zip(result.comparison, result.layers, strict=True))

    # The picture's tiles: per layer, 8 channels (or fewer) in three rows: fp32, int8, |diff|.
    from edgecnn.runtime import preprocess
    from edgecnn.visualize import compare_layers, render_comparison

    pixels = preprocess(_image(shapes_dir), load_view(int8).spec)
    (ref, ref_p), (acts, p) = load_view(tiny_onnx / "model.onnx").run(pixels), load_view(int8).run(pixels)
    picture = render_comparison(ref, acts, compare_layers(ref, acts), ref_p, p, ("a", "b", "c"),
                                reference_label="fp32", label="int8", pixels=pixels)
    assert len(picture.tiles) == 3 * 8 * 3
    assert [t.label.split()[0] for t in picture.tiles[:24]] == ["fp32"] * 8 + ["int8"] * 8 + ["|diff|"] * 8

    # Not beside it, or turned off: no comparison; a .pt checkpoint serves as the reference too.
    assert "fp32_vs_int8.png" not in [p.name for p in visualize(int8, tmp_path / "off", image=_image(shapes_dir),
                                                                 auto_compare=False).files]
    with_pt = visualize(int8, tmp_path / "pt", image=_image(shapes_dir), compare=checkpoint)
    assert with_pt.reference == checkpoint and all(d.cosine > 0.99 for d in with_pt.comparison)
    assert with_pt.comparison[-1].reference_tensor == "features.2"


def test_comparison_refuses_another_model(tiny_onnx: Path, resnet_onnx: Path, shapes_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(VisualizeError, match="needs an image"):
        visualize(tiny_onnx / "model.int8.onnx", tmp_path / "a", compare=tiny_onnx / "model.onnx")
    with pytest.raises(VisualizeError, match="not the same network"):
        visualize(tiny_onnx / "model.int8.onnx", tmp_path / "b", image=_image(shapes_dir),
                  compare=resnet_onnx / "model.onnx")


def _copy_run(trained_run: Path, dest: Path) -> Path:
    """The session's run folder is shared; the report is written into a copy of it."""
    dest.mkdir()
    for name in ("best.pt", "metrics.json", "curves.png"):
        shutil.copy(trained_run / name, dest / name)
    return dest


def test_training_report(trained_run: Path, shapes_dir: Path, tmp_path: Path) -> None:
    from edgecnn.evaluate import evaluate
    from edgecnn.report import write_training_report

    run = _copy_run(trained_run, tmp_path / "run")
    page = write_training_report(run, data_dir=shapes_dir, max_examples=4)
    assert page == run / "report.html"
    refs = _html_refs(page)
    assert all(not r.startswith(("/", "http")) and (run / r).is_file() for r in refs), refs
    assert {"curves.png", "report/confusion.png", "report/kernels.png"} <= set(refs)
    report = evaluate(run / "best.pt", shapes_dir)
    wrong = int(report.n - np.trace(report.confusion))
    examples = [r for r in refs if r.startswith("report/example_")]
    assert len(examples) == min(4, wrong if wrong else report.n)
    text = page.read_text()
    assert f"{report.accuracy:.4f}" in text
    assert ("misclassified" in text) == bool(wrong)
    for r in examples:
        with Image.open(run / r) as im:
            assert im.width >= 400
    # The same images given as samples (what training passes) give the same report figures.
    index = {c: i for i, c in enumerate(report.labels)}
    samples = [(Path(p), index[Path(p).parent.name]) for p in report.paths]
    page = write_training_report(run, val_samples=samples, max_examples=2)
    assert f"{report.accuracy:.4f}" in page.read_text()
    assert len([r for r in _html_refs(page) if "example_" in r]) == 2
    assert len(list((run / "report").glob("example_*.png"))) == 2, "stale examples of the earlier report removed"


def test_training_report_without_images_uses_the_stored_confusion(trained_run: Path, tmp_path: Path) -> None:
    from edgecnn.report import write_training_report

    run = _copy_run(trained_run, tmp_path / "run")
    text = write_training_report(run).read_text()
    assert "as stored in best.pt" in text and "example_" not in text
    assert all((run / r).is_file() for r in _html_refs(run / "report.html"))


def test_cli(checkpoint: Path, shapes_dir: Path, trained_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(cli, ["visualize", str(checkpoint), "--image", str(_image(shapes_dir)), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert len(files) == 6 and all(Path(f).is_file() for f in files)

    run = _copy_run(trained_run, tmp_path / "run")
    result = runner.invoke(cli, ["visualize", str(run), "--data", str(shapes_dir)])
    assert result.exit_code == 0, result.output
    assert (run / "report.html").is_file()

    not_model = tmp_path / "notes.txt"
    not_model.write_text("hello")
    not_image = tmp_path / "broken.png"
    not_image.write_text("not a png")
    bad_onnx = tmp_path / "broken.onnx"
    bad_onnx.write_bytes(b"\x00garbage" * 10)
    cases = [
        (["visualize", str(checkpoint), "--image", str(tmp_path / "missing.png"), "-o", str(out)], 2, "does not exist"),
        (["visualize", str(not_model), "-o", str(out)], 1, "expected a .pt checkpoint or an .onnx model"),
        (["visualize", str(bad_onnx), "-o", str(out)], 1, "not a loadable ONNX model"),
        (["visualize", str(checkpoint), "--image", str(not_image), "-o", str(out)], 1, "broken.png"),
        (["visualize", str(tmp_path), "-o", str(out)], 2, "run folder"),
    ]
    for args, code, message in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == code, (args, result.output)
        error = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert len(error) == 1 and message in error[0], result.output
        assert "Traceback" not in result.output


def test_cli_compares_a_quantized_model_with_its_fp32_file(tiny_onnx: Path, shapes_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    int8, image = str(tiny_onnx / "model.int8.onnx"), str(_image(shapes_dir))
    result = runner.invoke(cli, ["visualize", int8, "--image", image, "-o", str(tmp_path / "a"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [Path(f).name for f in data["files"]][-2:] == ["fp32_vs_int8.png", "index.html"]
    assert data["reference"] == str(tiny_onnx / "model.onnx")
    assert [layer["name"] for layer in data["layers"]] == [d["name"] for d in data["comparison"]] == ["stage1", "stage2", "stage3"]
    assert all(layer["tensor"].endswith("DequantizeLinear_Output") for layer in data["layers"])
    result = runner.invoke(cli, ["visualize", int8, "--image", image, "-o", str(tmp_path / "b"), "--no-compare"])
    assert result.exit_code == 0 and "fp32_vs_int8.png" not in result.stdout, result.output
    result = runner.invoke(cli, ["visualize", int8, "-o", str(tmp_path / "c"), "--compare", str(tiny_onnx / "model.onnx")])
    assert result.exit_code == 2
    error = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error) == 1 and "--compare needs --image" in error[0], result.output
