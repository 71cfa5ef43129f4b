"""The wheel: the right packages under edgecnn/, and a base install (no extras) is enough to classify."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The base install's dependencies (onnxruntime, numpy, pillow, click) and the shared libraries their wheels carry.
BASE_PACKAGES = ("numpy", "numpy.libs", "PIL", "pillow.libs", "onnxruntime", "click")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True)
    (path,) = out.glob("edgecnn-*.whl")
    return path


def test_wheel_maps_export_and_runtime_under_edgecnn(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("edgecnn-")}
    assert tops == {"edgecnn"}, tops  # never a generic top-level `export` or `runtime`
    for module in ("edgecnn/runtime/classifier.py", "edgecnn/export/onnx_export.py", "edgecnn/commands/classify.py",
                   "edgecnn/models/resnet.py", "edgecnn/runtime/spec.py"):
        assert module in names, module


@pytest.fixture(scope="module")
def base_python(wheel: Path, make_venv) -> str:
    """A fresh venv holding the wheel and only the base dependencies: no torch, no onnx."""
    python, site = make_venv("base", BASE_PACKAGES)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    return python


@pytest.fixture(scope="module")
def onnx_model(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgecnn.export import export_onnx

    return export_onnx(checkpoint, tmp_path_factory.mktemp("model") / "model.onnx").path


def test_base_install_classifies_without_torch(base_python: str, onnx_model: Path, shapes_dir: Path, tmp_path: Path) -> None:
    probe = subprocess.run([base_python, "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0, "torch must not be importable in the base install"
    probe = subprocess.run([base_python, "-c", "import onnx"], capture_output=True, text=True)
    assert probe.returncode != 0, "onnx must not be importable in the base install"
    images = sorted((shapes_dir / "val").rglob("*.png"))[:5]
    result = subprocess.run([base_python, "-m", "edgecnn", "classify", "images", "-m", str(onnx_model), "--json",
                             *map(str, images)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == list(map(str, images))
    assert all(abs(sum(t["prob"] for t in line["top"]) - 1.0) < 1e-4 for line in lines)


def test_base_install_explains_the_training_extra(base_python: str, shapes_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run([base_python, "-m", "edgecnn", "train", str(shapes_dir)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "edgecnn[train]" in result.stderr and "Traceback" not in result.stderr
    help_ = subprocess.run([base_python, "-m", "edgecnn", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert help_.returncode == 0 and "classify" in help_.stdout
