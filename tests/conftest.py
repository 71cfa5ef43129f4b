"""Shared fixtures: a small synthetic dataset and a tiny model trained on it once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 60 images (48 train / 12 val each), 32x32 PNGs."""
    from edgecnn.synth import synthesize

    root = tmp_path_factory.mktemp("shapes")
    synthesize(root, classes=3, per_class=60, size=32, seed=0)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, shapes_dir: Path) -> Path:
    """A run folder of tinycnn trained for a few seconds: best.pt, last.pt, metrics.json, curves.png."""
    from edgecnn.train import TrainConfig, train

    run = tmp_path_factory.mktemp("run") / "tiny"
    train(shapes_dir, run, TrainConfig(arch="tinycnn", img_size=32, epochs=4, batch_size=16, lr=5e-3, device="cpu"),
          progress=False)
    return run


@pytest.fixture(scope="session")
def checkpoint(trained_run: Path) -> Path:
    return trained_run / "best.pt"


@pytest.fixture(scope="session")
def make_venv(tmp_path_factory: pytest.TempPathFactory):
    """Factory: ``make_venv(name, packages) -> (python, site_packages)``, a fresh venv without pip whose
    site-packages holds only ``packages`` (names of top-level folders in our own site-packages, symlinked)."""
    import subprocess
    import sys
    import sysconfig

    def make(name: str, packages: tuple[str, ...]) -> tuple[str, Path]:
        venv = tmp_path_factory.mktemp(name) / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
        python = str(venv / "bin" / "python")
        site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
        ours = Path(sysconfig.get_paths()["purelib"])
        for package in packages:
            if (ours / package).exists():
                (site / package).symlink_to(ours / package)
        return python, site

    return make


@pytest.fixture(scope="session", autouse=True)
def _image_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """Training caches decoded images (edgecnn.cache): keep the tests' cache out of the user's home folder.
    Set in the environment, so that the training subprocesses the tests start use it too."""
    import os

    before = os.environ.get("EDGECNN_CACHE_DIR")
    os.environ["EDGECNN_CACHE_DIR"] = str(tmp_path_factory.mktemp("image-cache"))
    yield
    if before is None:
        os.environ.pop("EDGECNN_CACHE_DIR", None)
    else:
        os.environ["EDGECNN_CACHE_DIR"] = before
