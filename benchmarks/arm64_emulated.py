"""Run a deploy bundle's app.pyz on ARM64 under qemu-user emulation and check it answers as the x86 runtime does.

    python benchmarks/arm64_emulated.py                        # bundles edgecnn-demo/model.int8.onnx
    python benchmarks/arm64_emulated.py --model model.onnx --images data/shapes/val
    python benchmarks/arm64_emulated.py --bundle pi-bundle --images photos/ --json

No board is needed: Debian's qemu-user-static runs an aarch64 Python 3.11 unpacked from Debian's arm64
packages (the Python of Raspberry Pi OS Bookworm, 3.11.2), with aarch64 wheels of the bundle's
requirements from PyPI. The environment is built once into a cache folder (default
benchmarks/.cache/arm64; needs root, apt-get and network the first time) and reused after.

onnxruntime is held below 1.28 here: 1.30 and newer crash at import under qemu-user (CPU detection),
an artefact of emulation that says nothing about real boards.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / "benchmarks" / ".cache" / "arm64"
CACHE_ENV = "EDGECNN_ARM64_CACHE"  # overrides DEFAULT_CACHE (the test reads it too)
PYTHON = "python3.11"
# Python 3.11 and the shared libraries that it, numpy, Pillow and onnxruntime's wheels load.
DEB_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libstdc++6", "libgcc-s1",
    "zlib1g", "libexpat1", "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libcrypt1", "libuuid1", "libsqlite3-0",
)
ORT_EMULATION_CONSTRAINT = "onnxruntime<1.28"  # 1.30+ crash at import under qemu-user (emulation only)
WHEEL_PLATFORM = "manylinux_2_28_aarch64"  # Debian Bookworm / Raspberry Pi OS Bookworm have glibc 2.36
PROB_TOLERANCE = 1e-3  # ARM's and x86's float kernels round differently; labels must still agree exactly


class Unavailable(RuntimeError):
    """The emulated environment cannot be built here (no qemu, not root, no network); the message says which."""


@dataclass(frozen=True)
class Arm64Env:
    qemu: Path
    root: Path  # the unpacked arm64 Debian packages: root/usr/bin/python3.11, root/lib/ld-linux-aarch64.so.1
    site: Path  # aarch64 wheels installed with pip --target
    versions: dict
    extra_sites: tuple[Path, ...] = ()  # more wheel folders on PYTHONPATH (the serve requirements: with_serve())

    def command(self, *args: str) -> list[str]:
        return [str(self.qemu), "-L", str(self.root), str(self.root / "usr" / "bin" / PYTHON), *args]

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.update(PYTHONPATH=os.pathsep.join(map(str, (self.site, *self.extra_sites))), PYTHONNOUSERSITE="1",
                   QEMU_LD_PREFIX=str(self.root))
        return env

    def run(self, args: list[str], *, cwd: str | os.PathLike | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), cwd=cwd, env=self.environ(), capture_output=True, text=True,
                              timeout=timeout)


def _log(message: str) -> None:
    print(f"[arm64] {message}", file=sys.stderr, flush=True)


def _sh(cmd: list[str], *, cwd: Path | None = None, what: str, timeout: float = 600) -> str:
    """Run a setup step; a failure is Unavailable (network, permissions), with the tool's last line."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"{what}: {exc}") from None
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines()
                 if line.strip() and "is ignored: it is neither" not in line]
        raise Unavailable(f"{what} failed ({' '.join(cmd[:3])}...): {lines[-1] if lines else f'exit {proc.returncode}'}")
    return proc.stdout


def _can_install() -> str | None:
    """None when apt-get can run here; else why not."""
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        return "apt-get/dpkg not found (the emulated check needs a Debian-family system)"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "not root: apt-get install qemu-user-static and dpkg --add-architecture arm64 need root"
    return None


def find_qemu(*, install: bool) -> Path:
    found = shutil.which("qemu-aarch64-static")
    if found:
        return Path(found)
    why = _can_install() if install else "qemu-aarch64-static is not installed and installing was not allowed"
    if why:
        raise Unavailable(f"qemu-aarch64-static is not installed and cannot be installed: {why}")
    _log("installing qemu-user-static with apt-get")
    _sh(["apt-get", "update", "-q"], what="apt-get update")
    _sh(["apt-get", "install", "-y", "-q", "--no-install-recommends", "qemu-user-static"], what="apt-get install qemu-user-static")
    found = shutil.which("qemu-aarch64-static")
    if not found:
        raise Unavailable("qemu-user-static installed but qemu-aarch64-static is not on PATH")
    return Path(found)


def _build_root(root: Path, debs: Path) -> None:
    why = _can_install()
    if why:
        raise Unavailable(f"cannot fetch arm64 Debian packages: {why}")
    if "arm64" not in _sh(["dpkg", "--print-foreign-architectures"], what="dpkg").split():
        _log("dpkg --add-architecture arm64")
        _sh(["dpkg", "--add-architecture", "arm64"], what="dpkg --add-architecture arm64")
        _sh(["apt-get", "update", "-q"], what="apt-get update (arm64 lists)")
    debs.mkdir(parents=True, exist_ok=True)
    try:
        _sh(["apt-get", "download", "-q", *[f"{p}:arm64" for p in DEB_PACKAGES]], cwd=debs, what="apt-get download")
    except Unavailable:
        _sh(["apt-get", "update", "-q"], what="apt-get update")  # stale lists: versions that are gone
        _sh(["apt-get", "download", "-q", *[f"{p}:arm64" for p in DEB_PACKAGES]], cwd=debs, what="apt-get download")
    tmp = Path(tempfile.mkdtemp(prefix="root.", dir=root.parent))
    for deb in sorted(debs.glob("*.deb")):
        _sh(["dpkg", "-x", str(deb), str(tmp)], what=f"dpkg -x {deb.name}")
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)


def _install_wheels(site: Path, requirements: str) -> None:
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
        raise Unavailable(f"pip is not available to {sys.executable}; it downloads the aarch64 wheels")
    work = Path(tempfile.mkdtemp(prefix="wheels.", dir=site.parent))
    try:
        (work / "requirements.txt").write_text(requirements)
        (work / "constraints.txt").write_text(ORT_EMULATION_CONSTRAINT + "\n")
        target = work / "site"
        _sh([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile",
             "--target", str(target), "--platform", WHEEL_PLATFORM, "--only-binary=:all:", "--python-version", "3.11",
             "--implementation", "cp", "-r", str(work / "requirements.txt"), "-c", str(work / "constraints.txt")],
            what="pip install of the aarch64 wheels")
        if site.exists():
            shutil.rmtree(site)
        target.rename(site)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_env(cache: str | os.PathLike | None = None, *, install: bool = True) -> Arm64Env:
    """The emulated aarch64 Python with onnxruntime, numpy and Pillow; built into ``cache`` on first use.

    Raises Unavailable when it is missing and cannot be built here.
    """
    from edgecnn.deploy import REQUIREMENTS

    cache = Path(cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    root, site, stamp = cache / "root", cache / "site", cache / "READY.json"
    qemu = find_qemu(install=install)
    if stamp.is_file() and json.loads(stamp.read_text()).get("requirements") == REQUIREMENTS:
        return Arm64Env(qemu, root, site, json.loads(stamp.read_text())["versions"])
    if not install:
        raise Unavailable(f"{cache} holds no built environment and installing was not allowed")
    start = time.perf_counter()
    if not (root / "usr" / "bin" / PYTHON).is_file():
        _log(f"unpacking arm64 Debian packages into {root}")
        _build_root(root, cache / "debs")
    _log(f"installing aarch64 wheels into {site}")
    _install_wheels(site, REQUIREMENTS)
    env = Arm64Env(qemu, root, site, {})
    probe = env.run(["-c", "import json, platform, sys, numpy, PIL, onnxruntime; print(json.dumps({'machine': "
                           "platform.machine(), 'python': platform.python_version(), 'numpy': numpy.__version__, "
                           "'pillow': PIL.__version__, 'onnxruntime': onnxruntime.__version__}))"], timeout=300)
    if probe.returncode != 0:
        raise RuntimeError(f"the emulated Python cannot import the runtime's packages: {probe.stderr.strip()[-2000:]}")
    versions = json.loads(probe.stdout.strip().splitlines()[-1])
    stamp.write_text(json.dumps({"requirements": REQUIREMENTS, "versions": versions}, indent=2) + "\n")
    _log(f"built in {time.perf_counter() - start:.0f} s: {versions}")
    return Arm64Env(qemu, root, site, versions)


def with_serve(env: Arm64Env, cache: str | os.PathLike | None = None, *, install: bool = True) -> Arm64Env:
    """``env`` plus the bundle's requirements-serve.txt (pure-Python wheels), for `app.pyz --serve`.

    Installed once into ``cache``/site-serve beside the base environment; Unavailable when that cannot be done.
    """
    from edgecnn.deploy import REQUIREMENTS_SERVE

    cache = Path(cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    site, stamp = cache / "site-serve", cache / "SERVE_READY.json"
    wanted = "".join(line + "\n" for line in REQUIREMENTS_SERVE.splitlines() if not line.startswith("-r "))
    if not (stamp.is_file() and json.loads(stamp.read_text()).get("requirements") == wanted):
        if not install:
            raise Unavailable(f"{cache} holds no serve packages and installing was not allowed")
        _log(f"installing the serve requirements (aarch64, pure Python) into {site}")
        _install_wheels(site, wanted)
        stamp.write_text(json.dumps({"requirements": wanted}, indent=2) + "\n")
    return dataclasses.replace(env, extra_sites=(*env.extra_sites, site))


def check_serve(bundle: str | os.PathLike, images: list[str], *, env: Arm64Env, timeout: float = 240) -> dict:
    """Run ``bundle``/app.pyz --serve under emulation, POST ``images``, SIGTERM it; report the answers and exit code.

    ``env`` must hold the serve requirements (with_serve). Each answer is the JSON body of /v1/classify, or
    ``{"status": N, "error": ...}`` for a refused image.
    """
    import http.client
    import signal

    app = str(Path(bundle).resolve() / "app.pyz")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serve.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(env.command(app, "--serve", "--port", "0"), env=env.environ(), stdout=out,
                                    stderr=subprocess.STDOUT, cwd=tmp)
        start = time.perf_counter()
        try:
            while "startup complete" not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.perf_counter() - start > timeout:
                    raise RuntimeError(f"app.pyz --serve did not start under emulation: {log.read_text()[-1500:]}")
                time.sleep(0.2)
            started_s = time.perf_counter() - start
            port = int(log.read_text().split("http://127.0.0.1:")[1].split("/")[0])
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            conn.request("GET", "/healthz")
            health = json.loads(conn.getresponse().read())
            answers = []
            for path in images:
                conn.request("POST", "/v1/classify?top_k=3", body=Path(path).read_bytes(),
                             headers={"Content-Type": "application/octet-stream"})
                response = conn.getresponse()
                body = json.loads(response.read())
                answers.append({"path": path, **body} if response.status == 200 else
                               {"path": path, "status": response.status, "error": body.get("error")})
            conn.request("GET", "/metrics")
            metrics_ok = b"edgecnn_requests_total" in conn.getresponse().read()
            conn.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        text = log.read_text(errors="replace")
    return {"health": health, "answers": answers, "metrics": metrics_ok, "exit_code": code,
            "traceback": "Traceback" in text, "startup_s": round(started_s, 1)}


def _parse(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip().startswith("{")]


def compare(host: list[dict], arm: list[dict], *, tolerance: float = PROB_TOLERANCE) -> list[str]:
    """Differences between two runs' JSON lines: same files, same errors, same labels, probabilities within tolerance."""
    problems = []
    if [r["path"] for r in host] != [r["path"] for r in arm]:
        return [f"different files: x86 {[r['path'] for r in host]} vs arm64 {[r['path'] for r in arm]}"]
    for h, a in zip(host, arm, strict=True):
        if "error" in h or "error" in a:
            if h.get("error") != a.get("error"):
                problems.append(f"{h['path']}: x86 error {h.get('error')!r} vs arm64 {a.get('error')!r}")
            continue
        if h["top"][0]["label"] != a["top"][0]["label"]:
            problems.append(f"{h['path']}: x86 says {h['top'][0]['label']}, arm64 says {a['top'][0]['label']}")
        probs = {c["label"]: c["prob"] for c in a["top"]}
        for c in h["top"]:
            if c["label"] in probs and abs(c["prob"] - probs[c["label"]]) > tolerance:
                problems.append(f"{h['path']}: p({c['label']}) x86 {c['prob']} vs arm64 {probs[c['label']]}")
        if h["uncertain"] != a["uncertain"]:
            problems.append(f"{h['path']}: uncertain x86 {h['uncertain']} vs arm64 {a['uncertain']}")
    return problems


def max_prob_diff(host: list[dict], arm: list[dict]) -> float:
    """Largest |p_x86 - p_arm64| over the classes both runs reported for the same file."""
    worst = 0.0
    for h, a in zip(host, arm, strict=False):  # a run that stopped early has fewer lines
        probs = {c["label"]: c["prob"] for c in a.get("top", [])}
        for c in h.get("top", []):
            if c["label"] in probs:
                worst = max(worst, abs(c["prob"] - probs[c["label"]]))
    return worst


def check_bundle(bundle: str | os.PathLike, images: list[str], *, env: Arm64Env, host_python: str = sys.executable,
                 extra_args: tuple[str, ...] = ("--top-k", "3"), cwd: str | os.PathLike | None = None) -> dict:
    """Run ``bundle``/app.pyz on ``images`` with the host Python and under emulation; report and compare."""
    app = str(Path(bundle).resolve() / "app.pyz")
    args = [app, *images, "--json", *extra_args]
    t0 = time.perf_counter()
    host = subprocess.run([host_python, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    t1 = time.perf_counter()
    arm = env.run(args, cwd=cwd, timeout=600)
    t2 = time.perf_counter()
    host_lines, arm_lines = _parse(host.stdout), _parse(arm.stdout)
    problems = compare(host_lines, arm_lines)
    if host.returncode != arm.returncode:
        problems.insert(0, f"exit codes differ: x86 {host.returncode}, arm64 {arm.returncode}")
    if not arm_lines:
        problems.insert(0, f"the emulated run printed no result (exit {arm.returncode}): {arm.stderr.strip()[-1500:]}")
    return {
        "ok": not problems,
        "problems": problems,
        "files": len(arm_lines),
        "failed_files": sum("error" in r for r in arm_lines),
        "max_prob_diff": max_prob_diff(host_lines, arm_lines),
        "exit_code": {"x86": host.returncode, "arm64": arm.returncode},
        "seconds": {"x86": round(t1 - t0, 2), "arm64_emulated": round(t2 - t1, 2)},
        "arm64": env.versions,
        "arm64_stderr": arm.stderr.strip().splitlines()[-3:],
        "results": arm_lines,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="An existing bundle folder (from `edgecnn deploy`).")
    parser.add_argument("--model", type=Path, help="Bundle this model first. [default: edgecnn-demo/model.int8.onnx]")
    parser.add_argument("--images", nargs="+", help="Images or folders. [default: 8 of the demo's validation images]")
    parser.add_argument("--cache", type=Path, default=None, help=f"Environment cache. [default: ${CACHE_ENV} or {DEFAULT_CACHE}]")
    parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
    args = parser.parse_args(argv)

    try:
        env = ensure_env(args.cache)
    except Unavailable as exc:
        print(f"Error: ARM64 emulation unavailable: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle
        if bundle is None:
            from edgecnn.deploy import deploy

            model = args.model or REPO / "edgecnn-demo" / "model.int8.onnx"
            if not model.is_file():
                print(f"Error: {model} does not exist; run `edgecnn demo` or pass --model/--bundle", file=sys.stderr)
                return 2
            bundle = deploy(model, Path(tmp) / "bundle").out_dir
        images = args.images or _demo_images()
        if not images:
            print("Error: no images; pass --images", file=sys.stderr)
            return 2
        report = check_bundle(bundle, images, env=env)
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=2))
    else:
        print(f"arm64 (qemu-user): Python {env.versions.get('python')}, onnxruntime {env.versions.get('onnxruntime')}, "
              f"numpy {env.versions.get('numpy')}, Pillow {env.versions.get('pillow')}")
        print(f"{report['files']} files ({report['failed_files']} bad), exit codes x86 {report['exit_code']['x86']} "
              f"arm64 {report['exit_code']['arm64']}; {report['seconds']['x86']} s native, "
              f"{report['seconds']['arm64_emulated']} s emulated; max |p_x86 - p_arm64| {report['max_prob_diff']:.2e}")
        for r in report["results"]:
            print(f"  {r['path']}: " + (f"ERROR {r['error']}" if "error" in r else f"{r['top'][0]['label']} {r['top'][0]['prob']:.4f}"))
        print("MATCH: arm64 predictions equal the x86 runtime's" if report["ok"] else
              "MISMATCH:\n  " + "\n  ".join(report["problems"]))
    return 0 if report["ok"] else 1


def _demo_images() -> list[str]:
    val = REPO / "edgecnn-demo" / "data" / "val"
    files = sorted(p for p in val.rglob("*") if p.is_file()) if val.is_dir() else []
    return [str(p) for p in files[:: max(1, len(files) // 8)][:8]]


if __name__ == "__main__":
    sys.exit(main())
