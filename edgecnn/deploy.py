"""Deployment bundles: a model, the runtime as one zipapp, and everything a board needs to run them.

    result = deploy("model.int8.onnx", "bundle/", name="shapes")
    # on the board:  python3 bundle/app.pyz photo.jpg --json

A bundle needs no torch, onnx, click or edgecnn on the board: ``app.pyz`` holds the runtime package
(``runtime/``, which imports only onnxruntime, numpy, Pillow and the standard library) and an argparse
CLI, and finds ``model.onnx`` beside itself.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from . import __version__
from .checkpoint import file_sha256
from .runtime.policy import AMBIGUOUS_MARGIN, DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN

BUNDLE_PACKAGE = "edgecnn_runtime"  # the runtime's package name inside app.pyz
MODEL_FILE = "model.onnx"
APP_FILE = "app.pyz"
MANIFEST_FILE = "SHA256SUMS"  # `sha256sum -c SHA256SUMS` checks the bundle on the board
INFO_FILE = "bundle.json"
BUNDLE_MARKERS = (APP_FILE, MANIFEST_FILE)  # a folder holding these is a bundle that --force may replace
MIN_PYTHON = (3, 11)  # onnxruntime's current aarch64 wheels need 3.11 (Raspberry Pi OS Bookworm has 3.11.2)
APP_MIN_PYTHON = (3, 10)  # what the runtime's code itself needs (x86 machines with an older onnxruntime)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same runtime always gives the same app.pyz bytes
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Bounds and why: 1.21.0 dies with "Illegal instruction" on a Raspberry Pi 4 (fixed in 1.22).
REQUIREMENTS = """\
# Runtime of an edgecnn bundle: install into a venv on the board (64-bit OS, Python >= 3.11).
# onnxruntime 1.21.0 dies with "Illegal instruction" on a Raspberry Pi 4; 1.22 fixed it.
onnxruntime>=1.22
numpy>=1.24
pillow>=10.1
"""

REQUIREMENTS_CAMERA = """\
# Only for `app.pyz --camera` with a USB camera, a video file or a stream URL.
# The Raspberry Pi camera module uses picamera2 instead: sudo apt install python3-picamera2
# (then create the venv with --system-site-packages so that it can see it).
-r requirements.txt
opencv-python-headless>=4.8
"""

# The lower bounds of pyproject.toml's [serve] extra; all four (and their dependencies) are pure Python.
REQUIREMENTS_SERVE = """\
# Only for `app.pyz --serve`: the HTTP service (JSON API, Prometheus metrics, a page with a live view).
# Pure-Python wheels: they install on a Raspberry Pi as anywhere. Add requirements-camera.txt for --camera.
-r requirements.txt
starlette>=0.40
uvicorn>=0.30
prometheus-client>=0.20
python-multipart>=0.0.9
"""
RUNTIME_SUBPACKAGES = ("serve",)  # runtime/<name>/ goes into app.pyz too (serve: its .py files and page.html)
_RUNTIME_FILE_SUFFIXES = (".py", ".html")

_MAIN = f"""\
# app.pyz entry point: kept to syntax any Python 3 parses, so that an old one says why it cannot run.
import sys

if sys.version_info < {APP_MIN_PYTHON!r}:
    sys.stderr.write("Error: this bundle needs Python >= {APP_MIN_PYTHON[0]}.{APP_MIN_PYTHON[1]} ({MIN_PYTHON[0]}.{MIN_PYTHON[1]} on ARM "
                     "boards; found %s); on a Raspberry Pi use 64-bit Raspberry Pi OS Bookworm or newer\\n" % sys.version.split()[0])
    sys.exit(2)

from {BUNDLE_PACKAGE}.app import main

sys.exit(main())
"""


_BUNDLE_INIT = '''"""edgecnn's runtime inside a deploy bundle (app.pyz): app.py imports the modules it needs."""
'''


class DeployError(ValueError):
    """A bundle that cannot be made; the message names the value and the fix."""


@dataclass(frozen=True)
class DeployResult:
    out_dir: Path  # the bundle folder
    name: str  # the bundle's name: README title and systemd unit name
    files: dict[str, str]  # bundle-relative path -> SHA256, as written to SHA256SUMS
    size_bytes: int  # all files together
    labels: tuple[str, ...]
    precision: str  # the model's edgecnn.precision metadata ("int8", "fp32", ...)

    @property
    def app(self) -> Path:
        return self.out_dir / APP_FILE

    @property
    def model(self) -> Path:
        return self.out_dir / MODEL_FILE


def deploy(model: str | os.PathLike, out_dir: str | os.PathLike, *, name: str | None = None,
           force: bool = False) -> DeployResult:
    """Write a self-contained bundle for ``model`` to ``out_dir``: model.onnx, app.pyz, requirements,
    README.md, a systemd unit, bundle.json and SHA256SUMS.

    The model is loaded with the runtime before anything is written. ``out_dir`` is built in a temporary
    folder beside it and renamed into place; an existing ``out_dir`` is replaced only with ``force``, and
    only when it is empty or an earlier bundle.
    """
    model = Path(model)
    out_dir = Path(out_dir)
    name = name or _default_name(out_dir)
    if not _NAME_RE.match(name):
        raise DeployError(f"bundle name {name!r}: use letters, digits, '.', '_' or '-' (at most 64), e.g. --name shapes")
    if not model.is_file():
        raise DeployError(f"{model}: no such model file; give an .onnx file from `edgecnn export` or `edgecnn quantize`")
    clf = _load(model)  # refuse a model the board could not run, before touching out_dir
    _check_target(out_dir, force=force)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        shutil.copyfile(model, staging / MODEL_FILE)
        # The copy is what ships: load it again, so that a model that needs files left behind
        # (external data) is refused here and not on the board.
        _load(staging / MODEL_FILE, shown_as=model)
        build_app(staging / APP_FILE)
        (staging / "requirements.txt").write_text(REQUIREMENTS)
        (staging / "requirements-camera.txt").write_text(REQUIREMENTS_CAMERA)
        (staging / "requirements-serve.txt").write_text(REQUIREMENTS_SERVE)
        (staging / f"{name}.service").write_text(systemd_unit(name))
        info = {
            "name": name,
            "model": MODEL_FILE,
            "source_model": str(model),
            "precision": clf.precision,
            "labels": list(clf.labels),
            "input": f"{clf.input_dtype} {clf.input_layout} {clf.spec.size}x{clf.spec.size}",
            "edgecnn_version": __version__,
            "min_python": ".".join(map(str, MIN_PYTHON)),
        }
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        (staging / "README.md").write_text(bundle_readme(name=name, labels=clf.labels, precision=clf.precision,
                                                         size=clf.spec.size))
        files = {p.relative_to(staging).as_posix(): file_sha256(p)
                 for p in sorted(staging.rglob("*")) if p.is_file()}
        (staging / MANIFEST_FILE).write_text("".join(f"{digest}  {rel}\n" for rel, digest in files.items()))
        for path in staging.iterdir():
            path.chmod(0o755 if path.name == APP_FILE else 0o644)
        staging.chmod(0o755)
        _swap_into_place(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    size = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    return DeployResult(out_dir=out_dir, name=name, files=files, size_bytes=size, labels=tuple(clf.labels),
                        precision=clf.precision)


def build_app(target: str | os.PathLike) -> Path:
    """Write ``target`` as a zipapp of the runtime package plus its CLI (runtime/app.py as __main__).

    Files go into the zip as the package ``edgecnn_runtime``, so the runtime's relative imports work
    there unchanged; the bytes depend only on the runtime's source (fixed timestamps, sorted entries).
    """
    target = Path(target)
    sources = runtime_sources()
    folder = sources[0].parent  # runtime/ (its own files come first)
    with open(target, "wb") as f:
        f.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            _add(zf, "__main__.py", _MAIN.encode())
            for path in sources:
                # The package's own __init__ imports the whole API (numpy, Pillow, onnxruntime); in the bundle,
                # app.py imports modules as it needs them, so that --help and the "install the requirements"
                # message work before anything is installed.
                rel = path.relative_to(folder).as_posix()
                data = _BUNDLE_INIT.encode() if rel == "__init__.py" else path.read_bytes()
                _add(zf, f"{BUNDLE_PACKAGE}/{rel}", data)
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


def runtime_sources() -> list[Path]:
    """The runtime's .py files (then its subpackages' .py and .html files), checked to import each other only
    relatively (they must work inside app.pyz)."""
    spec = find_spec("edgecnn.runtime")  # find, not import: no need to load numpy here
    if spec is None or not spec.submodule_search_locations:
        raise DeployError("the edgecnn.runtime package is not installed; reinstall edgecnn")
    folder = Path(next(iter(spec.submodule_search_locations)))
    sources = sorted(folder.glob("*.py"))
    for sub in RUNTIME_SUBPACKAGES:
        sources += sorted(p for p in (folder / sub).glob("*") if p.suffix in _RUNTIME_FILE_SUFFIXES)
    if not (folder / "app.py").is_file():
        raise DeployError(f"{folder}: runtime/app.py is missing; reinstall edgecnn")
    for path in sources:
        if path.suffix == ".py" and _imports_edgecnn(path):
            raise DeployError(f"{path}: imports edgecnn absolutely; inside app.pyz the runtime must use relative imports")
    return sources


def verify_bundle(out_dir: str | os.PathLike) -> list[str]:
    """Problems found by checking every file against SHA256SUMS (an empty list: the bundle is intact)."""
    out_dir = Path(out_dir)
    manifest = out_dir / MANIFEST_FILE
    if not manifest.is_file():
        return [f"{manifest}: missing"]
    problems, listed = [], set()
    for line in manifest.read_text().splitlines():
        digest, _, rel = line.partition("  ")
        listed.add(rel)
        path = out_dir / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif file_sha256(path) != digest:
            problems.append(f"{rel}: checksum differs")
    extra = {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()} - listed - {MANIFEST_FILE}
    problems += [f"{rel}: not in {MANIFEST_FILE}" for rel in sorted(extra)]
    return problems


# ------------------------------------------------------------------------------------------------ helpers
def _default_name(out_dir: Path) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", out_dir.resolve().name).strip("-.") or "edgecnn"
    return base[:64]


def _load(path: Path, *, shown_as: Path | None = None):
    """Load ``path`` as the app on the board will; a ModelError names ``shown_as`` (the user's file)."""
    from .runtime.classifier import Classifier
    from .runtime.session import ModelError

    try:
        return Classifier(path, device="cpu", threads=1)
    except (ModelError, ValueError, OSError) as exc:
        text = str(exc).removeprefix(f"{path}: ")
        if shown_as is not None:
            text = text.replace(str(path), str(shown_as))
            if "external" in text.lower() or "No such file" in text:
                text += " (models with external data files cannot be bundled; export the model as a single file)"
        raise DeployError(f"refusing to bundle {shown_as or path}: {text}") from None


def _check_target(out_dir: Path, *, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DeployError(f"{out_dir}: exists and is not a folder; choose another -o")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not force:
        raise DeployError(f"{out_dir}: already exists and is not empty; pass --force to replace it, or choose another -o")
    if not all((out_dir / marker).is_file() for marker in BUNDLE_MARKERS):
        # --force replaces an earlier bundle, never an arbitrary folder (think `-o ~ --force`).
        raise DeployError(f"{out_dir}: is not an edgecnn bundle (no {' and '.join(BUNDLE_MARKERS)}); "
                          "refusing to delete it even with --force; choose a new -o folder")


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished bundle into place; an old bundle is moved aside first and removed after."""
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    os.rmdir(old)
    os.rename(out_dir, old)
    try:
        os.rename(staging, out_dir)
    except OSError:
        os.rename(old, out_dir)  # put the old bundle back, then report the failure
        raise
    shutil.rmtree(old, ignore_errors=True)


def _imports_edgecnn(path: Path) -> bool:
    """True when ``path`` has ``import edgecnn...`` or ``from edgecnn... import`` (docstrings don't count)."""
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "edgecnn" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "edgecnn":
            return True
    return False


def _add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def systemd_unit(name: str, *, install_dir: str | None = None) -> str:
    """A systemd service that runs the bundle's camera loop at boot and restarts it if it stops."""
    where = install_dir or f"/opt/{name}"
    return f"""\
# Runs the {name} classifier at boot. Install: see README.md, "Run at boot".
[Unit]
Description=edgecnn classifier {name} (camera loop)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=pi
WorkingDirectory={where}
# One JSON line per frame goes to the journal: journalctl -u {name} -f
ExecStart={where}/venv/bin/python {where}/{APP_FILE} --camera --source 0 --json --threads 4
# Or serve over HTTP (pip install -r requirements-serve.txt; README.md, "Serve over HTTP"): replace the
# line above with these two. SIGTERM (systemctl stop) lets requests in flight finish; the exit code is 0.
#Environment=EDGECNN_TOKEN=change-me
#ExecStart={where}/venv/bin/python {where}/{APP_FILE} --serve --host 0.0.0.0 --port 8080 --threads 4
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
"""


def bundle_readme(*, name: str, labels: tuple[str, ...] | list[str], precision: str, size: int) -> str:
    """The README.md written into each bundle: what a person at the board does, step by step."""
    shown = ", ".join(labels[:20]) + (f", ... ({len(labels)} in all)" if len(labels) > 20 else "")
    return (_README_TEMPLATE.replace("{name}", name).replace("{labels}", shown).replace("{precision}", precision)
            .replace("{size}", str(size)).replace("{min_python}", ".".join(map(str, MIN_PYTHON)))
            .replace("{min_confidence}", str(DEFAULT_MIN_CONFIDENCE)).replace("{min_margin}", str(DEFAULT_MIN_MARGIN))
            .replace("{ambiguous_margin}", str(AMBIGUOUS_MARGIN)))


_README_TEMPLATE = """\
# {name}: an edgecnn image classifier bundle

An ONNX image classifier ({precision}, {size}x{size} input; classes: {labels}) with a small runtime
that needs only Python, onnxruntime, numpy and Pillow: no torch, no onnx, no edgecnn.

| file | what it is |
| --- | --- |
| `model.onnx` | the model; labels and preprocessing are inside it |
| `app.pyz` | the runtime and its command line, one file (run it with `python3 app.pyz`) |
| `requirements.txt` | what to install: onnxruntime, numpy, pillow |
| `requirements-camera.txt` | the same plus OpenCV, for `--camera` with a USB camera, video file or stream |
| `requirements-serve.txt` | the same plus starlette, uvicorn, prometheus-client, python-multipart, for `--serve` |
| `{name}.service` | a systemd unit that starts the camera loop at boot |
| `bundle.json` | name, labels, precision, input of the model |
| `SHA256SUMS` | checksums of every file: `sha256sum -c SHA256SUMS` |

## Requirements

- A **64-bit** OS (aarch64 or x86-64). On a Raspberry Pi: 64-bit Raspberry Pi OS Bookworm or newer
  (`uname -m` prints `aarch64`). The 32-bit OS (`armv7l`) has no onnxruntime wheels.
- **Python >= {min_python}** (`python3 --version`; Bookworm has 3.11.2). Current onnxruntime wheels for
  aarch64 need it.
- **onnxruntime >= 1.22**: 1.21.0 dies with "Illegal instruction" on a Raspberry Pi 4. `requirements.txt`
  holds this bound.
- A Raspberry Pi 3, 4 or 5 or any other 64-bit ARM board; about 150 MB of free memory.

## Install

Copy the folder to the board (for example `scp -r {name} pi@raspberrypi.local:`), then on the board:

```sh
cd ~/{name}
sha256sum -c SHA256SUMS                  # every file arrived intact
python3 -m venv venv
venv/bin/pip install -r requirements.txt # or requirements-camera.txt for --camera with OpenCV
```

## Run

```sh
venv/bin/python app.pyz photo.jpg                    # a table: file, top classes, probabilities
venv/bin/python app.pyz photos/*.jpg --json          # one JSON object per line
venv/bin/python app.pyz photos/ --recursive --top-k 3 --min-confidence 0.6
venv/bin/python app.pyz --help
```

`--json` prints `{"path": ..., "top": [{"label": ..., "index": ..., "prob": ...}], "margin": ...,
"uncertain": false}` per image (`margin`: the first probability minus the second), or
`{"path": ..., "error": "..."}` for a file that cannot be read. The exit code is 1 if any file failed,
0 otherwise. A prediction is flagged `uncertain` unless its top probability is at least
`--min-confidence` and its margin at least `--min-margin` (by default {min_confidence} and {min_margin}: the
bands of the training report, where a margin below {ambiguous_margin} is a coin toss). The model is the
`model.onnx` beside `app.pyz`; `-m other.onnx` picks another. `--threads N` sets onnxruntime's threads
(a Pi 4 or 5 has 4 cores).

## Camera

```sh
venv/bin/pip install -r requirements-camera.txt
venv/bin/python app.pyz --camera                     # USB camera 0; one line per frame with FPS
venv/bin/python app.pyz --camera --source clip.mp4 --max-frames 100 --json
```

- USB cameras, video files and stream URLs (`--source rtsp://...`) go through OpenCV
  (`opencv-python-headless`).
- The Raspberry Pi camera module goes through picamera2, which comes from apt, not pip:
  `sudo apt install python3-picamera2`, then create the venv with
  `python3 -m venv --system-site-packages venv` so that it can see it, and run with `--source picamera`.
- Ctrl-C ends the loop and prints a summary (frames, mean FPS, mean latency). A camera that cannot be
  opened or that disconnects ends with a message and exit code 1.

## Serve over HTTP

```sh
venv/bin/pip install -r requirements-serve.txt       # and requirements-camera.txt for --camera
venv/bin/python app.pyz --serve                      # http://127.0.0.1:8080/ : a page to drop images on
EDGECNN_TOKEN=s3cret venv/bin/python app.pyz --serve --host 0.0.0.0 --camera 0   # from the network, live view
curl -s --data-binary @photo.jpg -H 'Content-Type: image/jpeg' localhost:8080/v1/classify
```

`POST /v1/classify` takes an image's bytes (or the multipart field `file`, `curl -F file=@photo.jpg`) and
answers the JSON line of `--json` without its path; `GET /v1/model`, `/healthz` and `/metrics`
(Prometheus) describe the model and the service. Errors are JSON `{"error": ...}`: 400 unreadable image,
401 without the token, 413 over `--max-body-mb`, 415 not an image, 503 queue full (`--max-queue`). The
server listens on 127.0.0.1 unless `--host` says otherwise; from the network, set a token (`--token` or
`EDGECNN_TOKEN`) and send `Authorization: Bearer TOKEN`. `{name}.service` has the lines to run it at boot.

## Run at boot

`{name}.service` runs `app.pyz --camera --json` from `/opt/{name}` as user `pi` and restarts it if it
stops. Adjust `User=`, the paths and the options in it if yours differ, then:

```sh
cd ~/{name} && sudo mkdir -p /opt/{name}   # copy the bundle's files, not a venv made in ~/{name}:
sudo cp model.onnx app.pyz requirements*.txt {name}.service bundle.json SHA256SUMS README.md /opt/{name}/
cd /opt/{name} && sudo python3 -m venv venv && sudo venv/bin/pip install -r requirements-camera.txt
sudo cp /opt/{name}/{name}.service /etc/systemd/system/
sudo systemctl daemon-reload
sudo systemctl enable --now {name}
journalctl -u {name} -f                              # the predictions, one JSON line per frame
```

(If you edit the unit, `sha256sum -c` will report it as changed: that is expected.)

## Notes

- edgecnn's own tests run its bundles under ARM64 emulation (qemu-user, aarch64 Python 3.11, onnxruntime
  below 1.28); this bundle itself was not run on ARM64 when it was made. Under qemu-user, onnxruntime 1.30
  and newer crash at import (their CPU detection); that is an artefact of emulation and says nothing
  about real boards, where current onnxruntime is fine.
- Speed on the board is not known from emulation: measure it there, for example by timing
  `app.pyz --json` on a folder of images, or with `edgecnn bench` if you install edgecnn.
"""
