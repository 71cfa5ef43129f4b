"""The serve page in a real browser (Debian's chromium + chromium-driver through selenium): load /, upload an
image through the file input, and see the right label, probabilities and verdict band."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_runtime import COLOURS, SPEC, make_model
from test_serve import running

pytest.importorskip("starlette")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install 'edgecnn[dev]')")

CHROMIUM = os.environ.get("EDGECNN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("EDGECNN_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOT = os.environ.get("EDGECNN_SCREENSHOT")  # save the page as a PNG here (to look at it)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
                       reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                              "apt-get install chromium chromium-driver"),
]


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="edgecnn-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1200,900"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as exc:  # a chromium that cannot start here (no shared memory, missing libraries)
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"chromium did not start: {str(exc).splitlines()[0]}")
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    from edgecnn.runtime import Classifier

    return Classifier(make_model(tmp_path_factory.mktemp("browser_model") / "tiny.onnx", spec=SPEC), device="cpu")


def wait_for(driver, css: str, timeout: float = 20.0):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css)))


@pytest.mark.parametrize("colour", ["blue", "mixed"])
def test_upload_shows_the_label_bars_and_verdict(browser, clf, colour: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    from edgecnn.runtime.decode import verdict

    image = tmp_path / f"{colour}.png"
    if colour == "mixed":  # half green, half blue: an answer that is not confident
        pixels = np.zeros((48, 64, 3), np.uint8)
        pixels[:, :32] = COLOURS["green"]
        pixels[:, 32:] = COLOURS["blue"]
        Image.fromarray(pixels).save(image)
    else:
        Image.new("RGB", (64, 48), COLOURS[colour]).save(image)
    probs = clf.predict_pixels(clf.preprocess(str(image))[None])[0]
    expected_label = clf.labels[int(probs.argmax())]
    expected_verdict = verdict(probs)
    with running(_app(clf)) as base:
        browser.get(f"http://{base}/")
        card = wait_for(browser, "#card table")
        assert "tiny.onnx" in card.text and "fp32" in card.text and "16×16" in card.text
        assert all(label in card.text for label in ("red", "green", "blue"))
        browser.find_element(By.ID, "file").send_keys(str(image))
        top = wait_for(browser, "#result .top-label")
        band = browser.find_element(By.ID, "result-verdict")
        shown = {"label": top.text, "verdict": band.get_attribute("data-verdict"), "band": band.text,
                 "bars": len(browser.find_elements(By.CSS_SELECTOR, "#result .bar"))}
        if SCREENSHOT and colour == "mixed":
            browser.save_screenshot(SCREENSHOT)
    print(json.dumps(shown))
    assert shown["label"] == expected_label
    assert shown["verdict"] == expected_verdict  # the page's band follows runtime.decode.verdict
    assert shown["band"].startswith(expected_verdict.upper() + ": " + expected_label)
    assert shown["bars"] == 3


def test_live_camera_view(browser, clf, tmp_path: Path) -> None:
    """--camera: the page shows the frames, the top-3 bars, the verdict band and the FPS, pushed by the server."""
    cv2 = pytest.importorskip("cv2")
    from selenium.webdriver.common.by import By

    from edgecnn.runtime.serve.app import create_app
    from edgecnn.runtime.serve.camera import CameraFeed
    from edgecnn.runtime.serve.options import ServeOptions

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(10):
        writer.write(np.full((48, 64, 3), COLOURS["red"][::-1], np.uint8))  # OpenCV writes BGR
    writer.release()
    with running(create_app(clf, ServeOptions(camera=str(video)), camera=CameraFeed(clf, str(video)))) as base:
        browser.get(f"http://{base}/")
        wait_for(browser, "#live-band")
        browser.find_element(By.CSS_SELECTOR, "#live-bars .top-label")  # the bars are drawn
        # Read in one go: the frames keep coming and the bars are redrawn with each.
        shown = browser.execute_script("""return {
            band: document.getElementById("live-band").textContent,
            fps: document.getElementById("live-fps").textContent,
            frame: document.getElementById("live-frame").src.slice(0, 23),
            labels: [...document.querySelectorAll("#live-bars .label")].map((e) => e.textContent),
            snapshot: !document.getElementById("snapshot").disabled};""")
        if SCREENSHOT:
            browser.save_screenshot(str(Path(SCREENSHOT).with_suffix(".live.png")))
    print(json.dumps(shown))
    assert shown["band"] == "CONFIDENT: red" and shown["labels"][0] == "red" and len(shown["labels"]) == 3
    assert shown["fps"].endswith(" fps") and float(shown["fps"].split()[0]) > 0
    assert shown["frame"] == "data:image/jpeg;base64," and shown["snapshot"]


def _app(clf):
    from edgecnn.runtime.serve.app import create_app

    return create_app(clf)
