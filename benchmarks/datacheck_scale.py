"""How `edgecnn data check` scales: wall time and peak memory at 10k and 50k images, and recall on planted duplicates.

    .venv/bin/python benchmarks/datacheck_scale.py              # writes benchmarks/results/datacheck.md

The datasets are generated once into benchmarks/.cache/datacheck/ (gitignored): 48x48 images in 10 class
folders (half PNG, half JPEG), each a random two-colour gradient with a few rectangles and noise, so
that perceptual hashes spread as they do on photos rather than being random bits. 0.5% of the files
are planted copies of other files (half exact, half resized to 40-64 px and re-encoded as JPEG),
listed in planted.json. Each size is checked in a fresh subprocess (4 threads) so that its peak RSS
(ru_maxrss) is its own; the baseline RSS after imports is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache" / "datacheck"
CLASSES = 10
SIDE = 48
PLANTED_SHARE = 0.005


def make(folder: Path, n: int, seed: int = 0) -> None:
    from PIL import Image

    if (folder / "planted.json").is_file():
        return
    rng = np.random.default_rng(seed)
    files: list[Path] = []
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    for i in range(n):
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        img = a * (1 - t) + b * t
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.integers(0, SIDE - 8, 2)
            w, h = rng.integers(6, SIDE // 2, 2)
            img[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        cls = folder / f"class{i % CLASSES}"
        cls.mkdir(parents=True, exist_ok=True)
        path = cls / (f"{i:06d}.png" if i % 2 else f"{i:06d}.jpg")
        Image.fromarray(img).save(path, **({"compress_level": 1} if i % 2 else {"quality": 90}))
        files.append(path)
    planted = []
    count = max(2, int(n * PLANTED_SHARE))
    for k, j in enumerate(rng.choice(len(files), count, replace=False)):
        src = files[j]
        dst = src.parent / f"copy_{k:05d}{'.jpg' if k % 2 else src.suffix}"
        if k % 2:  # near: resized and re-encoded
            side = int(rng.integers(40, 65))
            Image.open(src).convert("RGB").resize((side, side), Image.Resampling.BICUBIC).save(dst, quality=85)
        else:  # exact: the same bytes
            dst.write_bytes(src.read_bytes())
        planted.append({"kind": "near" if k % 2 else "exact", "paths": [str(src.relative_to(folder)), str(dst.relative_to(folder))]})
    (folder / "planted.json").write_text(json.dumps(planted) + "\n")


CHILD = """
import json, resource, sys, time
from edgecnn.datacheck import check_dataset
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
r = check_dataset(sys.argv[1], input_size=32, threads=4)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_kb": peak, "base_kb": base, "files": r.files,
                  "duplicates": r.duplicates, "unreadable": len(r.unreadable)}))
"""


def run(folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder)], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    planted = json.loads((folder / "planted.json").read_text())
    found = {frozenset(d["paths"]) for d in result["duplicates"]}
    def hit(p: dict) -> bool:
        return any(set(p["paths"]) <= g for g in found)
    for kind in ("exact", "near"):
        group = [p for p in planted if p["kind"] == kind]
        result[f"recall_{kind}"] = sum(hit(p) for p in group) / max(1, len(group))
        result[f"planted_{kind}"] = len(group)
    planted_sets = [set(p["paths"]) for p in planted]
    result["other_groups"] = sum(1 for g in found if not any(s <= g for s in planted_sets))
    del result["duplicates"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "datacheck.md")
    args = parser.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        folder = CACHE / f"n{n}"
        t = time.perf_counter()
        make(folder, n)
        gen = time.perf_counter() - t
        result = run(folder)
        result.update(n=n, generate_seconds=gen, per_10k=result["seconds"] * 10000 / result["files"])
        rows.append(result)
        print(json.dumps(result), flush=True)
    lines = [
        "# `edgecnn data check` at scale",
        "",
        f"Made by `benchmarks/datacheck_scale.py` on {platform.machine()} ({platform.processor() or 'cpu'}), 4 hashing "
        f"threads, on a shared 2-core machine (other jobs were running: times are upper bounds). Synthetic "
        f"{SIDE}x{SIDE} images in {CLASSES} class folders, half PNG and half JPEG, with {PLANTED_SHARE:.1%} planted copies "
        "(half exact, half resized to 40-64 px and re-encoded as JPEG). No model (-m): reading, hashing, duplicate search, "
        "counts and sizes. Peak RSS of a fresh process; baseline = after imports.",
        "",
        "| images | time | per 10k images | peak RSS | baseline RSS | exact recall | near recall | other groups |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['files']:,} | {r['seconds']:.1f} s | {r['per_10k']:.1f} s | {r['peak_kb'] / 1024:.0f} MB | "
                     f"{r['base_kb'] / 1024:.0f} MB | {r['recall_exact']:.0%} of {r['planted_exact']} | "
                     f"{r['recall_near']:.0%} of {r['planted_near']} | {r['other_groups']} |")
    lines += ["", "Other groups: duplicate groups reported beyond the planted ones (false positives, or chance "
              "look-alikes among the generated images).", ""]
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
