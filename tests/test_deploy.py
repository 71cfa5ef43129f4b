"""`edgecnn deploy`: the bundle's contents, its refusals, and app.pyz run by a Python that has only
onnxruntime, numpy and Pillow, answering exactly as `edgecnn classify images` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecnn.cli import cli
from edgecnn.deploy import MANIFEST_FILE, DeployError, build_app, deploy, verify_bundle

# What a board gets from `pip install -r requirements.txt`, as far as the runtime imports it.
PLAIN_PACKAGES = ("numpy", "numpy.libs", "PIL", "pillow.libs", "onnxruntime")


@pytest.fixture(scope="module")
def onnx_model(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgecnn.export import export_onnx

    out = tmp_path_factory.mktemp("deploy_model") / "model.onnx"
    export_onnx(checkpoint, out)
    return out


@pytest.fixture(scope="module")
def bundle(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return deploy(onnx_model, tmp_path_factory.mktemp("bundles") / "shapes-bundle", name="shapes").out_dir


@pytest.fixture(scope="module")
def plain_python(make_venv) -> str:
    """A fresh venv (no pip) whose site-packages holds only onnxruntime, numpy and Pillow (symlinked)."""
    return make_venv("plain", PLAIN_PACKAGES)[0]


@pytest.fixture(scope="module")
def images(shapes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Good PNGs, a JPEG, and one of each bad kind: not an image, empty, truncated, missing."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("deploy_images")
    good = sorted((shapes_dir / "val").rglob("*.png"))[::6][:5]
    Image.open(good[0]).convert("RGB").resize((96, 64)).save(folder / "photo.jpg", quality=90)
    (folder / "notes.jpg").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    (folder / "cut.png").write_bytes(good[1].read_bytes()[:60])
    return [str(p) for p in good] + [str(folder / n) for n in ("photo.jpg", "notes.jpg", "empty.png", "cut.png", "gone.png")]


def run_app(python: str, bundle: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "EDGECNN"))}
    return subprocess.run([python, str(bundle / "app.pyz"), *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd or bundle.parent, env=env)


def test_bundle_contents(bundle: Path, checkpoint: Path) -> None:
    from edgecnn.checkpoint import load_checkpoint

    names = {p.name for p in bundle.iterdir()}
    assert names == {"model.onnx", "app.pyz", "requirements.txt", "requirements-camera.txt", "requirements-serve.txt", "README.md",
                     "shapes.service", "bundle.json", MANIFEST_FILE}
    assert verify_bundle(bundle) == []
    listed = {line.split("  ")[1] for line in (bundle / MANIFEST_FILE).read_text().splitlines()}
    assert listed == names - {MANIFEST_FILE}  # sha256sum -c format, every other file
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["labels"] == list(load_checkpoint(checkpoint).spec.labels) and info["precision"] == "fp32"
    reqs = (bundle / "requirements.txt").read_text()
    assert "onnxruntime>=1.22" in reqs and "numpy" in reqs and "pillow" in reqs and "opencv" not in reqs
    assert "opencv-python-headless" in (bundle / "requirements-camera.txt").read_text()
    readme = (bundle / "README.md").read_text()
    for needle in ("python3 -m venv", "systemctl enable", "64-bit", "Python >= 3.11", "Illegal instruction",
                   "--source picamera", "sha256sum -c SHA256SUMS", "qemu"):
        assert needle in readme, needle
    assert "ExecStart=/opt/shapes/venv/bin/python /opt/shapes/app.pyz --camera" in (bundle / "shapes.service").read_text()
    with zipfile.ZipFile(bundle / "app.pyz") as zf:
        members = set(zf.namelist())
    assert "__main__.py" in members and "edgecnn_runtime/app.py" in members and "edgecnn_runtime/classifier.py" in members
    assert not any("click" in m or "torch" in m for m in members)
    assert os.access(bundle / "app.pyz", os.X_OK)
    # The manifest catches a changed file.
    (bundle / "requirements.txt").write_text(reqs + "torch\n")
    try:
        assert verify_bundle(bundle) == ["requirements.txt: checksum differs"]
    finally:
        (bundle / "requirements.txt").write_text(reqs)


def test_app_is_reproducible(tmp_path: Path) -> None:
    a, b = build_app(tmp_path / "a.pyz"), build_app(tmp_path / "b.pyz")
    assert a.read_bytes() == b.read_bytes()


def test_plain_python_has_only_the_runtime_packages(plain_python: str) -> None:
    probe = ("import importlib.util as u; import onnxruntime, numpy, PIL; "
             "print([m for m in ('torch', 'onnx', 'click', 'edgecnn', 'cv2', 'onnxscript') if u.find_spec(m)])")
    # cwd away from the repository: `-c` puts the current folder on sys.path.
    out = subprocess.run([plain_python, "-c", probe], capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ["PATH"]}, cwd=Path(plain_python).parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("extra", [[], ["--top-k", "2", "--min-confidence", "0.9"]])
def test_bundle_matches_classify_images(bundle: Path, onnx_model: Path, plain_python: str, images: list[str],
                                        extra: list[str]) -> None:
    """Same JSON lines (predictions, uncertainty, error messages), same table, same exit code."""
    for fmt in (["--json"], []):
        app = run_app(plain_python, bundle, *images, *fmt, *extra)
        ref = CliRunner().invoke(cli, ["classify", "images", "-m", str(onnx_model), *images, *fmt, *extra])
        assert "Traceback" not in app.stderr, app.stderr
        assert app.returncode == ref.exit_code == 1  # some files are bad
        assert app.stdout.splitlines() == ref.stdout.splitlines()
    lines = [json.loads(line) for line in app_json(plain_python, bundle, images, extra).splitlines()]
    assert [("error" in r) for r in lines] == [False] * 6 + [True] * 4
    assert all(r["error"].startswith(r["path"] + ": ") for r in lines if "error" in r)
    if "--min-confidence" in extra:
        assert all(r["uncertain"] for r in lines if "top" in r) and all(len(r["top"]) == 2 for r in lines if "top" in r)


def app_json(python: str, bundle: Path, images: list[str], extra: list[str]) -> str:
    return run_app(python, bundle, *images, "--json", *extra).stdout


def test_bundle_finds_its_model_and_exits_zero(bundle: Path, plain_python: str, images: list[str], tmp_path: Path) -> None:
    out = run_app(plain_python, bundle, *images[:3], "--json", cwd=tmp_path)  # run from elsewhere, no -m
    assert out.returncode == 0, out.stderr
    assert f"model {bundle.resolve() / 'model.onnx'} (fp32" in out.stderr
    assert len(out.stdout.splitlines()) == 3


def test_bundle_errors_are_one_line(bundle: Path, plain_python: str, images: list[str], tmp_path: Path) -> None:
    missing = run_app(plain_python, bundle, images[0], "-m", str(tmp_path / "nope.onnx"))
    assert missing.returncode == 1 and missing.stderr.strip() == f"Error: {tmp_path / 'nope.onnx'}: no such model file"
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07junk")
    junk = run_app(plain_python, bundle, images[0], "-m", str(tmp_path / "junk.onnx"))
    assert junk.returncode == 1 and junk.stderr.startswith("Error: ") and "Traceback" not in junk.stderr
    usage = run_app(plain_python, bundle)
    assert usage.returncode == 2 and "give one or more IMAGE paths, or --camera" in usage.stderr
    bad_option = run_app(plain_python, bundle, images[0], "--top-k", "0")
    assert bad_option.returncode == 2 and "--top-k" in bad_option.stderr
    # No OpenCV in the plain venv: --camera says what to install, in one line.
    camera = run_app(plain_python, bundle, "--camera", "--source", "clip.avi")
    assert camera.returncode == 1 and camera.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "opencv" in camera.stderr.lower() and "Traceback" not in camera.stderr


def test_bundle_without_requirements_says_what_to_install(bundle: Path, images: list[str], tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True, capture_output=True)
    bare = str(tmp_path / "bare" / "bin" / "python")
    assert run_app(bare, bundle, "--help").returncode == 0  # argparse only: --help works before any install
    out = run_app(bare, bundle, images[0])
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("Error: the Python package ") and "pip install -r requirements.txt" in out.stderr


# `app.pyz --serve` needs these beside PLAIN_PACKAGES: requirements-serve.txt's packages and their dependencies.
SERVE_PACKAGES = ("starlette", "uvicorn", "prometheus_client", "python_multipart", "multipart", "anyio", "sniffio",
                  "idna", "h11", "click", "typing_extensions.py")


def test_requirements_serve_has_the_serve_extra_bounds(bundle: Path) -> None:
    import tomllib

    extra = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["serve"]
    lines = (bundle / "requirements-serve.txt").read_text().splitlines()
    assert sorted(line for line in lines if line and not line.startswith(("#", "-r"))) == sorted(extra)
    assert "-r requirements.txt" in lines
    assert "--serve" in (bundle / "shapes.service").read_text() and "requirements-serve.txt" in (bundle / "README.md").read_text()


@pytest.mark.slow
def test_bundle_serves_over_http(bundle: Path, onnx_model: Path, images: list[str], make_venv, tmp_path: Path) -> None:
    """`app.pyz --serve` in a venv holding only the runtime's and the serve requirements' packages: the same
    endpoints and answers as `edgecnn serve` (and as `classify images --json`)."""
    import http.client
    import signal
    import time

    python = make_venv("serve", PLAIN_PACKAGES + SERVE_PACKAGES)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "EDGECNN"))}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([python, str(bundle / "app.pyz"), "--serve", "--port", "0"], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while "startup complete" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        port = int(log.read_text().split("http://127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/healthz")
        assert json.loads(conn.getresponse().read()) == {"status": "ok"}
        for path in images:
            ref = CliRunner().invoke(cli, ["classify", "images", "-m", str(onnx_model), path, "--json"])
            expected = json.loads(ref.stdout.splitlines()[0])
            conn.request("POST", "/v1/classify", body=Path(path).read_bytes() if Path(path).is_file() else b"",
                         headers={"Content-Type": "application/octet-stream"})
            response = conn.getresponse()
            answer = json.loads(response.read())
            if "error" in expected:
                assert response.status == 400 and answer["error"], (path, answer)
            else:
                assert response.status == 200 and answer == {k: v for k, v in expected.items() if k != "path"}, path
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200 and b"/v1/classify" in response.read()  # the page came out of app.pyz
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0 and "Traceback" not in log.read_text()
    # Without the serve packages: one line that names requirements-serve.txt.
    plain = make_venv("plain_no_serve", PLAIN_PACKAGES)[0]
    missing = run_app(plain, bundle, "--serve", "--port", "0")
    assert missing.returncode == 1 and "requirements-serve.txt" in missing.stderr and "Traceback" not in missing.stderr


def test_bundle_camera_reads_a_video(bundle: Path, shapes_dir: Path, tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    import numpy as np
    from PIL import Image

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    frame = np.asarray(Image.open(sorted((shapes_dir / "val").rglob("*.png"))[0]).convert("RGB"))[:, :, ::-1]
    for _ in range(6):
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    out = run_app(sys.executable, bundle, "--camera", "--source", str(video), "--max-frames", "4", "--json")
    assert out.returncode == 0, out.stderr
    frames = [json.loads(line) for line in out.stdout.splitlines()]
    assert [f["frame"] for f in frames] == [0, 1, 2, 3]
    assert {"frame", "top", "margin", "uncertain", "fps", "latency_ms"} <= set(frames[0])
    assert "4 frames classified" in out.stderr


def test_deploy_refuses_a_model_that_does_not_load(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(DeployError, match="refusing to bundle .*bad.onnx"):
        deploy(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.onnx"]  # no temporary folder left behind


def test_deploy_needs_force_and_replaces_only_bundles(onnx_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    deploy(onnx_model, out)
    (out / "stale.txt").write_text("from an older bundle")
    with pytest.raises(DeployError, match="--force"):
        deploy(onnx_model, out)
    assert (out / "stale.txt").exists()
    result = deploy(onnx_model, out, force=True)
    assert not (out / "stale.txt").exists() and verify_bundle(out) == [] and result.name == "b"
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_text("precious")
    with pytest.raises(DeployError, match="not an edgecnn bundle"):
        deploy(onnx_model, other, force=True)
    assert (other / "keep.jpg").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "photos"]
    with pytest.raises(DeployError, match="bundle name"):
        deploy(onnx_model, tmp_path / "c", name="../evil")


def test_deploy_cli(onnx_model: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["deploy", str(onnx_model), "-o", str(tmp_path / "pi"), "--json"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["name"] == "pi" and "app.pyz" in report["files"] and report["size_bytes"] > 0
    again = runner.invoke(cli, ["deploy", str(onnx_model), "-o", str(tmp_path / "pi")])
    assert again.exit_code == 1 and "--force" in again.output and "Traceback" not in again.output
    forced = runner.invoke(cli, ["deploy", str(onnx_model), "-o", str(tmp_path / "pi"), "--force", "--name", "shapes"])
    assert forced.exit_code == 0 and "wrote" in forced.stdout and (tmp_path / "pi" / "shapes.service").exists()
    assert "Examples" in runner.invoke(cli, ["deploy", "--help"]).stdout
