"""`edgecnn serve` over real HTTP on loopback: every endpoint and error code, micro-batching, the camera view,
a bounded load test with hostile bodies, and SIGTERM with requests in flight."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_preprocess import _bomb_png
from test_runtime import COLOURS, LABELS, SPEC, make_model

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from edgecnn.cli import cli  # noqa: E402
from edgecnn.runtime import Classifier  # noqa: E402
from edgecnn.runtime.decode import AMBIGUOUS_MARGIN, DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN  # noqa: E402
from edgecnn.runtime.serve.app import create_app  # noqa: E402
from edgecnn.runtime.serve.batcher import Batcher  # noqa: E402
from edgecnn.runtime.serve.options import ServeOptions  # noqa: E402
from edgecnn.runtime.serve.server import bind  # noqa: E402

KB = 1024


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("serve_model") / "tiny.onnx", spec=SPEC)


@pytest.fixture(scope="module")
def clf(model: Path) -> Classifier:
    return Classifier(model, device="cpu", threads=1)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve_photos")
    out = {}
    for name, rgb in COLOURS.items():
        out[name] = root / f"{name}.jpg"
        noise = np.random.default_rng(len(name)).integers(-20, 20, (48, 64, 3))
        Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)).save(out[name], quality=90)
    return out


@pytest.fixture(scope="module")
def bad_bodies(photos: dict[str, Path], tmp_path_factory) -> dict[str, tuple[bytes, str]]:
    """Each kind of unreadable or hostile body, with the phrase its 400 error must contain."""
    good = photos["red"].read_bytes()
    bomb = _bomb_png(tmp_path_factory.mktemp("bomb") / "bomb.png").read_bytes()
    return {
        "truncated": (good[: len(good) // 3], "unreadable image"),
        "not an image": (b"this is not an image\n" * 20, "not an image"),
        "bomb": (bomb, "decompression bomb"),
        "garbage": (os.urandom(3000), "not an image"),
    }


@contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; yields the base URL."""
    import uvicorn

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    app.state.service.stopping = lambda: server.should_exit  # as serve() does: live streams end on shutdown
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def call(base: str, method: str, path: str, body: bytes | None = None, *, headers: dict[str, str] | None = None,
         conn: http.client.HTTPConnection | None = None, chunks: list[bytes] | None = None) -> Reply:
    """One request; ``chunks`` sends the body chunked, without a Content-Length."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(base, timeout=30)
    try:
        if chunks is not None:
            conn.putrequest(method, path)
            for k, v in {"Transfer-Encoding": "chunked", **(headers or {})}.items():
                conn.putheader(k, v)
            conn.endheaders()
            for chunk in chunks:
                conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        if own:
            conn.close()


def post_image(base: str, data: bytes, query: str = "", content_type: str = "image/jpeg", **kw) -> Reply:
    return call(base, "POST", "/v1/classify" + query, data, headers={"Content-Type": content_type, **kw.pop("headers", {})},
                **kw)


def multipart(data: bytes, *, field: str = "file", content_type: str = "image/jpeg") -> tuple[bytes, str]:
    boundary = "edgecnn-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"x.jpg\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def cli_json(model: Path, path: Path, *extra: str) -> dict:
    """What `edgecnn classify images --json` prints for one file, less the path."""
    result = CliRunner().invoke(cli, ["classify", "images", str(path), "-m", str(model), "--json", *extra])
    assert result.exit_code == 0, result.output
    line = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    line.pop("path")
    return line


class Slow:
    """A classifier whose model takes ``delay`` seconds per call: to fill the queue and watch batches form."""

    def __init__(self, clf: Classifier, delay: float):
        self._clf, self.delay, self.calls = clf, delay, []

    def __getattr__(self, name: str):
        return getattr(self._clf, name)

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        self.calls.append(len(pixels))
        time.sleep(self.delay)
        return self._clf.predict_pixels(pixels)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        base, _, rest = key.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if base == name and got == want:
            return float(value)
    return 0.0


# ------------------------------------------------------------------------------------------- endpoints
def test_endpoints_and_the_page(clf: Classifier, photos: dict[str, Path]) -> None:
    with running(create_app(clf, load_seconds=0.25)) as base:
        assert call(base, "GET", "/healthz").json() == {"status": "ok"}
        card = call(base, "GET", "/v1/model").json()
        assert card["labels"] == list(LABELS) and card["input_size"] == SPEC.size and card["classes"] == 3
        assert (card["layout"], card["dtype"], card["precision"]) == ("NHWC", "uint8", "fp32")
        assert card["size_bytes"] == clf.path.stat().st_size and "edgecnn.spec" in card["metadata"]
        for name, path in photos.items():
            assert post_image(base, path.read_bytes()).json()["top"][0]["label"] == name
        page = call(base, "GET", "/")
        html = page.body.decode()
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        assert 'id="file"' in html and "/v1/classify" in html
        for external in ('src="http', "src='http", 'href="http', "url(http", "@import"):
            assert external not in html, f"the page must be self-contained: {external}"
        settings = json.loads(html.split('<script id="settings" type="application/json">')[1].split("</script>")[0])
        assert settings["verdict"] == {"min_confidence": DEFAULT_MIN_CONFIDENCE, "min_margin": DEFAULT_MIN_MARGIN,
                                       "ambiguous_margin": AMBIGUOUS_MARGIN, "names": ["confident", "unsure", "ambiguous"]}
        assert settings["camera"] is False and settings["token"] is False
        missing = call(base, "GET", "/nope")
        assert missing.status == 404 and "no such endpoint" in missing.json()["error"]
        wrong_method = call(base, "GET", "/v1/classify")
        assert wrong_method.status == 405 and "error" in wrong_method.json()
        no_camera = call(base, "GET", "/v1/camera/events")
        assert no_camera.status == 404 and "--camera" in no_camera.json()["error"]
        metrics = call(base, "GET", "/metrics")
        assert metrics.status == 200 and metrics.headers["content-type"].startswith("text/plain")
        text = metrics.body.decode()
    assert metric(text, "edgecnn_requests_total", route="/v1/classify", status="200") == 3
    assert metric(text, "edgecnn_requests_total", route="other", status="404") == 1
    assert metric(text, "edgecnn_request_seconds_count", route="/v1/classify") == 4  # with the 405
    assert metric(text, "edgecnn_batch_size_count") >= 1 and metric(text, "edgecnn_batch_size_sum") == 3
    assert metric(text, "edgecnn_model_load_seconds") == 0.25
    assert "edgecnn_queue_depth 0.0" in text


def test_answers_equal_classify_images_json(clf: Classifier, model: Path, photos: dict[str, Path], tmp_path) -> None:
    grey = tmp_path / "grey.png"
    Image.new("RGB", (40, 30), (128, 128, 128)).save(grey)  # an uncertain answer
    with running(create_app(clf)) as base:
        for path in [*photos.values(), grey]:
            expected = cli_json(model, path)
            assert post_image(base, path.read_bytes(), content_type="application/octet-stream").json() == expected
            body, ctype = multipart(path.read_bytes())
            assert post_image(base, body, content_type=ctype).json() == expected
            assert post_image(base, path.read_bytes(), content_type="").json() == expected  # no type: fine too
            options = ["--top-k", "2", "--min-confidence", "0.9", "--min-margin", "0.1"]
            assert (post_image(base, path.read_bytes(), "?top_k=2&min_confidence=0.9&min_margin=0.1").json()
                    == cli_json(model, path, *options))
        assert post_image(base, grey.read_bytes()).json()["uncertain"] is True


def test_bad_input_is_a_4xx_with_a_json_error(clf: Classifier, photos: dict[str, Path], bad_bodies) -> None:
    good = photos["green"].read_bytes()
    limit_kb = 24
    with running(create_app(clf, ServeOptions(max_body_mb=limit_kb / 1024))) as base:
        for kind, (data, phrase) in bad_bodies.items():
            reply = post_image(base, data, content_type="image/png")
            assert reply.status == 400 and phrase in reply.json()["error"], (kind, reply.body)
            body, ctype = multipart(data)
            assert post_image(base, body, content_type=ctype).status == 400, kind
        assert "empty body" in post_image(base, b"").json()["error"]
        for ctype in ("text/plain", "application/json", "application/x-www-form-urlencoded", "video/mp4"):
            reply = post_image(base, good, content_type=ctype)
            assert reply.status == 415 and ctype in reply.json()["error"], ctype
        body, ctype = multipart(good, content_type="text/plain")
        assert post_image(base, body, content_type=ctype).status == 415
        body, ctype = multipart(good, field="photo")
        reply = post_image(base, body, content_type=ctype)
        assert reply.status == 400 and "'file'" in reply.json()["error"]
        reply = post_image(base, b"--x\r\nbroken", content_type="multipart/form-data; boundary=x")
        assert reply.status == 400 and "error" in reply.json()
        for query in ("?top_k=0", "?top_k=abc", "?min_confidence=2", "?min_margin=x"):
            reply = post_image(base, good, query)
            assert reply.status == 400 and query[1:].split("=")[0] in reply.json()["error"], query

        # 413 from Content-Length, before reading; the same connection then serves the next request.
        big = os.urandom(40 * KB)
        conn = http.client.HTTPConnection(base, timeout=30)
        reply = post_image(base, big, conn=conn)
        assert reply.status == 413 and f"over the limit of {limit_kb * KB} bytes" in reply.json()["error"]
        assert post_image(base, good, conn=conn).json()["top"][0]["label"] == "green"
        conn.close()
        # 413 while streaming: a chunked body has no length to check first.
        reply = call(base, "POST", "/v1/classify", headers={"Content-Type": "image/jpeg"}, chunks=[big[:16 * KB]] * 3)
        assert reply.status == 413 and "over the limit" in reply.json()["error"]
        small = call(base, "POST", "/v1/classify", headers={"Content-Type": "image/jpeg"},
                     chunks=[good[:100], good[100:]])
        assert small.json()["top"][0]["label"] == "green"  # chunked under the limit is fine
        # A body that claims a gigabyte is refused at once, and the connection closed: nothing is read.
        with socket.create_connection(tuple(base.split(":"))) as raw:  # type: ignore[arg-type]
            raw.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                        b"Content-Length: 1000000000\r\n\r\n" + big[:1000])
            raw.settimeout(10)
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower()
        assert "over the limit" in json.loads(body)["error"]
        metrics = call(base, "GET", "/metrics").body.decode()
    assert metric(metrics, "edgecnn_requests_total", route="/v1/classify", status="500") == 0


def test_token(clf: Classifier, photos: dict[str, Path]) -> None:
    with running(create_app(clf, ServeOptions(token="s3cret-token"))) as base:
        good = photos["blue"].read_bytes()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"},
                        {"Authorization": "Bearer s3cret-token2"}):
            reply = post_image(base, good, headers=headers)
            assert reply.status == 401 and "Bearer" in reply.json()["error"], headers
            assert reply.headers["www-authenticate"].startswith("Bearer")
        for path in ("/v1/model", "/metrics", "/v1/camera"):
            assert call(base, "GET", path).status == 401, path
        auth = {"Authorization": "Bearer s3cret-token"}
        assert post_image(base, good, headers=auth).json()["top"][0]["label"] == "blue"
        assert call(base, "GET", "/v1/model", headers=auth).status == 200
        assert call(base, "GET", "/healthz").status == 200  # probes need no token
        page = call(base, "GET", "/")  # the page is public: it asks for the token
        assert page.status == 200 and '"token": true' in page.body.decode() and "s3cret" not in page.body.decode()


def test_full_queue_answers_503_with_retry_after(clf: Classifier, photos: dict[str, Path]) -> None:
    slow = Slow(clf, delay=0.4)
    good = photos["red"].read_bytes()
    with running(create_app(slow, ServeOptions(max_queue=2, max_batch=1))) as base:
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: post_image(base, good), range(8)))
        statuses = Counter(r.status for r in replies)
        assert set(statuses) == {200, 503} and statuses[200] >= 2, statuses
        for reply in replies:
            if reply.status == 503:
                assert reply.headers["retry-after"] == "1" and "--max-queue 2" in reply.json()["error"]
            else:
                assert reply.json()["top"][0]["label"] == "red"
        assert post_image(base, good).status == 200  # drained: accepted again
        text = call(base, "GET", "/metrics").body.decode()
    assert metric(text, "edgecnn_rejected_total") == statuses[503]
    assert metric(text, "edgecnn_requests_total", route="/v1/classify", status="503") == statuses[503]


def test_concurrent_requests_are_batched(clf: Classifier, photos: dict[str, Path]) -> None:
    images = [photos[name].read_bytes() for name in LABELS] * 6
    for max_batch in (8, 1):
        slow = Slow(clf, delay=0.05)
        with running(create_app(slow, ServeOptions(max_batch=max_batch, max_wait_ms=20))) as base:
            with ThreadPoolExecutor(18) as pool:
                replies = list(pool.map(lambda data: post_image(base, data), images))
        assert [r.json()["top"][0]["label"] for r in replies] == list(LABELS) * 6  # each its own answer
        assert sum(slow.calls) == len(images) and max(slow.calls) <= max_batch
        if max_batch == 1:
            assert set(slow.calls) == {1}
        else:
            assert len(slow.calls) <= len(images) // 2, slow.calls  # batches formed


def test_a_lone_request_does_not_wait_for_a_batch() -> None:
    """max_wait applies only while other requests are on their way (announced with expect)."""
    batcher = Batcher(lambda x: x.reshape(len(x), -1)[:, :2].astype(np.float32), max_batch=8, max_wait_s=1.0)
    try:
        start = time.perf_counter()
        batcher.submit(np.zeros((2, 2, 3), np.uint8)).result(5)
        assert time.perf_counter() - start < 0.5
        batcher.expect()  # one more is coming: the first waits for it (up to max_wait)
        first = batcher.submit(np.ones((2, 2, 3), np.uint8))
        time.sleep(0.2)
        assert not first.done()
        second = batcher.submit(np.full((2, 2, 3), 2, np.uint8), expected=True)
        assert first.result(5)[0] == 1 and second.result(5)[0] == 2
        batcher.expect()
        lonely = batcher.submit(np.zeros((2, 2, 3), np.uint8))
        batcher.withdraw()  # the announced one failed to decode: stop waiting for it
        assert lonely.result(0.5) is not None
    finally:
        batcher.close()


def test_camera_live_view(clf: Classifier, tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    from edgecnn.runtime.serve.camera import CameraFeed

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(6):
        writer.write(np.full((48, 64, 3), COLOURS["green"][::-1], np.uint8))  # OpenCV writes BGR
    writer.release()
    feed = CameraFeed(clf, str(video))
    with running(create_app(clf, ServeOptions(camera=str(video)), camera=feed)) as base:
        conn = http.client.HTTPConnection(base, timeout=10)
        conn.request("GET", "/v1/camera/events")
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("content-type").startswith("text/event-stream")
        events = []
        while len(events) < 3:
            line = response.readline()
            if line.startswith(b"data: ") and b'"jpeg"' in line:
                events.append(json.loads(line[6:]))
        conn.close()
        for event in events:
            assert event["top"][0]["label"] == "green" and event["verdict"] == "confident"
            assert event["fps"] > 0 and len(event["top"]) == 3 and "video file" in event["source"]
            assert Image.open(io.BytesIO(__import__("base64").b64decode(event["jpeg"]))).size == (64, 48)
        assert events[1]["frame"] > events[0]["frame"]  # new frames, not the same one again
        status = call(base, "GET", "/v1/camera").json()
        assert status["frames"] >= 3 and status["error"] is None
        snap = call(base, "GET", "/v1/camera/snapshot")
        assert snap.status == 200 and snap.headers["x-edgecnn-label"] == "green"
        assert Image.open(io.BytesIO(snap.body)).format == "JPEG"
        assert '"camera": true' in call(base, "GET", "/").body.decode()


# ----------------------------------------------------------------------------------- the real process
def start_server(model: Path, tmp_path: Path, *args: str) -> tuple[subprocess.Popen, str, Path]:
    """`python -m edgecnn serve` on a free port; returns the process, its host:port and its log file."""
    log = tmp_path / f"serve-{time.monotonic_ns()}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edgecnn", "serve", "-m", str(model), "--port", "0", *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while True:
        text = log.read_text(errors="replace")
        if "startup complete" in text:
            port = text.split(" on http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
            return proc, f"127.0.0.1:{port}", log
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the server did not start:\n{text}")
        time.sleep(0.05)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_load_with_hostile_bodies(model: Path, photos: dict[str, Path], bad_bodies, tmp_path: Path) -> None:
    """~1000 requests from 32 threads, a fifth broken, hostile or oversized: every answer right, no 5xx, no
    dropped connection, resident memory flat, /healthz fine afterwards."""
    limit = 64 * KB
    proc, base, log = start_server(model, tmp_path, "--max-body-mb", str(limit / (1024 * KB)), "--max-queue", "64")
    good = {name: path.read_bytes() for name, path in photos.items()}
    cases: list[tuple[str, bytes, str, int]] = []  # (kind, body, content type, expected status)
    for name, data in good.items():
        cases.append((name, data, "image/jpeg", 200))
    for kind, (data, _) in bad_bodies.items():
        cases.append((kind, data, "image/png", 400))
    cases.append(("oversized", os.urandom(limit + 10 * KB), "image/jpeg", 413))
    cases.append(("oversized chunked", os.urandom(limit * 2), "image/jpeg", 413))
    cases.append(("text", b"hello", "text/plain", 415))
    plan = [cases[i % 3] for i in range(800)] + [cases[3 + i % (len(cases) - 3)] for i in range(200)]
    np.random.default_rng(0).shuffle(plan)  # type: ignore[arg-type]
    lock = threading.Lock()
    outcomes: Counter = Counter()
    problems: list[str] = []

    def worker(share: list) -> None:
        conn = http.client.HTTPConnection(base, timeout=30)
        for kind, data, ctype, expected in share:
            try:
                if kind == "oversized chunked":
                    reply = call(base, "POST", "/v1/classify", headers={"Content-Type": ctype}, conn=conn,
                                 chunks=[data[i:i + 16 * KB] for i in range(0, len(data), 16 * KB)])
                else:
                    reply = post_image(base, data, content_type=ctype, conn=conn)
            except (OSError, http.client.HTTPException) as exc:  # a dropped or reset connection
                with lock:
                    problems.append(f"{kind}: {type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(base, timeout=30)
                continue
            ok = reply.status == expected and reply.headers.get("content-type", "").startswith("application/json")
            if ok and expected == 200:
                ok = reply.json()["top"][0]["label"] == kind
            elif ok:
                ok = bool(reply.json().get("error"))
            with lock:
                outcomes[(kind, reply.status)] += 1
                if not ok:
                    problems.append(f"{kind}: {reply.status} {reply.body[:200]!r}")
            if reply.headers.get("connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection(base, timeout=30)
        conn.close()

    try:
        pid = proc.pid
        warm = [c for c in plan[:96]]
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(worker, [warm[i::32] for i in range(32)]))
        before = rss_kb(pid)
        outcomes.clear()
        start = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(worker, [plan[i::32] for i in range(32)]))
        seconds = time.perf_counter() - start
        after = rss_kb(pid)
        health = call(base, "GET", "/healthz")
        metrics = call(base, "GET", "/metrics").body.decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    print(f"{len(plan)} requests in {seconds:.1f} s ({len(plan) / seconds:.0f}/s); RSS {before / 1024:.1f} -> "
          f"{after / 1024:.1f} MB; {dict(outcomes)}")
    assert problems == [], problems[:10]
    assert sum(outcomes.values()) == len(plan)
    assert not any(status >= 500 for _, status in outcomes)
    assert health.status == 200 and health.json() == {"status": "ok"}
    assert after - before < 16 * 1024, f"resident memory grew {before / 1024:.1f} -> {after / 1024:.1f} MB"
    assert metric(metrics, "edgecnn_queue_depth") == 0
    assert code == 0 and "Traceback" not in log.read_text()


@pytest.mark.slow
def test_sigterm_finishes_requests_in_flight_and_exits_0(model: Path, photos: dict[str, Path], tmp_path: Path) -> None:
    proc, base, log = start_server(model, tmp_path)
    data = photos["blue"].read_bytes()
    host, port = base.split(":")
    try:
        # Two requests in flight when SIGTERM comes: their bodies are half sent.
        socks = [socket.create_connection((host, int(port))) for _ in range(2)]
        head = (f"POST /v1/classify HTTP/1.1\r\nHost: {base}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        for sock in socks:
            sock.sendall(head + data[: len(data) // 2])
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None, "the server quit with requests in flight"
        for sock in socks:
            sock.sendall(data[len(data) // 2:])
            sock.settimeout(10)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and answer.endswith(b"}"):
                    break
            sock.close()
            status, _, rest = answer.partition(b"\r\n")
            assert status.startswith(b"HTTP/1.1 200"), answer
            assert json.loads(rest.partition(b"\r\n\r\n")[2])["top"][0]["label"] == "blue"
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "Traceback" not in text and "Finished server process" in text


@pytest.mark.slow
def test_cli_errors_and_warnings(model: Path, tmp_path: Path) -> None:
    help_ = CliRunner().invoke(cli, ["serve", "--help"])
    assert help_.exit_code == 0 and "Examples" in help_.output and "/v1/classify" in help_.output
    missing = CliRunner().invoke(cli, ["serve", "-m", str(tmp_path / "nope.onnx")])
    assert missing.exit_code == 1 and "no such model file" in missing.output and "Traceback" not in missing.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = CliRunner().invoke(cli, ["serve", "-m", str(model), "--port", str(taken.getsockname()[1])])
    assert busy.exit_code == 1 and "choose another --port" in busy.output
    camera = CliRunner().invoke(cli, ["serve", "-m", str(model), "--port", "0", "--camera", str(tmp_path / "no.mp4")])
    assert camera.exit_code == 1 and ("no such video file" in camera.output or "OpenCV" in camera.output)
    proc, base, log = start_server(model, tmp_path, "--host", "0.0.0.0")
    try:
        text = log.read_text()
        warning = [line for line in text.splitlines() if line.startswith("warning:")]
        assert len(warning) == 1 and "--token" in warning[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_missing_serve_extra_is_one_line(model: Path) -> None:
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'starlette': raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edgecnn.cli import main\n"
        f"main(['serve', '-m', {str(model)!r}, '--port', '0'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "pip install 'edgecnn[serve]'" in out.stderr.strip().splitlines()[-1]
