"""`classify images` against a naive one-image loop on the same model: images/s, stage split, peak memory.

    python benchmarks/classify_throughput.py                       # the demo's INT8 model, 500 JPEGs 640x480
    python benchmarks/classify_throughput.py -m model.onnx --images 200 --rounds 3
    python benchmarks/classify_throughput.py --baseline 315630b   # + the pipeline and CLI rows of that commit

Every row runs in its own process (so that its peak RSS is its own), the rows take turns round after round
(so that drift and the neighbours' load hit each alike), and the median round is reported. Writes
benchmarks/results/classify_throughput.md (and .json). Uses only the runtime: no torch needed.
``--baseline REF`` adds the pipeline and CLI rows of an earlier commit, run in the same rounds: its source is
extracted with `git archive` and imported in place of the working tree's by `baseline_boot.py` (needs the
editable install that `make` creates), so "before" and "after" are measured side by side, not on different days.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = Path("edgecnn-demo") / "model.int8.onnx"  # = edgecnn.commands.classify.DEFAULT_MODEL
WARMUP = 16  # images run before timing: session warm-up, page cache, thread pools


def make_jpegs(folder: Path, n: int, *, width: int = 640, height: int = 480, seed: int = 0) -> list[Path]:
    """``n`` photo-like JPEGs (smooth colour fields, shapes and noise): cached, made once."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:05d}.jpg" for i in range(n)]
    if all(p.is_file() for p in paths):
        return paths
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for path in paths:
        base = rng.uniform(0, 255, 3)
        slope = rng.uniform(-0.3, 0.3, (2, 3))
        image = base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(40, 200)
        image[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
        image += rng.normal(0, 12, image.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)
    return paths


# ------------------------------------------------------------------------------- one row, in a child process
def run_naive(model: str, paths: list[str], threads: int | None) -> dict:
    """What a first script does: open, convert, resize, run, one image at a time (no draft decode, no batching)."""
    from edgecnn.runtime import Classifier
    from edgecnn.runtime.preprocess import resize_and_crop

    clf = Classifier(model, device="cpu", threads=threads)

    def one(path: str) -> str:
        image = Image.open(path).convert("RGB")
        pixels = np.asarray(resize_and_crop(image, clf.spec), dtype=np.uint8)[None]
        return clf.labels[int(clf.predict_pixels(pixels)[0].argmax())]

    for path in paths[:WARMUP]:
        one(path)
    start = time.perf_counter()
    labels = [one(path) for path in paths]
    return {"seconds": time.perf_counter() - start, "n": len(labels), "labels": labels}


def run_serial(model: str, paths: list[str], threads: int | None) -> dict:
    """One image at a time through the runtime's preprocess (draft JPEG decode): shows what threads + batches add."""
    from edgecnn.runtime import Classifier

    clf = Classifier(model, device="cpu", threads=threads)
    for path in paths[:WARMUP]:
        clf.classify(path, top_k=1)
    start = time.perf_counter()
    labels = [clf.classify(path, top_k=1).label for path in paths]
    return {"seconds": time.perf_counter() - start, "n": len(labels), "labels": labels}


def run_pipeline(model: str, paths: list[str], threads: int | None, batch_size: int, workers: int) -> dict:
    """The library call behind `edgecnn classify images`."""
    from edgecnn.runtime import Classifier, StageTimes

    clf = Classifier(model, device="cpu", threads=threads)
    for _ in clf.classify_paths(paths[:WARMUP], batch_size=batch_size, workers=workers):
        pass
    times = StageTimes()
    start = time.perf_counter()
    labels = [r.prediction.label for r in clf.classify_paths(paths, batch_size=batch_size, workers=workers, top_k=1,
                                                              timings=times)]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "n": len(labels), "labels": labels, "stages": times.to_dict()}


BOOT = str(HERE / "baseline_boot.py")  # starts every row, on the working tree's code or a baseline's


def baseline_source(ref: str) -> Path:
    """The package source of commit ``ref``, extracted once into benchmarks/.cache/baseline-<sha>."""
    root = HERE.parent
    sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", ref], capture_output=True, text=True,
                         check=True).stdout.strip()
    dest = root / ".cache" / f"baseline-{sha}"
    if not (dest / "runtime").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(root), "archive", sha, "edgecnn", "export", "runtime"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def child(args: argparse.Namespace) -> None:
    paths = sorted(str(p) for p in Path(args.folder).glob("*.jpg"))[: args.images]
    if args.child == "naive":
        out = run_naive(args.model, paths, args.threads)
    elif args.child == "serial":
        out = run_serial(args.model, paths, args.threads)
    else:
        out = run_pipeline(args.model, paths, args.threads, args.batch_size, args.workers)
    import edgecnn.runtime

    out["source"] = str(Path(edgecnn.runtime.__file__).resolve().parents[1])  # which tree's code ran
    print(json.dumps(out))


def measured(argv: list[str]) -> tuple[dict | None, float, float]:
    """Like spawn, with the child's own peak RSS (os.wait4 gives one child's rusage)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()  # type: ignore[union-attr]
    err = proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv[:6])}... failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    text = out.decode().strip().splitlines()
    data = json.loads(text[-1]) if text and text[-1].startswith("{") and "seconds" in text[-1] else None
    return data, wall, usage.ru_maxrss / 1024.0


def write_results(out: Path, lines: list[str], report: dict) -> None:
    """The table as ``out`` (.md), the figures beside it as .json, and the table on stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print("\n".join(lines))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    return f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--label", default=None, help="How to name the model in the table (default: its path)")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: onnxruntime's)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", default=str(HERE.parent / ".cache" / "jpeg640x480"))  # git-ignored
    parser.add_argument("-o", "--out", default=str(HERE / "results" / "classify_throughput.md"))
    parser.add_argument("--baseline", metavar="REF", help="also run the pipeline and CLI rows of this commit")
    parser.add_argument("--child", choices=["naive", "serial", "pipeline"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if not Path(args.model).is_file():
        raise SystemExit(f"{args.model}: no such model; run `edgecnn demo` first, or pass -m MODEL.onnx")
    folder = Path(args.cache)
    make_jpegs(folder, args.images)
    common = ["--model", args.model, "--images", str(args.images), "--folder", str(folder),
              "--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    if args.threads:
        common += ["--threads", str(args.threads)]
    # Every row starts the same way, whichever source it imports: the bootstrap, then the script or the CLI.
    sources = {"": ""}
    if args.baseline:
        sources[args.baseline] = str(baseline_source(args.baseline))
    cli_args = ["classify", "images", str(folder), "-m", args.model, "--json", "-k", "1",
                "--batch-size", str(args.batch_size), "--workers", str(args.workers)] + (
                    ["--threads", str(args.threads)] if args.threads else [])
    rows: dict[str, list[dict]] = {"naive": [], "serial": [], "pipeline": [], "cli": []}
    for ref in sources:
        if ref:
            rows[f"pipeline@{ref}"], rows[f"cli@{ref}"] = [], []
    labels: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for name in rows:
            kind, _, ref = name.partition("@")
            if kind == "cli":
                _, wall, rss = measured([sys.executable, BOOT, sources[ref], "-m", "edgecnn", *cli_args])
                rows[name].append({"seconds": wall, "n": args.images, "rss_mb": rss})
                continue
            me = [sys.executable, BOOT, sources[ref], str(Path(__file__).resolve())]
            data, _, rss = measured(me + ["--child", kind] + common)
            assert data is not None
            labels[name] = data.pop("labels")
            ran = data.pop("source")  # a baseline row must have run the baseline's code, the others this tree's
            expected = str(Path(sources[ref]).resolve()) if ref else str(HERE.parent.resolve())
            assert ran == expected, f"{name} ran the code in {ran}, not {expected}"
            rows[name].append({**data, "rss_mb": rss})
    same = sum(a == b for a, b in zip(labels["naive"], labels["pipeline"], strict=True))

    def summary(name: str) -> dict:
        runs = sorted(rows[name], key=lambda r: r["seconds"])
        mid = runs[len(runs) // 2]
        return {"images_per_s": mid["n"] / mid["seconds"], "seconds": mid["seconds"], "peak_rss_mb": max(r["rss_mb"] for r in runs),
                "all_images_per_s": [round(r["n"] / r["seconds"], 1) for r in rows[name]], "stages": mid.get("stages")}

    result = {name: summary(name) for name in rows}
    ratio = result["pipeline"]["images_per_s"] / result["naive"]["images_per_s"]
    report = {"machine": machine(), "model": args.model, "images": args.images, "rounds": args.rounds,
              "batch_size": args.batch_size, "workers": args.workers, "threads": args.threads, "rows": result,
              "speedup": ratio, "top1_agreement": same / args.images,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    mean_kb = sum(p.stat().st_size for p in sorted(folder.glob("*.jpg"))[: args.images]) / args.images / 1024
    lines = [
        "# `classify images` vs a naive loop",
        "",
        f"{args.images} JPEGs of 640x480 (mean {mean_kb:.0f} KB: noisy, harder to decode than most photos), "
        f"model {args.label or '`' + args.model + '`'}, {report['date']}.  ",
        f"Machine: {report['machine']}; onnxruntime threads: {args.threads or 'default'}; "
        f"median of {args.rounds} interleaved rounds, each row in its own process after {WARMUP} warm-up images.",
        "",
        "| row | images/s | vs naive | peak RSS (MB) | all rounds (images/s) |",
        "|---|---:|---:|---:|---|",
    ]
    names = {"naive": "naive loop: open, convert, resize, run, one at a time",
             "serial": "runtime `preprocess` (draft JPEG decode) + run, one at a time, no threads",
             "pipeline": f"`Classifier.classify_paths` (batch {args.batch_size}, {args.workers} decode threads, draft JPEG)",
             "cli": "`edgecnn classify images --json` (whole process: start-up, model load, output)"}
    for ref in sources:
        if ref:
            names[f"pipeline@{ref}"] = f"before ({ref}): {names['pipeline']}"
            names[f"cli@{ref}"] = f"before ({ref}): {names['cli']}"
    for name, row in result.items():
        lines.append(f"| {names[name]} | {row['images_per_s']:.1f} | {row['images_per_s'] / result['naive']['images_per_s']:.2f}x "
                     f"| {row['peak_rss_mb']:.0f} | {', '.join(map(str, row['all_images_per_s']))} |")
    for name in rows:
        split = result[name]["stages"]
        if name.startswith("pipeline") and split:
            lines += ["", f"Where the {names[name].split(':')[0] if '@' in name else 'pipeline'}'s time went (median "
                      f"round, {args.images} images): decode + preprocess {split['decode_s']:.2f} s of thread time over "
                      f"{args.workers} threads ({1000 * split['decode_s'] / args.images:.2f} ms per image), inference "
                      f"{split['infer_s']:.2f} s, postprocess {split['post_s']:.3f} s, inference loop waiting for decoded "
                      f"images {split['wait_s']:.2f} s, wall {split['wall_s']:.2f} s."]
    lines += ["", f"Load average when the run ended: {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
              f"(the machine is shared: treat absolute figures as noisy, the side-by-side ratios as the result)."]
    lines += ["", f"Top-1 agreement between the two rows: {same}/{args.images} (the naive loop decodes JPEGs at full size; "
              "the pipeline uses Pillow's draft mode, as training does)."]
    write_results(Path(args.out), lines, report)


if __name__ == "__main__":
    main()
