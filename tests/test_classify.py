"""`edgecnn classify images|camera` through CliRunner: output formats, exit codes, errors, video files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_preprocess import bad_files
from test_runtime import COLOURS, LABELS, SPEC, make_model

from edgecnn.cli import cli
from edgecnn.commands.classify import DEFAULT_MODEL


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("m") / "tiny.onnx", spec=SPEC)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for name, rgb in COLOURS.items():
        Image.new("RGB", (64, 48), rgb).save(root / f"{name}.jpg", quality=95)
    (root / "nested").mkdir()
    Image.new("RGB", (30, 30), COLOURS["green"]).save(root / "nested" / "deep.png")
    return root


def run(*args: str):
    return CliRunner().invoke(cli, ["classify", *args], catch_exceptions=False)


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_images_table(model, photos) -> None:
    result = run("images", str(photos), "-m", str(model), "--top-k", "2")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if ".jpg" in line]
    assert len(rows) == 3
    for row in rows:
        name = Path(row.split()[0]).stem
        assert row.split()[1] == name  # the predicted label is the colour in the file name
    assert "on cpu" in result.output  # the chosen device is reported
    assert "3 classified, 0 failed" in result.output


def test_images_json_format_recursive_and_glob(model, photos) -> None:
    result = run("images", str(photos), "-r", "-m", str(model), "--json", "-k", "3", "--device", "cpu")
    assert result.exit_code == 0
    objs = json_lines(result.output)
    assert [Path(o["path"]).name for o in objs] == ["blue.jpg", "green.jpg", "red.jpg", "deep.png"]
    for obj in objs:
        assert set(obj) == {"path", "top", "margin", "uncertain"}
        assert len(obj["top"]) == 3 and set(obj["top"][0]) == {"label", "index", "prob"}
        assert obj["top"][0]["prob"] >= obj["top"][1]["prob"] >= obj["top"][2]["prob"]
        assert obj["top"][0]["label"] == LABELS[obj["top"][0]["index"]]
        assert obj["margin"] == pytest.approx(obj["top"][0]["prob"] - obj["top"][1]["prob"], abs=2e-6)
        assert obj["uncertain"] is False
    glob = run("images", str(photos / "*.jpg"), "-m", str(model), "--json")
    assert [Path(o["path"]).name for o in json_lines(glob.output)] == ["blue.jpg", "green.jpg", "red.jpg"]


def test_bad_files_give_error_lines_and_exit_1(model, photos, tmp_path) -> None:
    bad = bad_files(tmp_path / "bad")
    bad["directory"] = (bad["directory"][0], "no image files in this folder")  # a folder is listed, not opened
    paths = [str(photos / "red.jpg")] + [str(p) for p, _ in bad.values()] + [str(photos / "blue.jpg")]
    result = run("images", *paths, "-m", str(model), "--json")
    assert result.exit_code == 1
    objs = json_lines(result.output)
    assert [o["path"] for o in objs] == paths  # every file answered, in order, and the batch went on
    assert objs[0]["top"][0]["label"] == "red" and objs[-1]["top"][0]["label"] == "blue"
    for obj, (kind, (_, phrase)) in zip(objs[1:-1], bad.items(), strict=True):
        assert set(obj) == {"path", "error"} and phrase in obj["error"], kind
    table = run("images", *paths, "-m", str(model))
    assert table.exit_code == 1 and "Traceback" not in table.output
    assert table.output.count("ERROR") == len(bad) and f"{len(bad)} failed" in table.output


def test_uncertain_flag_in_cli(model, tmp_path) -> None:
    Image.new("RGB", (20, 20), (128, 128, 128)).save(tmp_path / "grey.png")
    result = run("images", str(tmp_path / "grey.png"), "-m", str(model), "--json", "--min-confidence", "0.5")
    assert json_lines(result.output)[0]["uncertain"] is True
    table = run("images", str(tmp_path / "grey.png"), "-m", str(model), "--min-margin", "0.2")
    assert "UNCERTAIN" in table.output and table.exit_code == 0


def test_default_model_missing_and_present(model, photos, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["classify", "images", str(photos / "red.jpg")])
    assert result.exit_code == 1
    assert str(DEFAULT_MODEL) in result.output and "edgecnn demo" in result.output
    DEFAULT_MODEL.parent.mkdir()
    shutil.copy(model, DEFAULT_MODEL)
    result = CliRunner().invoke(cli, ["classify", "images", str(photos / "red.jpg"), "--json"])
    assert result.exit_code == 0 and json_lines(result.output)[0]["top"][0]["label"] == "red"


def test_foreign_model_with_flags(tmp_path, photos) -> None:
    foreign = make_model(tmp_path / "foreign.onnx", layout="NCHW", dtype="float32", size="S", outputs="logits")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS))
    flags = ["--labels", str(labels), "--size", "20", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--json"]
    result = run("images", str(photos / "green.jpg"), "-m", str(foreign), *flags)
    assert result.exit_code == 0, result.output
    assert json_lines(result.output)[0]["top"][0]["label"] == "green"
    no_size = CliRunner().invoke(cli, ["classify", "images", str(photos / "green.jpg"), "-m", str(foreign)])
    assert no_size.exit_code == 1 and "--size" in no_size.output and "Traceback" not in no_size.output
    bad_mean = run("images", str(photos / "green.jpg"), "-m", str(foreign), "--mean", "0.5,0.5")
    assert bad_mean.exit_code == 2 and "three values" in bad_mean.output
    (tmp_path / "two.txt").write_text("a\nb\n")
    mismatch = CliRunner().invoke(cli, ["classify", "images", str(photos / "red.jpg"), "-m", str(foreign), "--size", "20",
                                        "--labels", str(tmp_path / "two.txt")])
    assert mismatch.exit_code == 1 and "2 labels given but the model has 3 outputs" in mismatch.output


def test_non_onnx_model_is_a_one_line_error(tmp_path, photos) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_text("hello")
    result = CliRunner().invoke(cli, ["classify", "images", str(photos / "red.jpg"), "-m", str(fake)])
    assert result.exit_code == 1 and "not a loadable ONNX model" in result.output and "Traceback" not in result.output


# ------------------------------------------------------------------------------------------------ camera
@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    cv2 = pytest.importorskip("cv2")
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for i in range(12):  # 4 red, 4 green, 4 blue frames (OpenCV writes BGR)
        rgb = list(COLOURS.values())[i // 4]
        writer.write(np.full((48, 64, 3), rgb[::-1], np.uint8))
    writer.release()
    return path


def test_camera_on_a_video_file(model, video) -> None:
    result = run("camera", "--source", str(video), "-m", str(model), "--json", "-k", "1")
    assert result.exit_code == 0, result.output
    objs = json_lines(result.output)
    assert [o["frame"] for o in objs] == list(range(12))
    assert [o["top"][0]["label"] for o in objs] == ["red"] * 4 + ["green"] * 4 + ["blue"] * 4  # BGR handled
    assert set(objs[0]) == {"frame", "top", "margin", "uncertain", "fps", "latency_ms"}
    assert all(o["fps"] > 0 for o in objs)
    assert "12 frames classified (12 read)" in result.output and "mean latency" in result.output


def test_camera_every_and_max_frames(model, video) -> None:
    result = run("camera", "--source", str(video), "-m", str(model), "--every", "4", "--json")
    assert [o["frame"] for o in json_lines(result.output)] == [0, 4, 8]
    result = run("camera", "--source", str(video), "-m", str(model), "--max-frames", "5")
    assert result.exit_code == 0 and result.output.count("frame ") == 5 and "5 frames classified" in result.output


def test_camera_errors(model, tmp_path, monkeypatch) -> None:
    pytest.importorskip("cv2")
    missing = CliRunner().invoke(cli, ["classify", "camera", "--source", str(tmp_path / "nope.mp4"), "-m", str(model)])
    assert missing.exit_code == 1 and "no such video file" in missing.output
    (tmp_path / "junk.avi").write_bytes(b"not a video")
    junk = CliRunner().invoke(cli, ["classify", "camera", "--source", str(tmp_path / "junk.avi"), "-m", str(model)])
    assert junk.exit_code == 1 and "junk.avi" in junk.output and "Traceback" not in junk.output
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    show = CliRunner().invoke(cli, ["classify", "camera", "--show", "-m", str(model)])
    assert show.exit_code == 1 and "--show needs" in show.output


class FakeCamera:
    """A camera that sends ``n`` frames and then disconnects, or is interrupted by Ctrl-C."""

    bgr = True

    def __init__(self, n: int, end: type[BaseException]):
        self.n, self.end = n, end

    def describe(self) -> str:
        return "camera 7"

    def __iter__(self):
        from edgecnn.runtime import CameraError

        for _ in range(self.n):
            yield np.full((48, 64, 3), COLOURS["blue"][::-1], np.uint8)
        if self.end is CameraError:
            raise CameraError("camera 7 disconnected or stopped sending frames after 3 frames")
        raise self.end()

    def close(self) -> None:
        pass


def test_camera_disconnect_and_ctrl_c(model, monkeypatch) -> None:
    import edgecnn.runtime.stream
    from edgecnn.runtime import CameraError

    # The camera loop (shared with the bundle's app) opens its source through runtime.stream.
    monkeypatch.setattr(edgecnn.runtime.stream, "open_frames", lambda source: FakeCamera(3, CameraError))
    result = CliRunner().invoke(cli, ["classify", "camera", "-m", str(model)])
    assert result.exit_code == 1 and "disconnected" in result.output and result.output.count("blue") == 3
    assert "3 frames classified" in result.output
    monkeypatch.setattr(edgecnn.runtime.stream, "open_frames", lambda source: FakeCamera(2, KeyboardInterrupt))
    result = CliRunner().invoke(cli, ["classify", "camera", "-m", str(model)])
    assert result.exit_code == 0 and "interrupted" in result.output and "2 frames classified" in result.output
    assert "mean" in result.output and "fps" in result.output


def test_camera_index_that_does_not_exist(model) -> None:
    pytest.importorskip("cv2")
    result = CliRunner().invoke(cli, ["classify", "camera", "--source", "57", "-m", str(model)])
    assert result.exit_code == 1 and "cannot open camera 57" in result.output


def test_picamera2_source_with_a_fake_module(model, monkeypatch) -> None:
    """picamera2 exists only on a Pi: a stand-in module checks the wiring (config, BGR order, stop on failure)."""
    import sys
    import types

    from edgecnn.runtime import CameraError, sources

    class Picamera2:
        def __init__(self):
            self.frames = 0

        def create_preview_configuration(self, main):
            assert main["format"] == "RGB888"
            return main

        def configure(self, config):
            self.size = config["size"]

        def start(self):
            pass

        def capture_array(self):
            self.frames += 1
            if self.frames > 3:
                raise RuntimeError("camera unplugged")
            return np.full((self.size[1], self.size[0], 3), COLOURS["green"][::-1], np.uint8)

        def stop(self):
            pass

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=Picamera2))
    monkeypatch.setattr(sources, "_missing", lambda name: name == "cv2")  # a Pi without OpenCV: "0" means picamera2
    frames = sources.FrameSource("0")
    assert frames.kind == "picamera" and frames.describe() == "the Raspberry Pi camera"
    result = CliRunner().invoke(cli, ["classify", "camera", "-m", str(model), "--json"])
    assert result.exit_code == 1 and "stopped after 3 frames (camera unplugged)" in result.output
    assert [o["top"][0]["label"] for o in json_lines(result.output)] == ["green"] * 3
    monkeypatch.delitem(sys.modules, "picamera2")
    monkeypatch.setattr(sources, "_missing", lambda name: False)
    with pytest.raises(CameraError, match="needs picamera2"):
        sources.FrameSource("picamera")


@pytest.mark.slow
@pytest.mark.parametrize("entry", [["-m", "edgecnn", "classify", "images"], ["-m", "edgecnn.runtime.app"]])
def test_a_closed_stdout_ends_quietly_with_exit_0(model, tmp_path, entry) -> None:
    """`... | head -1`: the CLI and the bundle's app share one file loop, and both stop quietly when the reader goes."""
    import subprocess
    import sys

    Image.new("RGB", (16, 16), COLOURS["red"]).save(tmp_path / "r.png")
    # Well over a pipe's 64 KiB of JSON lines, so that the loop is still writing when the reader closes the pipe.
    args = [sys.executable, *entry, *["r.png"] * 1500, "-m", str(model), "--json", "--device", "cpu"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert json.loads(first)["top"][0]["label"] == "red"
    assert "Broken pipe" not in err and "Traceback" not in err and "Exception ignored" not in err
