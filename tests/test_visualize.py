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
    assert [name for name, _, _ in acts] == ["stage1", "stage2", "stage3"]
    assert [m.shape for _, _, m in acts] == [(16, 16, 16), (32, 8, 8), (64, 4, 4)]  # 32x32 input, stride 2 each
    assert probs.shape == (3,) and abs(float(probs.sum()) - 1) < 1e-5
    for name, caption, maps in acts:
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
    written = visualize(checkpoint, out, image=_image(shapes_dir))
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
    assert [p.name for p in visualize(checkpoint, tmp_path / "k")] == ["kernels.png", "index.html"]


def test_onnx_model_shows_the_same_network(checkpoint: Path, shapes_dir: Path, tmp_path: Path, view) -> None:
    from edgecnn.export.onnx_export import export_onnx
    from edgecnn.runtime import preprocess

    model = tmp_path / "tiny.onnx"
    export_onnx(checkpoint, model)
    onnx_view = load_view(model)
    # Export folds BatchNorm (the .pt view folds it too) and 1/(255*std) into the first conv (undone for display).
    assert "undone" in onnx_view.kernel_note
    np.testing.assert_allclose(onnx_view.first_kernels, view.first_kernels, atol=1e-5)
    for (_, a, _), (_, b, _) in zip(view.deep_kernels, onnx_view.deep_kernels, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    pixels = preprocess(_image(shapes_dir), view.spec)
    (pt_acts, pt_probs), (ox_acts, ox_probs) = view.run(pixels), onnx_view.run(pixels)
    np.testing.assert_allclose(ox_probs, pt_probs, atol=1e-5)
    for (_, _, a), (_, _, b) in zip(pt_acts, ox_acts, strict=True):  # Relu outputs = the stages' outputs
        np.testing.assert_allclose(b, a, atol=1e-4)
    written = visualize(model, tmp_path / "viz", image=_image(shapes_dir))
    assert [p.name for p in written] == ["kernels.png", "features_relu1.png", "features_relu2.png",
                                         "features_relu3.png", "softmax.png", "index.html"]
    assert all((tmp_path / "viz" / r).is_file() for r in _html_refs(written[-1]))

    # A static INT8 (QDQ) model: its weights are shown as the graph dequantizes them.
    from edgecnn.export.quantize import quantize

    int8 = tmp_path / "tiny.int8.onnx"
    quantize(model, shapes_dir / "train", int8, force=True)
    q_view = load_view(int8)
    scale = np.abs(view.first_kernels).max()
    assert 0 < np.abs(q_view.first_kernels - view.first_kernels).max() < 0.05 * scale
    # The first convolution stays float (quantize leaves it out: it is faster so); deeper activations are
    # the int8 ones after the ReLU that quantization absorbed, close to the float ReLU's.
    q_acts, _ = q_view.run(pixels)
    assert "int8" not in q_acts[0][1]
    deeper = [(i, a) for i, a in enumerate(q_acts) if "int8" in a[1]]
    assert deeper, [a[1] for a in q_acts]
    for i, (_, _, act) in deeper:
        assert act.min() >= 0
        assert np.corrcoef(act.ravel(), pt_acts[i][2].ravel())[0, 1] > 0.95
    written = visualize(int8, tmp_path / "viz8", image=_image(shapes_dir))
    assert len(written) == 6 and all(p.is_file() for p in written)

    # An FP16 model: float16 weights and activations (the extra outputs must be declared float16).
    fp16 = tmp_path / "tiny.fp16.onnx"
    quantize(model, shapes_dir / "train", fp16, fp16=True, force=True)
    h_view = load_view(fp16)
    np.testing.assert_allclose(h_view.first_kernels, view.first_kernels, atol=2e-3 * scale)
    h_acts, h_probs = h_view.run(pixels)
    np.testing.assert_allclose(h_probs, pt_probs, atol=2e-3)
    np.testing.assert_allclose(h_acts[-1][2], pt_acts[-1][2], atol=2e-2 * float(np.abs(pt_acts[-1][2]).max()))


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
