"""What a new user trips over in the first hour (issue 18): each test failed on the code before its fix."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgecnn.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
EDGECNN = [sys.executable, "-m", "edgecnn"]


def _run(cmd: list[str], cwd: Path | None = None, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic data, a one-epoch tinycnn run, its FP32 and INT8 ONNX files and visualize's pictures, all
    written under umask 022."""
    from edgecnn.export import export_onnx, quantize
    from edgecnn.synth import synthesize
    from edgecnn.train import TrainConfig, train

    root = tmp_path_factory.mktemp("first_hour")
    old = os.umask(0o022)
    try:
        data = root / "data"
        synthesize(data, classes=3, per_class=12, size=32, seed=0)
        run = root / "run"
        train(data, run, TrainConfig(arch="tinycnn", img_size=32, epochs=1, batch_size=16, device="cpu"), progress=False)
        fp32 = export_onnx(run / "best.pt", root / "model.onnx", verify_dir=data / "val").path
        int8 = quantize(fp32, data / "train", root / "model.int8.onnx", eval_dir=data / "val", force=True).path
        image = sorted((data / "val" / "circle").iterdir())[0]
        result = CliRunner().invoke(cli, ["visualize", str(run / "best.pt"), "--image", str(image), "-o", str(root / "viz")])
        assert result.exit_code == 0, result.output
    finally:
        os.umask(old)
    return {"root": root, "data": data, "run": run, "fp32": Path(fp32), "int8": Path(int8), "viz": root / "viz",
            "image": image}


# ------------------------------------------------------------------------------ the README's Python API snippet


def _readme_python() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    snippet = next(b for b in blocks if "edgecnn.train(" in b)
    return snippet


def _tiny_snippet(code: str) -> str:
    """The snippet with tiny sizes: nothing else changes, the calls and the imports stay as written."""
    subs = [(r"classes=\d+", "classes=3"), (r"per_class=\d+", "per_class=12, size=32"),
            (r'arch="\w+"', 'arch="tinycnn", img_size=32, batch_size=16, device="cpu"'), (r"epochs=\d+", "epochs=1"),
            (r'eval_dir="data/shapes/val"\)', 'eval_dir="data/shapes/val", max_drop=1.0)')]
    for pattern, new in subs:
        code, n = re.subn(pattern, new, code)
        assert n == 1, f"the README snippet changed: {pattern} matched {n} times"
    return code


@pytest.mark.slow
def test_readme_python_snippet_runs_twice_in_one_interpreter(tmp_path: Path) -> None:
    """`from edgecnn.train import TrainConfig` used to turn `edgecnn.train` into a module: TypeError on the call."""
    code = _tiny_snippet(_readme_python())
    # The second run is a notebook cell run again: same data (the same synthetic set is fine), new outputs.
    again = code.replace("runs/shapes", "runs/again").replace('"model.', '"again.')
    program = (f"code = {code!r}\nagain = {again!r}\n"
               "ns = {}\nexec(code, ns)\nexec(again, ns)\n"
               "import edgecnn, edgecnn.evaluate as ev\n"
               "assert callable(edgecnn.train) and callable(edgecnn.evaluate) and ev is edgecnn.evaluate\n"
               "assert edgecnn.train.TrainConfig is ns['TrainConfig']\n"
               "print('accuracy', edgecnn.evaluate('runs/again/best.pt', 'data/shapes/val').accuracy)\n")
    out = _run([sys.executable, "-c", program], cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "accuracy" in out.stdout and (tmp_path / "again.int8.onnx").is_file()


def test_package_callables_survive_any_import_order() -> None:
    program = ("import edgecnn\n"
               "first = edgecnn.evaluate\n"
               "second = edgecnn.evaluate\n"  # the second access used to return the module, the first the function
               "import edgecnn.train as t\n"
               "from edgecnn.evaluate import evaluate\n"
               "assert callable(first) and callable(second) and callable(edgecnn.train) and callable(t)\n"
               "assert isinstance(t.TrainConfig, type) and callable(evaluate)\n")
    out = _run([sys.executable, "-c", program])
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------------------ file modes


def test_written_files_honour_the_umask(tiny) -> None:
    """mkstemp's 0600 used to reach best.pt, model.onnx, report.html...: unreadable by a server or another uid."""
    run, viz = tiny["run"], tiny["viz"]
    files = [run / "best.pt", run / "last.pt", run / "metrics.json", run / "report.html", run / "curves.png",
             tiny["fp32"], tiny["int8"], *sorted(viz.glob("*.png")), *sorted((run / "report").glob("*.png"))]
    assert len(list(viz.glob("*.png"))) >= 2 and len(list((run / "report").glob("*.png"))) >= 2
    modes = {str(p.relative_to(tiny["root"])): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {"0o644"}, modes


def test_atomic_writes_follow_the_umask_and_keep_an_existing_mode(tmp_path: Path) -> None:
    from edgecnn.fileio import atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
        (tmp_path / "a.txt").chmod(0o604)  # the user's own choice survives a rewrite, as with open(..., "w")
        atomic_write_text(tmp_path / "a.txt", "y")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o604 and (tmp_path / "a.txt").read_text() == "y"
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------ pipes


def _closed_stdout(cmd: list[str]) -> tuple[int, str]:
    """Run ``cmd`` with a stdout whose reader is gone before the first write: the surest `| head`."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True)
    proc.stdout.close()
    _, err = proc.communicate(timeout=180)
    return proc.returncode, err


@pytest.fixture(scope="module")
def many_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for i in range(50):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def bundle(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgecnn.deploy import deploy

    out = tmp_path_factory.mktemp("bundle") / "pi-bundle"
    deploy(tiny["int8"], out)
    return out


def test_a_closed_stdout_ends_quietly_with_exit_0(tiny, many_images, bundle) -> None:
    commands = {
        "eval": [*EDGECNN, "eval", str(tiny["run"] / "best.pt"), str(tiny["data"] / "val")],
        "eval --json": [*EDGECNN, "eval", str(tiny["fp32"]), str(tiny["data"] / "val"), "--json"],
        "classify images": [*EDGECNN, "classify", "images", str(many_images), "-m", str(tiny["int8"])],
        "app.pyz --json": [sys.executable, str(bundle / "app.pyz"), str(many_images), "--json"],
    }
    for name, cmd in commands.items():
        code, err = _closed_stdout(cmd)
        assert code == 0 and "Broken pipe" not in err and "Traceback" not in err, (name, code, err[-2000:])


@pytest.mark.parametrize("which", ["classify", "app"])
def test_head_1_takes_the_first_line_and_the_rest_stops(tiny, many_images, bundle, which) -> None:
    cmd = (f"{sys.executable} -m edgecnn classify images {many_images} -m {tiny['int8']} --batch-size 1" if which == "classify"
           else f"{sys.executable} {bundle / 'app.pyz'} {many_images} --json --batch-size 1")
    out = _run(["bash", "-c", f"set -o pipefail; {cmd} | head -1"])
    assert out.returncode == 0 and "Broken pipe" not in out.stderr, out.stderr[-2000:]
    assert len(out.stdout.splitlines()) == 1


# ------------------------------------------------------------------------------ data synth into an occupied folder


def _pngs(folder: Path) -> int:
    return len(list(folder.rglob("*.png")))


def test_synth_refuses_to_mix_sets_and_replaces_one_with_force(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "shapes"
    args = ["data", "synth", str(out), "--size", "16"]
    assert runner.invoke(cli, [*args, "--classes", "5", "--per-class", "20"]).exit_code == 0
    mixed = runner.invoke(cli, [*args, "--classes", "3", "--per-class", "10"])
    assert mixed.exit_code == 1 and "--force" in mixed.output and "classes=5, per_class=20" in mixed.output
    assert _pngs(out) == 100  # untouched
    same = runner.invoke(cli, [*args, "--classes", "5", "--per-class", "20"])  # the same set again: rewritten as it was
    assert same.exit_code == 0 and _pngs(out) == 100
    forced = runner.invoke(cli, [*args, "--classes", "3", "--per-class", "10", "--force"])
    assert forced.exit_code == 0 and "replaced" in forced.output
    assert _pngs(out) == 30 and sorted(p.name for p in (out / "train").iterdir()) == ["circle", "square", "triangle"]


def test_synth_never_writes_into_someone_elses_folder(tmp_path: Path) -> None:
    photos = tmp_path / "photos" / "cats"
    photos.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(photos / "tom.jpg")
    for extra in ([], ["--force"]):
        result = CliRunner().invoke(cli, ["data", "synth", str(tmp_path / "photos"), "--per-class", "5", *extra])
        assert result.exit_code == 1 and "not a synthetic set" in result.output and "Traceback" not in result.output
    assert [p.name for p in (tmp_path / "photos").rglob("*") if p.is_file()] == ["tom.jpg"]


def test_synth_recognizes_a_set_made_before_the_marker(tmp_path: Path) -> None:
    from edgecnn.synth import MARKER, synthesize

    synthesize(tmp_path / "old", classes=2, per_class=5, size=16)
    (tmp_path / "old" / MARKER).unlink()  # as an earlier edgecnn left it
    with pytest.raises(ValueError, match="--force"):
        synthesize(tmp_path / "old", classes=3, per_class=5, size=16)
    assert synthesize(tmp_path / "old", classes=3, per_class=5, size=16, force=True).replaced
    assert _pngs(tmp_path / "old") == 15


# ------------------------------------------------------------------------------ train --resume on a finished run


def _train_cli(*args: str):
    return CliRunner().invoke(cli, ["train", *args, "-q", "--device", "cpu"])


def test_resume_of_a_finished_run_says_so_and_epochs_extends_it(tiny, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny["run"], run)
    data = str(tiny["data"])
    done = _train_cli(data, "-o", str(run), "--resume")
    assert done.exit_code == 0 and "is finished: 1 of 1 epochs" in done.output and "--epochs N" in done.output
    same = _train_cli(data, "-o", str(run), "--resume", "--epochs", "1")
    assert same.exit_code == 0 and "nothing to resume" in same.output  # as many epochs as done: said so
    longer = _train_cli(data, "-o", str(run), "--resume", "--epochs", "3")
    assert longer.exit_code == 0 and "extending" in longer.output, longer.output
    history = json.loads((run / "metrics.json").read_text())["epochs"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    # The schedule is a 3-epoch run's from the current step: the same learning rates as one planned for 3.
    planned = tmp_path / "planned"
    assert _train_cli(data, "-o", str(planned), "--arch", "tinycnn", "--img-size", "32", "--epochs", "3",
                      "--batch-size", "16", "--no-calibrate").exit_code == 0
    lrs = [h["lr"] for h in json.loads((planned / "metrics.json").read_text())["epochs"]]
    assert [h["lr"] for h in history][1:] == pytest.approx(lrs[1:], rel=1e-6)
    shorter = _train_cli(data, "-o", str(run), "--resume", "--epochs", "2")
    assert shorter.exit_code == 1 and "cannot shorten" in shorter.output


def test_an_existing_run_offers_force_and_force_starts_over(tiny, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny["run"], run)
    data = str(tiny["data"])
    refused = _train_cli(data, "-o", str(run), "--arch", "tinycnn", "--img-size", "32", "--epochs", "1")
    assert refused.exit_code == 1 and "--force" in refused.output and "--resume" in refused.output
    both = _train_cli(data, "-o", str(run), "--resume", "--force")
    assert both.exit_code == 2
    old = (run / "best.pt").read_bytes()
    fresh = _train_cli(data, "-o", str(run), "--arch", "tinycnn", "--img-size", "32", "--epochs", "1", "--seed", "7",
                       "--no-calibrate", "--force")
    assert fresh.exit_code == 0, fresh.output
    assert (run / "best.pt").read_bytes() != old and json.loads((run / "metrics.json").read_text())["config"]["seed"] == 7


# ------------------------------------------------------------------------------ one definition of "uncertain"


def test_verdict_bands_and_the_default_flag() -> None:
    from edgecnn.runtime.decode import AMBIGUOUS_MARGIN, DEFAULT_MIN_MARGIN, is_uncertain, verdict

    assert verdict(np.array([0.25, 0.237, 0.513])) == "unsure"  # margin 0.263: the "uncertain: false" case
    assert verdict(np.array([0.25, 0.263, 0.24, 0.247])) == "ambiguous"  # the 0.25 with a 0.013 margin
    assert verdict(np.array([0.667, 0.2, 0.133])) == "unsure"  # the report's UNSURE is uncertain too
    assert verdict(np.array([0.95, 0.03, 0.02])) == "confident"
    assert is_uncertain(np.array([0.25, 0.263, 0.24, 0.247])) and is_uncertain(np.array([0.667, 0.2, 0.133]))
    assert not is_uncertain(np.array([0.95, 0.03, 0.02]))
    assert AMBIGUOUS_MARGIN < DEFAULT_MIN_MARGIN
    # The caller's thresholds still decide: a looser margin makes the 0.667 answer confident.
    assert verdict(np.array([0.667, 0.2, 0.133]), min_margin=0.4) == "confident"


def test_visualize_uses_the_runtime_verdict() -> None:
    from edgecnn.runtime.decode import verdict
    from edgecnn.visualize import softmax_view

    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.dirichlet(np.full(4, rng.uniform(0.2, 3.0)))
        assert softmax_view(p, ["a", "b", "c", "d"]).verdict == verdict(p)


def test_uncertain_is_on_by_default_in_classify_and_the_bundle(tmp_path: Path, bundle) -> None:
    from test_runtime import SPEC, make_model

    from edgecnn.runtime.policy import DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN

    model = make_model(tmp_path / "m.onnx", spec=SPEC)
    Image.new("RGB", (16, 16), (128, 128, 128)).save(tmp_path / "grey.png")  # a three-way tie
    Image.new("RGB", (16, 16), (250, 5, 5)).save(tmp_path / "red.png")
    result = CliRunner().invoke(cli, ["classify", "images", str(tmp_path / "grey.png"), str(tmp_path / "red.png"),
                                      "-m", str(model), "--json"])
    lines = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
    assert [x["uncertain"] for x in lines] == [True, lines[1]["margin"] < DEFAULT_MIN_MARGIN]
    app = _run([sys.executable, str(bundle / "app.pyz"), str(tmp_path / "grey.png"), "-m", str(model), "--json"])
    assert json.loads(app.stdout.splitlines()[0])["uncertain"] is True, app.stderr
    from edgecnn.commands.classify import camera, images
    from edgecnn.runtime.app import build_parser

    for command in (images, camera):  # the camera overlay's `?` comes from the same flag
        defaults = {p.name: p.default for p in command.params}
        assert (defaults["min_confidence"], defaults["min_margin"]) == (DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN)
    args = build_parser().parse_args(["x.jpg"])
    assert (args.min_confidence, args.min_margin) == (DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN)


# ------------------------------------------------------------------------------ the wrong kind of file


def test_a_checkpoint_where_onnx_is_expected_and_the_reverse(tiny) -> None:
    from edgecnn.runtime.filekind import CHECKPOINT, ONNX, OTHER, sniff

    best, fp32 = tiny["run"] / "best.pt", tiny["fp32"]
    assert (sniff(best), sniff(fp32), sniff(tiny["run"] / "metrics.json")) == (CHECKPOINT, ONNX, OTHER)
    renamed = tiny["root"] / "renamed.bin"
    shutil.copyfile(fp32, renamed)
    assert sniff(renamed) == ONNX  # by content, not by name
    runner = CliRunner()
    export = runner.invoke(cli, ["export", str(fp32), "-o", str(tiny["root"] / "x.onnx")])
    assert export.exit_code == 1 and "this is an ONNX model, not a PyTorch checkpoint" in export.output
    assert "Unsupported operand" not in export.output
    classify = runner.invoke(cli, ["classify", "images", str(tiny["image"]), "-m", str(best)])
    assert classify.exit_code == 1 and "PyTorch checkpoint" in classify.output and f"edgecnn export {best}" in classify.output
    assert "INVALID_PROTOBUF" not in classify.output
    bench = runner.invoke(cli, ["bench", str(best), "--runs", "3", "--in-process"])
    assert bench.exit_code == 2 and bench.output.count("Error:") == 1 and f"--torch {best}" in bench.output
    assert "p50" not in bench.output  # no empty table
    quantize = runner.invoke(cli, ["quantize", str(best), "--mode", "dynamic", "-o", str(tiny["root"] / "q.onnx")])
    assert quantize.exit_code == 1 and "PyTorch checkpoint" in quantize.output and f"edgecnn export {best}" in quantize.output
    torch_onnx = runner.invoke(cli, ["bench", "--torch", str(fp32), "--runs", "3", "--in-process"])
    assert torch_onnx.exit_code == 2 and "this is an ONNX model" in torch_onnx.output and "p50" not in torch_onnx.output


# ------------------------------------------------------------------------------ one-line errors


@pytest.mark.parametrize("args", [["train", "--bogus"], ["--bogus"], ["nosuch"], ["classify", "images", "--top-k", "0", "x"],
                                  ["eval", "/no/such/model.pt", "."]])
def test_usage_errors_are_one_line_with_exit_2(args: list[str]) -> None:
    out = _run([*EDGECNN, *args])
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("Error: "), out.stderr
    assert re.search(r"\(see edgecnn[\w ]* --help\)$", lines[0])
    result = CliRunner().invoke(cli, args)  # the same line through click's test runner
    assert result.exit_code == 2 and "Usage:" not in result.output


def test_no_opencv_warnings_before_our_camera_error(tiny) -> None:
    pytest.importorskip("cv2")
    out = _run([*EDGECNN, "classify", "camera", "-m", str(tiny["fp32"]), "--source", "57", "--max-frames", "1"])
    assert out.returncode == 1 and "cannot open camera 57" in out.stderr
    assert "WARN" not in out.stderr, out.stderr


# ------------------------------------------------------------------------------ the README and the bundle


def test_gitignore_covers_the_pipeline_outputs_and_no_tracked_file() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["data/shapes/train/a.png", "runs/shapes/best.pt", "model.onnx", "model.int8.onnx", "pi-bundle/app.pyz",
             "viz/kernels.png"]
    out = _run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT)
    assert out.stdout.split() == paths, out.stdout
    tracked = _run(["git", "ls-files", "-ci", "--exclude-standard"], cwd=ROOT)
    assert tracked.stdout.strip() == ""


def test_bundle_readme_is_true_of_this_bundle(bundle, tmp_path: Path) -> None:
    text = (bundle / "README.md").read_text()
    assert "This bundle was checked" not in text and "was not run on ARM64" in text
    assert '"margin"' in text
    # "Run at boot": the copy works after a venv was made in the bundle folder (it used to fail on venv/).
    home = tmp_path / "home"
    shutil.copytree(bundle, home / bundle.name)
    (home / bundle.name / "venv" / "bin").mkdir(parents=True)
    block = re.search(r"## Run at boot.*?```sh\n(.*?)```", text, re.S).group(1)
    copy = [line.split("#")[0] for line in block.splitlines() if " cp " in f" {line}" and "systemd" not in line]
    script = "set -e\n" + "\n".join(line.replace("sudo ", "").replace("/opt/", f"{tmp_path}/opt/") for line in copy)
    first = next(line for line in block.splitlines() if "mkdir" in line).split("#")[0]
    script = script.replace("set -e\n", "set -e\n" + first.replace("sudo ", "").replace("/opt/", f"{tmp_path}/opt/") + "\n", 1)
    out = _run(["bash", "-c", script], env={**ENV, "HOME": str(home)})
    assert out.returncode == 0, out.stderr
    copied = {p.name for p in (tmp_path / "opt" / bundle.name).iterdir()}
    assert copied == {p.name for p in bundle.iterdir()}  # every file of the bundle, and no venv


def test_bundle_camera_without_opencv_names_requirements_camera(bundle, tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "cv2.py").write_text("raise ImportError('no OpenCV here')\n")
    out = _run([sys.executable, str(bundle / "app.pyz"), "--camera", "--max-frames", "1"],
               env={**ENV, "PYTHONPATH": str(blocker)})
    assert out.returncode == 1 and "requirements-camera.txt" in out.stderr and "edgecnn[camera]" not in out.stderr


# ------------------------------------------------------------------------------ smaller


def test_one_size_unit_everywhere(tiny, tmp_path: Path) -> None:
    from edgecnn.runtime.output import human_bytes

    assert (human_bytes(318_464), human_bytes(999), human_bytes(4_100_000)) == ("318.5 kB", "999 B", "4.1 MB")
    out = tmp_path / "m.onnx"
    export = CliRunner().invoke(cli, ["export", str(tiny["run"] / "best.pt"), "-o", str(out)])
    assert export.exit_code == 0 and f"({human_bytes(out.stat().st_size)}," in export.output and "KiB" not in export.output
    quant = CliRunner().invoke(cli, ["quantize", str(out), "--calib", str(tiny["data"] / "train"), "-o",
                                     str(tmp_path / "q.onnx")])
    assert quant.exit_code == 0 and "KiB" not in quant.output and " kB" in quant.output, quant.output


def test_deploy_lists_every_file_it_counts(tiny, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["deploy", str(tiny["int8"]), "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    count = int(re.search(r"(\d+) files", result.output).group(1))
    listed = [line for line in result.output.splitlines() if line.rstrip().endswith(" bytes")]
    assert count == len(listed) == len([p for p in (tmp_path / "b").iterdir() if p.is_file()])


def test_bench_device_defaults_to_auto_like_every_command() -> None:
    from edgecnn.commands.bench import bench
    from edgecnn.commands.evaluate import eval_

    assert {p.name: p.default for p in bench.params}["device"] == "auto"
    assert {p.name: p.default for p in eval_.params}["device"] == "auto"


def test_the_highlighted_bar_is_not_red_unless_asked() -> None:
    from edgecnn.plot import BAD, GOOD, bar_chart

    def bar_colour(image: Image.Image) -> set[tuple[int, int, int]]:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
        return {tuple(int(c) for c in p) for p in np.unique(pixels, axis=0)}

    red = tuple(int(BAD[i : i + 2], 16) for i in (1, 3, 5))
    green = tuple(int(GOOD[i : i + 2], 16) for i in (1, 3, 5))
    assert red not in bar_colour(bar_chart(["a", "b"], [1.0, 2.0], title="t", highlight=1))
    assert green in bar_colour(bar_chart(["a", "b"], [1.0, 2.0], title="t", highlight=1, highlight_colour=GOOD))


# ------------------------------------------------------------------------------ bench wording


def test_demo_bench_labels_name_each_thing_once(tmp_path: Path) -> None:
    from edgecnn.bench import BenchRow
    from edgecnn.demo import DemoPaths, bench_names

    paths = DemoPaths(tmp_path)
    names = bench_names(paths)
    rows = [BenchRow(model=str(paths.checkpoint), backend="torch", precision="fp32", batch=1, threads=1, variant="eager"),
            BenchRow(model=str(paths.int8), backend="onnxruntime", precision="int8", batch=1, threads=1)]
    labels = [row.named(names[row.model]) for row in rows]
    assert labels == ["PyTorch eager fp32 b1 t1", "ONNX onnxruntime int8 b1 t1"]
    for label in labels:
        words = label.lower().split()
        assert len(words) == len(set(words)), label  # "PyTorch eager eager fp32" was the defect


def test_fp32_peak_says_it_measures_only_when_it_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecnn import peak

    monkeypatch.setattr(peak, "measure_peak_gflops", lambda: {"numpy": 50.0, "onnxruntime": 60.0})
    said: list[str] = []
    cache = tmp_path / "peak.json"
    assert peak.fp32_peak_gflops(cache_file=cache, on_measure=lambda: said.append("measuring")) == 60.0
    assert said == ["measuring"]  # first use: measured, and said so
    assert peak.fp32_peak_gflops(cache_file=cache, on_measure=lambda: said.append("measuring")) == 60.0
    assert said == ["measuring"]  # cached: nothing printed again
