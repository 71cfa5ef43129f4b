"""The runtime runs without torch and onnx: a subprocess that cannot import them loads a model and classifies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image
from test_runtime import COLOURS, SPEC, make_model

# Installed before anything else in the child: any attempt to import a blocked package fails loudly.
_CHILD = r"""
import importlib.abc, json, sys

BLOCKED = ("torch", "onnx", "onnxscript", "torchvision", "cv2")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked import of {name}")
        return None

sys.meta_path.insert(0, Block())
model, folder = sys.argv[1:3]

from edgecnn.runtime import Classifier, expand_paths
clf = Classifier(model, device="cpu", threads=1)
single = clf.classify(f"{folder}/red.png").label
streamed = [r.prediction.label for r in clf.classify_paths(expand_paths([folder]))]

from click.testing import CliRunner
from edgecnn.cli import cli
cli_run = CliRunner().invoke(cli, ["classify", "images", folder, "-m", model, "--json"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED + ("edgecnn",) and not m.startswith(("edgecnn.runtime", "edgecnn.cli", "edgecnn.commands")))
print(json.dumps({"single": single, "streamed": streamed, "cli_exit": cli_run.exit_code, "cli": cli_run.output,
                  "loaded": loaded}))
"""


def test_runtime_and_classify_run_with_torch_and_onnx_blocked(tmp_path: Path) -> None:
    model = make_model(tmp_path / "tiny.onnx", spec=SPEC)
    folder = tmp_path / "images"
    folder.mkdir()
    for name, rgb in COLOURS.items():
        Image.new("RGB", (40, 30), rgb).save(folder / f"{name}.png")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(folder)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.splitlines()[-1])
    assert data["single"] == "red"
    assert data["streamed"] == ["blue", "green", "red"]
    assert data["cli_exit"] == 0 and data["cli"].count('"top"') == 3, data["cli"]
    # Only the package's light __init__ and its constants module (no torch), no training code.
    assert data["loaded"] == ["edgecnn", "edgecnn.defaults"], data["loaded"]


def test_the_blocker_works(tmp_path: Path) -> None:
    """The finder really blocks: otherwise the test above could pass with torch imported."""
    code = _CHILD.split("model, folder")[0] + "import torch\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "blocked import of torch" in out.stderr
