"""Training data at scale: private memory of all ranks and training images/s, by dataset size, processes and data path.

    python benchmarks/data_scale.py                                 # 2k, 8k, 32k images; 1 and 2 processes
    python benchmarks/data_scale.py --sizes 2000 8000 --modes memory cache --nproc 2 --epochs 2

Data paths compared (the same `edgecnn train` otherwise):
  memory  every rank decodes every image into its own memory (`--cache-dir none`, the code before the cache)
  cache   decoded once into a memory-mapped cache on disk, shared through the page cache (`--cache-dir DIR`)
  lazy    decoded on the fly from the image files in DataLoader worker processes (`--workers W`), validation
          decoded on the fly too; this script plugs that dataset in (the product does not ship it)

Memory: every 0.1 s, the RssAnon of each rank process (summed over ranks; the issue's measure) and the
Pss_Anon of the ranks and their loader workers (smaps_rollup; proportional, so pages a fork shares are
not counted twice); the peak of each sum. Throughput: the training images/s that `edgecnn train`
records per epoch, the median of the epochs after the first. Data: `edgecnn.synth` shapes at --px
pixels, generated once into --data-root (subsets of the largest are symlinks). Writes
benchmarks/results/data_scale.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 4


# ----------------------------------------------------------------------------------------------- data
def make_data(root: Path, sizes: list[int], px: int) -> dict[int, Path]:
    """One synthetic set of max(sizes) images (80/20 train/val per class), and a symlinked subset per size."""
    from edgecnn.synth import synthesize

    full = root / f"full-{max(sizes)}-{px}"
    if not (full / "val").is_dir():
        tmp = root / f".full-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        synthesize(tmp, classes=CLASSES, per_class=max(sizes) // CLASSES, size=px, seed=0)
        tmp.rename(full)
    out = {}
    for n in sizes:
        subset = root / f"n{n}-{px}"
        if not subset.is_dir():
            tmp = root / f".n{n}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            for part, share in (("train", 0.8), ("val", 0.2)):
                for cls in sorted((full / part).iterdir()):
                    (tmp / part / cls.name).mkdir(parents=True)
                    for f in sorted(cls.iterdir())[: round(n * share / CLASSES)]:
                        (tmp / part / cls.name / f.name).symlink_to(f)
            tmp.rename(subset)
        out[n] = subset
    return out


# ------------------------------------------------------------------------------------------- memory
def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _field(path: str, name: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass  # the process ended between the listing and the read
    return 0


class MemorySampler(threading.Thread):
    """Peak over time of sum(RssAnon of ranks) and sum(Pss_Anon of ranks and their workers), in kB."""

    def __init__(self, pid: int, launcher: bool):
        super().__init__(daemon=True)
        self.pid, self.launcher = pid, launcher  # launcher: pid is torchrun's agent, its children are the ranks
        self.peak_rss_anon = self.peak_pss_anon = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            tree = _children()
            ranks = tree.get(self.pid, []) if self.launcher else [self.pid]
            everyone = list(ranks)
            for r in ranks:
                everyone += tree.get(r, [])  # DataLoader workers
            rss = sum(_field(f"/proc/{p}/status", "RssAnon") for p in ranks)
            pss = sum(_field(f"/proc/{p}/smaps_rollup", "Pss_Anon") for p in everyone)
            self.peak_rss_anon = max(self.peak_rss_anon, rss)
            self.peak_pss_anon = max(self.peak_pss_anon, pss)
            self.stop.wait(0.1)


# ---------------------------------------------------------------------------------------------- runs
def run(data: Path, out: Path, *, mode: str, nproc: int, args: argparse.Namespace, cache_dir: Path) -> dict:
    train_args = [str(data), "-o", str(out), "--arch", args.arch, "--img-size", str(args.img_size), "--epochs",
                  str(args.epochs), "--batch-size", str(args.batch_size), "--device", "cpu", "--no-calibrate", "-q"]
    train_args += {"memory": ["--cache-dir", "none"], "cache": ["--cache-dir", str(cache_dir)],
                   "lazy": ["--cache-dir", "none", "--workers", str(args.workers)]}[mode]
    entry = [__file__, "--lazy-run"] if mode == "lazy" else ["-m", "edgecnn", "train"]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *entry, *train_args]
    else:
        cmd = [sys.executable, *entry, *train_args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler = MemorySampler(proc.pid, launcher=nproc > 1)
    sampler.start()
    _, err = proc.communicate()
    sampler.stop.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    rates = [e["train_images_per_s"] for e in metrics["epochs"][1:]] or [metrics["epochs"][0]["train_images_per_s"]]
    return {"mode": mode, "processes": nproc, "images": None, "train_images_per_s": statistics.median(rates),
            "peak_rss_anon_mb": sampler.peak_rss_anon / 1024, "peak_pss_anon_mb": sampler.peak_pss_anon / 1024,
            "wall_s": wall, "best_val_accuracy": metrics["val_accuracy"], "epochs": args.epochs}


def loader_rate(data: Path, *, mode: str, args: argparse.Namespace, cache_dir: Path) -> float:
    """Training items/s of the data path alone (decode-free crops, one process, no model): TrainSet[i] over a
    whole epoch, after one warm-up epoch (the cache mode then reads hot pages, as training does after epoch 1)."""
    from edgecnn.data import TrainSet, resolve_dataset
    from edgecnn.runtime.spec import PreprocessSpec

    split = resolve_dataset(data)
    ds = TrainSet(split.train, PreprocessSpec(size=args.img_size, labels=split.labels), scale=(0.7, 1.0),
                  cache_dir=None if mode == "memory" else cache_dir)
    for epoch in range(2):
        ds.set_epoch(epoch)
        t0 = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
    return len(ds) / (time.perf_counter() - t0)


def lazy_run(argv: list[str]) -> None:
    """`edgecnn train` with datasets that decode each image when it is read (in the loader's workers)."""
    from collections.abc import Sequence

    from edgecnn import cli, data
    from edgecnn import train as training
    from edgecnn.runtime.preprocess import preprocess

    class LazyImages(Sequence):
        def __init__(self, paths: list[Path], decode) -> None:
            self.paths, self.decode = paths, decode

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, i):
            if isinstance(i, slice):
                return [self.decode(p) for p in self.paths[i]]
            return self.decode(self.paths[i])

    class LazyTrainSet(data.TrainSet):
        def __init__(self, samples, spec, *, seed=0, scale=(0.35, 1.0), hflip=False, device_augment=False, **_):
            self.spec, self.seed, self.scale, self.hflip, self.device_augment, self.epoch = spec, seed, scale, hflip, \
                device_augment, 0
            self.images = LazyImages([p for p, _ in samples], lambda p: data.decode_train_image(p, spec))
            self.targets, self.failures = [t for _, t in samples], []

    class LazyEvalSet(data.EvalSet):
        def __init__(self, samples, spec, **_):
            self.images = LazyImages([p for p, _ in samples], lambda p: preprocess(p, spec))
            self.targets, self.failures = [t for _, t in samples], []

    # Every file is assumed readable: decoding on the fly cannot list the unreadable ones before training.
    training.TrainSet, training.EvalSet = LazyTrainSet, LazyEvalSet
    cli.main(["train", *argv])


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def report(rows: list[dict], args: argparse.Namespace) -> str:
    def group(mode: str, nproc: int, n: int, epochs: int | None = None) -> list[dict]:
        return [r for r in rows if (r["mode"], r["processes"], r["images"]) == (mode, nproc, n)
                and (epochs is None or r["epochs"] == epochs)]

    load = [r["load"] for r in rows if "load" in r] or [float("nan")]
    loader = [r for r in rows if r.get("kind") == "loader"]
    rows = [r for r in rows if r.get("kind", "train") == "train"]
    lines = [
        "# Training data at scale: private memory and throughput by data path",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU only, shared with other "
        f"agents' jobs while this ran (1-minute load average {min(load):.1f} to {max(load):.1f} after the runs "
        f"that recorded it), so images/s are noisy: compare the repeated, interleaved runs. "
        f"Data: edgecnn.synth shapes, {CLASSES} classes, {args.px} px PNGs, 80/20 train/val; model {args.arch} at "
        f"{args.img_size} px; global batch {args.batch_size}; no loader workers except for lazy ({args.workers} per "
        "process). images/s: what `edgecnn train` records for the training loop, the median of the epochs after the "
        "first. `python benchmarks/data_scale.py` reproduces the matrix.",
        "",
        "Memory: peak of the summed RssAnon of the rank processes (private anonymous memory: the issue's measure), "
        "and peak of the summed Pss_Anon of ranks and loader workers (counts a worker's copy-on-write pages "
        "proportionally). The cache's pages are file-backed page cache, in neither figure, shared by all ranks. "
        "The peaks include rank 0's training report after the last epoch, which scores the validation set: from the "
        "cache entry on the cache path (since this round), decoded into memory once more on the others.",
        "",
        "| data path | processes | images | epochs | train images/s | peak RssAnon, ranks (MB) "
        "| peak Pss_Anon, ranks+workers (MB) | wall s | best val acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['processes']} | {r['images']} | {r['epochs']} | {r['train_images_per_s']:.0f} | "
                     f"{r['peak_rss_anon_mb']:.0f} | {r['peak_pss_anon_mb']:.0f} | {r['wall_s']:.0f} | "
                     f"{r['best_val_accuracy']:.3f} |")
    sizes = sorted({r["images"] for r in rows})
    lines += ["", "Growth of peak RssAnon (all ranks) with the dataset, between runs of the same length (medians):", ""]
    for epochs in sorted({r["epochs"] for r in rows}):
        for nproc in sorted({r["processes"] for r in rows}):
            for mode in ("memory", "cache", "lazy"):
                pts = [(n, group(mode, nproc, n, epochs)) for n in sizes]
                pts = [(n, g) for n, g in pts if g]
                if len(pts) < 2:
                    continue
                steps = ", ".join(f"{a}->{b}: {_median(gb, 'peak_rss_anon_mb') - _median(ga, 'peak_rss_anon_mb'):+.0f} MB"
                                  for (a, ga), (b, gb) in zip(pts, pts[1:], strict=False))
                lines.append(f"- {mode}, {nproc} process(es), {epochs} epochs: {steps}")
    lines += ["", "Training images/s against `memory` (the code before the cache), same size, processes and epochs "
              "(median of the runs; n = runs per path):", ""]
    for key in sorted({(r["processes"], r["images"], r["epochs"]) for r in rows}):
        nproc, n, epochs = key
        base = group("memory", nproc, n, epochs)
        if not base:
            continue
        parts = []
        for mode in ("cache", "lazy"):
            g = group(mode, nproc, n, epochs)
            if g:
                parts.append(f"{mode} {_median(g, 'train_images_per_s') / _median(base, 'train_images_per_s'):.2f}x "
                             f"(n={len(g)})")
        if parts:
            lines.append(f"- {nproc} process(es), {n} images, {epochs} epochs: memory "
                         f"{_median(base, 'train_images_per_s'):.0f}/s (n={len(base)}); " + ", ".join(parts))
    if loader:
        lines += ["", "The data path alone (`--loader-only`: TrainSet[i] over an epoch, one process, no model; the "
                  "random resized crop included; interleaved runs):", ""]
        for n in sorted({r["images"] for r in loader}):
            parts = [f"{mode} {statistics.median(r['items_per_s'] for r in loader if (r['mode'], r['images']) == (mode, n)):.0f}"
                     f" items/s (n={sum(1 for r in loader if (r['mode'], r['images']) == (mode, n))})"
                     for mode in ("memory", "cache") if any(r["mode"] == mode and r["images"] == n for r in loader)]
            lines.append(f"- {n} images: " + ", ".join(parts))
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--lazy-run":
        lazy_run(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000], help="images (train + val)")
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--modes", nargs="+", default=["memory", "cache", "lazy"], choices=["memory", "cache", "lazy"])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each configuration, interleaved")
    parser.add_argument("--px", type=int, default=96, help="side of the synthetic images")
    parser.add_argument("--arch", default="tinycnn")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="loader workers per process for the lazy path")
    parser.add_argument("--data-root", type=Path, default=Path(tempfile.gettempdir()) / "edgecnn-data-scale")
    parser.add_argument("--loader-only", action="store_true", help="time the data path alone, not training runs")
    parser.add_argument("--merge", type=Path, default=None, help="a .json of earlier rows to report with these")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "data_scale.md")
    args = parser.parse_args()
    datasets = make_data(args.data_root, args.sizes, args.px)
    earlier = json.loads(args.merge.read_text()) if args.merge else []
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp) / "cache"  # cold: the first cache run of each size builds it
        for n in args.sizes:
            for nproc in args.nproc:
                for rep in range(args.repeat):
                    for mode in args.modes:
                        if args.loader_only:
                            if nproc != args.nproc[0] or mode == "lazy":
                                continue
                            row = {"kind": "loader", "mode": mode, "items_per_s": loader_rate(
                                datasets[n], mode=mode, args=args, cache_dir=cache_dir)}
                            row.update(images=n, repeat=rep, load=os.getloadavg()[0])
                            rows.append(row)
                            print(json.dumps(row), flush=True)
                            continue
                        row = run(datasets[n], Path(tmp) / f"{mode}-{nproc}-{n}-{rep}", mode=mode, nproc=nproc,
                                  args=args, cache_dir=cache_dir)
                        row.update(images=n, repeat=rep, load=os.getloadavg()[0])
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                        args.out.with_suffix(".json").write_text(json.dumps(earlier + rows, indent=1) + "\n")
    text = report(earlier + rows, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(earlier + rows, indent=1) + "\n")
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
