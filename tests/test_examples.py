"""Every example in every command's --help and in the README runs: on tiny data, with made-up files where a
placeholder (photo.jpg, photos/, clip.mp4, ...) stood, and tiny sizes appended to the expensive commands.

An example that is not run is listed in SKIP or NOT_RUN below with the reason.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgecnn.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# Examples not run, by a pattern on the command line, and why.
SKIP = {
    r"^edgecnn demo\b": "the whole pipeline on 3000 images (minutes); its stages are the examples run here",
    r"--nproc [2-9]": "several training processes (DDP): tests/test_distributed.py runs them",
    r"--pretrained": "downloads ImageNet weights; nothing downloads in a test",
    r"--weights \S+\.pth": "needs the torchvision weights file of a large backbone",
    r"^edgecnn serve\b": "a server that runs until stopped: tests/test_serve.py",
    r"--show": "opens a window: needs a display",
    r"classify camera(?!.*--source \S+\.mp4)": "needs a camera, a network stream or a Pi camera module",
}
# Lines of the README's command blocks that are not edgecnn commands, and why.
NOT_RUN = {
    r"^(make|pip|python3? |sha256sum|cd |scp |curl )": "the shell, make, pip or the board, not edgecnn",
    r"^torchrun\b": "PyTorch's launcher for several processes (tests/test_distributed.py)",
    r"^venv/bin/": "the bundle on the board: tests/test_deploy.py runs app.pyz",
}
# Appended to an example (the last of a repeated option wins): tiny sizes for the expensive commands.
TINY = {
    ("train",): ["--arch", "tinycnn", "--img-size", "32", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
                 "-q", "--no-calibrate"],
    ("data", "synth"): ["--classes", "3", "--per-class", "12", "--size", "32"],
    ("bench",): ["--warmup", "1", "--in-process", "-q"],
}
LABELS = ("circle", "square", "triangle")
# Placeholders that name something the world holds under another name.
SAME_AS = {"data/": "data/shapes/"}  # "Training at scale": any dataset


# ------------------------------------------------------------------------------------------------ collecting


def _walk(cmd: click.Command, path: tuple[str, ...], ctx: click.Context) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None:
                yield from _walk(sub, (*path, name), click.Context(sub, info_name=name, parent=ctx))


def _example_lines(text: str) -> list[str]:
    """The command lines of an "Examples:" block: continuations joined, comments kept for shlex to drop."""
    match = re.search(r"Examples?:\n(.*)", text, re.S)
    if not match:
        return []
    joined = re.sub(r"\\\n\s*", " ", match.group(1))
    return [line.strip() for line in joined.splitlines() if line.strip()]


def help_examples() -> list[tuple[str, str]]:
    out = []
    for path, cmd in _walk(cli, (), click.Context(cli, info_name="edgecnn")):
        for line in _example_lines(cmd.help or ""):
            out.append((f"edgecnn {' '.join(path)} --help".replace("  ", " "), line))
    return out


def readme_blocks() -> list[list[str]]:
    blocks = []
    for body in re.findall(r"```(?:bash|sh|console)\n(.*?)```", README.read_text(), re.S):
        body = re.sub(r"\\\n\s*", " ", body)
        lines = [re.sub(r"^\$ ", "", line.strip()) for line in body.splitlines()]
        blocks.append([line for line in lines if line and not line.startswith("#")])
    return blocks


def readme_pipeline() -> list[str]:
    return next(block for block in readme_blocks() if block and block[0].startswith("edgecnn data synth"))


def readme_examples() -> list[tuple[str, str]]:
    pipeline = readme_pipeline()
    return [("README.md", line) for block in readme_blocks() if block != pipeline for line in block]


# ------------------------------------------------------------------------------------------------ the world


def _image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the examples take as given: data/shapes, photos/, runs/shapes, model.onnx, model.int8.onnx, ..."""
    from edgecnn.export import export_onnx, quantize
    from edgecnn.synth import synthesize
    from edgecnn.train import TrainConfig, train

    root = tmp_path_factory.mktemp("world")
    data = root / "data" / "shapes"
    synthesize(data, classes=3, per_class=12, size=32, seed=0)
    train(data, root / "runs" / "shapes", TrainConfig(arch="tinycnn", img_size=32, epochs=1, batch_size=16, device="cpu",
                                                       calibrate=False), progress=False)
    export_onnx(root / "runs" / "shapes" / "best.pt", root / "model.onnx")
    quantize(root / "model.onnx", data / "train", root / "model.int8.onnx", force=True)
    shutil.copytree(root / "runs" / "shapes", root / "runs" / "photos")
    for name in ("photos", "few"):
        shutil.copytree(data, root / name)
    (root / "edgecnn-demo").mkdir()
    for name in ("model.onnx", "model.int8.onnx"):
        shutil.copyfile(root / name, root / "edgecnn-demo" / name)
    return root


def _placeholder(workspace: Path, value: str, *, flat: bool, foreign: str = "") -> None:
    """Make up the file or folder ``value`` names, from its name: an image, a model, a label file, a video."""
    path = workspace / value
    if any(c in value for c in "*?["):
        for i in range(3):
            _image(workspace / value.replace("**/", "sub/").replace("*", f"img{i}"), seed=i)
        return
    if path.exists():
        return
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
        _image(path)
    elif suffix == ".onnx" and foreign:  # a model from elsewhere: no edgecnn metadata, any input size
        from test_runtime import make_model

        path.parent.mkdir(parents=True, exist_ok=True)
        make_model(path, size="size" if foreign == "any size" else 32)
    elif suffix == ".onnx":
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(workspace / ("model.int8.onnx" if "int8" in value else "model.onnx"), path)
    elif suffix in (".pt", ".pth"):
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(workspace / "runs" / "shapes" / "best.pt", path)
    elif suffix == ".txt":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(LABELS) + "\n")
    elif suffix in (".mp4", ".avi"):
        cv2 = pytest.importorskip("cv2")
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (48, 40))
        for i in range(12):
            writer.write(np.full((40, 48, 3), i * 20, np.uint8))
        writer.release()
    elif flat:  # a folder of images, as `classify images` lists without -r
        for i in range(3):
            _image(path / f"img{i}.jpg", seed=i)
    else:  # a dataset: class folders in train/ and val/
        shutil.copytree(workspace / "data" / "shapes", path)


def _looks_like_path(value: str) -> bool:
    return not value.isdigit() and "://" not in value and (
        "/" in value or "*" in value or bool(re.search(r"\.(jpe?g|png|bmp|webp|onnx|pt|pth|txt|mp4|avi)$", value)))


def _command(args: list[str]) -> tuple[tuple[str, ...], click.Command]:
    """The (sub)command an argument list reaches, and its path, e.g. ("classify", "images")."""
    cmd: click.Command = cli
    path: tuple[str, ...] = ()
    ctx = click.Context(cli, info_name="edgecnn")
    for arg in args:
        if not isinstance(cmd, click.Group):
            break
        sub = cmd.get_command(ctx, arg)
        if sub is None:
            break
        cmd, path, ctx = sub, (*path, arg), click.Context(sub, info_name=arg, parent=ctx)
    return path, cmd


def prepare(line: str, workspace: Path) -> list[str]:
    """The argument list of ``line`` (after `edgecnn`), with its inputs made up in ``workspace``."""
    tokens = shlex.split(line, comments=True)
    assert tokens[0] == "edgecnn", line
    args = tokens[1:]
    if ">" in args:  # a shell redirect: the output stays in the runner
        i = args.index(">")
        del args[i : i + 2]
    args = [a.lstrip("/") if a.startswith("/") and len(a) > 1 else a for a in args]  # /tmp/demo -> ./tmp/demo
    args = [SAME_AS.get(a, a) for a in args]
    path, cmd = _command(args)
    rest = args[len(path):]
    # The raw strings of each parameter (the parser, not the types: a missing file is what we are to make).
    raw, _, _ = cmd.make_parser(click.Context(cmd, info_name=path[-1] if path else "edgecnn")).parse_args(list(rest))
    flat = path == ("classify", "images")
    # --labels: an example for models without edgecnn metadata; with --size, one of any input size.
    foreign = ("any size" if "size" in raw else "fixed size") if "labels" in raw else ""
    outputs = {"out_dir", "out", "run_dir"}
    for param in cmd.params:
        value = raw.get(param.name)
        if value is None or param.name in outputs:
            continue
        for v in value if isinstance(value, tuple | list) else [value]:
            if isinstance(v, str | Path) and (isinstance(param.type, click.Path) or _looks_like_path(str(v))):
                _placeholder(workspace, str(v), flat=flat, foreign=foreign)
    if path == ("data", "synth"):  # it writes its OUT_DIR: from an empty folder, as a new user would
        shutil.rmtree(workspace / raw["out_dir"], ignore_errors=True)
    if path == ("train",) and not raw.get("resume"):  # a new run: its folder must not hold one
        shutil.rmtree(workspace / raw.get("run_dir", "runs/none"), ignore_errors=True)
    if path == ("bench",):
        rest = _bench_sizes(rest)
    return [*path, *rest, *_tiny(path, rest)]


def _tiny(path: tuple[str, ...], rest: list[str]) -> list[str]:
    """TINY's options for ``path``; `bench --openvino` keeps its rows in worker processes, though.

    With OpenVINO loaded into this long-lived pytest process (rows --in-process), a later test that runs a
    torchrun group (tests/test_scale.py's restart test) took the pytest process down with SIGSEGV in every
    run that had this example first (9 of 9), and in none without it.
    """
    extra = TINY.get(path, [])
    return [o for o in extra if o != "--in-process"] if "--openvino" in rest else extra


def _bench_sizes(rest: list[str]) -> list[str]:
    """--seconds 5 -> 0.1 and --runs 200 -> 3 (or --runs 3 appended); --no-compile where --torch is."""
    out = list(rest)
    for option, small in (("--seconds", "0.1"), ("--runs", "3")):
        if option in out:
            out[out.index(option) + 1] = small
    if "--seconds" not in out and "--runs" not in out:
        out += ["--runs", "3"]
    if "--torch" in out:
        out.append("--no-compile")
    return out


def _skip_reason(line: str) -> str | None:
    for table in (NOT_RUN, SKIP):
        for pattern, reason in table.items():
            if re.search(pattern, line):
                return reason
    return None if line.startswith("edgecnn ") else "not an edgecnn command line"


def _run(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    # `data check` answers 1 when it found something (a tiny dataset is imbalanced and small): not a failure.
    allowed = (0, 1) if args[:2] == ["data", "check"] else (0,)
    assert result.exit_code in allowed and "Traceback" not in result.output, \
        f"edgecnn {shlex.join(args)} -> exit {result.exit_code}\n{result.output[-3000:]}"


# ------------------------------------------------------------------------------------------------ the tests

def _unique(examples: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One run per command line: the README repeats some --help examples word for word."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for source, line in examples:
        key = tuple(shlex.split(line, comments=True))
        if key not in seen:
            seen.add(key)
            out.append((source, line))
    return out


EXAMPLES = _unique(help_examples() + readme_examples())


def test_every_command_has_examples() -> None:
    sources = {source for source, _ in help_examples()}
    for path, _ in _walk(cli, (), click.Context(cli, info_name="edgecnn")):
        assert f"edgecnn {' '.join(path)} --help".replace("  ", " ") in sources, f"edgecnn {' '.join(path)}: no examples"


@pytest.mark.slow
@pytest.mark.parametrize("source,line", EXAMPLES, ids=[f"{s}: {line[:70]}" for s, line in EXAMPLES])
def test_example_runs(world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, line: str) -> None:
    reason = _skip_reason(line)
    if reason:
        pytest.skip(f"not run: {reason}")
    workspace = tmp_path / "ws"
    shutil.copytree(world, workspace)
    monkeypatch.chdir(workspace)
    _run(prepare(line, workspace))


@pytest.mark.slow
def test_readme_pipeline_runs_from_an_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline block line by line, each on what the lines before wrote: no placeholder is made up."""
    monkeypatch.chdir(tmp_path)
    for line in readme_pipeline():
        args = shlex.split(line, comments=True)[1:]
        path, _ = _command(args)
        rest = args[len(path):]
        if path == ("bench",):
            rest = _bench_sizes(rest)
        _run([*path, *rest, *_tiny(path, rest)])
    assert (tmp_path / "pi-bundle" / "app.pyz").is_file() and (tmp_path / "viz" / "index.html").is_file()
