"""A deploy bundle on ARM64 (aarch64 Python 3.11 under qemu-user) answers as the x86 runtime does.

Builds the emulated environment into benchmarks/.cache/arm64 (or $EDGECNN_ARM64_CACHE) on first use:
needs root, apt-get and network to Debian and PyPI. Where that is impossible the test skips and says
why; set EDGECNN_REQUIRE_ARM64=1 to make that a failure instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecnn.cli import cli
from edgecnn.deploy import deploy

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "arm64_emulated.py"

pytestmark = pytest.mark.slow


def _load_script():
    spec = importlib.util.spec_from_file_location("arm64_emulated", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def arm64():
    script = _load_script()
    try:
        env = script.ensure_env()
    except script.Unavailable as exc:
        if os.environ.get("EDGECNN_REQUIRE_ARM64"):
            pytest.fail(f"ARM64 emulation unavailable: {exc}")
        pytest.skip(f"ARM64 emulation unavailable here: {exc}")
    return script, env


@pytest.fixture(scope="module")
def models(checkpoint: Path, shapes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fixture checkpoint as FP32 ONNX, and as INT8 where the quantizer is present."""
    from edgecnn.export import export_onnx

    folder = tmp_path_factory.mktemp("arm64_models")
    out = {"fp32": export_onnx(checkpoint, folder / "model.onnx").path}
    if importlib.util.find_spec("edgecnn.export.quantize") is not None:
        from edgecnn.export import quantize

        out["int8"] = quantize(out["fp32"], shapes_dir / "train", folder / "model.int8.onnx", calib_size=32).path
    return out


@pytest.fixture(scope="module")
def images(shapes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("arm64_images")
    good = sorted((shapes_dir / "val").rglob("*.png"))[::5][:6]
    Image.open(good[0]).convert("RGB").resize((120, 90)).save(folder / "photo.jpg", quality=90)
    (folder / "notes.jpg").write_text("not an image")
    return [str(p) for p in good] + [str(folder / "photo.jpg"), str(folder / "notes.jpg")]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_bundle_on_emulated_arm64_matches_x86(arm64, models: dict[str, Path], images: list[str], precision: str,
                                              tmp_path: Path) -> None:
    script, env = arm64
    if precision not in models:
        pytest.skip("edgecnn.export.quantize is not present: no INT8 model to bundle")
    assert env.versions["machine"] == "aarch64" and env.versions["python"].startswith("3.11")
    bundle = deploy(models[precision], tmp_path / "bundle").out_dir
    report = script.check_bundle(bundle, images, env=env)
    assert report["ok"], report["problems"]
    print(f"{precision}: emulated {report['seconds']['arm64_emulated']} s, max prob diff {report['max_prob_diff']:.2e}")
    assert report["exit_code"] == {"x86": 1, "arm64": 1}  # notes.jpg is not an image
    assert report["files"] == len(images) and report["failed_files"] == 1
    # And against `edgecnn classify images` itself, not only the bundle run natively.
    ref = CliRunner().invoke(cli, ["classify", "images", "-m", str(models[precision]), *images, "--json", "--top-k", "3"])
    reference = [json.loads(line) for line in ref.stdout.splitlines()]
    assert script.compare(reference, report["results"]) == []


def test_missing_environment_is_reported_not_built(arm64, tmp_path: Path) -> None:
    script, _ = arm64
    with pytest.raises(script.Unavailable, match="no built environment"):
        script.ensure_env(tmp_path / "empty-cache", install=False)


def test_bundle_serves_on_emulated_arm64(arm64, models: dict[str, Path], images: list[str], tmp_path: Path) -> None:
    """`app.pyz --serve` under emulation, with requirements-serve.txt's aarch64 (pure-Python) wheels: healthy,
    the answers of `classify images --json`, a 400 for the bad file, exit 0 on SIGTERM."""
    script, env = arm64
    try:
        env = script.with_serve(env)
    except script.Unavailable as exc:
        if os.environ.get("EDGECNN_REQUIRE_ARM64"):
            pytest.fail(f"the serve requirements cannot be installed for ARM64: {exc}")
        pytest.skip(f"the serve requirements cannot be installed for ARM64 here: {exc}")
    bundle = deploy(models["fp32"], tmp_path / "bundle").out_dir
    report = script.check_serve(bundle, images, env=env)
    print(f"serve on emulated arm64: started in {report['startup_s']} s")
    assert report["health"] == {"status": "ok"} and report["metrics"]
    assert report["exit_code"] == 0 and not report["traceback"]
    ref = CliRunner().invoke(cli, ["classify", "images", "-m", str(models["fp32"]), *images, "--json", "--top-k", "3"])
    reference = [json.loads(line) for line in ref.stdout.splitlines()]
    assert [a["path"] for a in report["answers"] if "error" in a] == [r["path"] for r in reference if "error" in r]
    assert all(a["status"] == 400 for a in report["answers"] if "error" in a)
    good = [a for a in report["answers"] if "error" not in a]
    assert script.compare([r for r in reference if "error" not in r], good) == []
