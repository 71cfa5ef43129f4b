"""`edgecnn serve` under load, side by side with `classify images` on the same JPEGs: requests/s, p50/p99, errors.

    python benchmarks/serve_load.py                          # the demo's INT8 model, 300 JPEGs of 640x480
    python benchmarks/serve_load.py -m model.onnx --requests 600 --rounds 3

One run measures everything, in turns (round after round, so that the neighbours' load hits each row
alike; the median round is reported): the reference, `Classifier.classify_paths` (the library call behind
`classify images`) and the `classify images` process itself; then one `edgecnn serve` process per
batching setting (micro-batching on, --max-batch 16; off, --max-batch 1), loaded at concurrency 1, 8 and
32 by keep-alive connections from this process (asyncio, one request in flight per connection). Every
answer is checked against `classify images`' label for that image. Writes benchmarks/results/serve_load.md
(and .json). Uses only the runtime and the serve extra: no torch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from classify_throughput import DEFAULT_MODEL, machine, make_jpegs, measured, write_results

HERE = Path(__file__).resolve().parent
CONCURRENCY = (1, 8, 32)
SETTINGS = {  # name -> `edgecnn serve` options (the default is --threads 1: see runtime/serve/options.py DEFAULT_THREADS)
    "batching on": ["--max-batch", "16"],
    "batching off": ["--max-batch", "1"],
    "batching on, 2 inference threads": ["--max-batch", "16", "--threads", "2"],
}
WARMUP = 64  # requests before each timed level: connections, thread pools, session warm-up


# ------------------------------------------------------------------------------------------------ server
def start_server(model: str, extra: list[str], log: Path) -> tuple[subprocess.Popen, int]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edgecnn", "serve", "-m", model, "--port", "0", *extra],
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "startup complete" not in (text := log.read_text(errors="replace")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the server did not start:\n{text[-2000:]}")
        time.sleep(0.05)
    return proc, int(text.split(" on http://127.0.0.1:")[1].split("/")[0])


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------------------------ client
async def _connection(port: int, jobs: list[tuple[bytes, str]], latencies: list[float], problems: list[str]) -> None:
    """One keep-alive connection sending its share of requests one after the other."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body, expected in jobs:
            head = (f"POST /v1/classify?top_k=1 HTTP/1.1\r\nHost: bench\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            start = time.perf_counter()
            writer.write(head + body)
            await writer.drain()
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not status.startswith(b"HTTP/1.1 200"):
                problems.append(f"{status.decode().strip()}: {answer[:200]!r}")
            elif expected is not None and json.loads(answer)["top"][0]["label"] != expected:
                problems.append(f"wrong label: {answer[:200]!r}, expected {expected}")
    except (OSError, asyncio.IncompleteReadError) as exc:  # a dropped connection counts, and ends this one
        problems.append(f"connection: {type(exc).__name__}: {exc}")
    finally:
        writer.close()


async def _load(port: int, jobs: list[tuple[bytes, str]], concurrency: int) -> dict:
    latencies: list[float] = []
    problems: list[str] = []
    start = time.perf_counter()
    await asyncio.gather(*(_connection(port, jobs[i::concurrency], latencies, problems) for i in range(concurrency)))
    seconds = time.perf_counter() - start
    latencies.sort()
    return {"requests": len(jobs), "seconds": seconds, "rps": len(jobs) / seconds,
            "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan"),
            "errors": len(problems) + (len(jobs) - len(latencies)), "problems": problems[:5]}


def load(port: int, pid: int, jobs: list[tuple[bytes, str]], concurrency: int) -> dict:
    asyncio.run(_load(port, jobs[:WARMUP], concurrency))
    cpu = cpu_seconds(pid)
    result = asyncio.run(_load(port, jobs, concurrency))
    result["server_cpu_ms"] = 1000 * (cpu_seconds(pid) - cpu) / len(jobs)  # per request, all server threads
    return result


# -------------------------------------------------------------------------------------------------- main
def reference_labels(model: str, paths: list[Path]) -> dict[str, str]:
    """`classify images --json` on every image: the label each server answer must repeat."""
    out = subprocess.run([sys.executable, "-m", "edgecnn", "classify", "images", *map(str, paths), "-m", model, "--json",
                          "-k", "1"], capture_output=True, text=True, check=True)
    return {(o := json.loads(line))["path"]: o["top"][0]["label"] for line in out.stdout.splitlines()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--label", default=None, help="How to name the model in the report (default: its path)")
    parser.add_argument("--images", type=int, default=300, help="JPEGs of 640x480 (made once, cached)")
    parser.add_argument("--requests", type=int, default=600, help="Timed requests per concurrency level")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", default=str(HERE.parent / ".cache" / "jpeg640x480"))  # git-ignored
    parser.add_argument("-o", "--out", default=str(HERE / "results" / "serve_load.md"))
    args = parser.parse_args()
    if not Path(args.model).is_file():
        raise SystemExit(f"{args.model}: no such model; run `edgecnn demo` first, or pass -m MODEL.onnx")
    folder = Path(args.cache)
    paths = make_jpegs(folder, max(args.images, 1))[: args.images]
    labels = reference_labels(args.model, paths)
    bodies = [(p.read_bytes(), labels[str(p)]) for p in paths]
    jobs = [bodies[i % len(bodies)] for i in range(args.requests)]
    me = [sys.executable, str(HERE / "classify_throughput.py")]
    pipeline_cmd = me + ["--child", "pipeline", "--model", args.model, "--images", str(args.images), "--folder",
                         str(folder), "--batch-size", "16", "--workers", "2"]
    cli_cmd = [sys.executable, "-m", "edgecnn", "classify", "images", str(folder), "-m", args.model, "--json", "-k", "1"]

    rows: dict[str, list[dict]] = {"pipeline": [], "cli": []}
    rows.update({f"{name} @{c}": [] for name in SETTINGS for c in CONCURRENCY})
    server_info: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            data, _, _ = measured(pipeline_cmd)
            assert data is not None
            rows["pipeline"].append({"rps": data["n"] / data["seconds"]})
            _, wall, _ = measured(cli_cmd)
            rows["cli"].append({"rps": args.images / wall})
            for name, extra in SETTINGS.items():
                proc, port = start_server(args.model, extra, Path(tmp) / f"{name}-{round_}.log")
                try:
                    for c in CONCURRENCY:
                        rows[f"{name} @{c}"].append(load(port, proc.pid, jobs, c))
                    rss = rss_mb(proc.pid)
                finally:
                    code = stop_server(proc)
                server_info[name] = {"rss_mb": rss, "exit_code": code}
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]['rps']:.0f}/s" for k, v in rows.items()), flush=True)

    def median(name: str) -> dict:
        runs = sorted(rows[name], key=lambda r: r["rps"])
        return {**runs[len(runs) // 2], "all_rps": [round(r["rps"], 1) for r in rows[name]],
                "errors_all_rounds": sum(r.get("errors", 0) for r in rows[name])}

    result = {name: median(name) for name in rows}
    reference = result["pipeline"]["rps"]
    report = {"machine": machine(), "model": args.model, "images": args.images, "requests": args.requests,
              "rounds": args.rounds, "rows": result, "servers": server_info,
              "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    top = result["batching on @32"]
    mean_kb = sum(len(b) for b, _ in bodies) / len(bodies) / 1024
    lines = [
        "# `edgecnn serve` under load vs `classify images`",
        "",
        f"{args.images} JPEGs of 640x480 (mean {mean_kb:.0f} KB), model {args.label or '`' + args.model + '`'}, "
        f"{report['date']}.  ",
        f"Machine: {report['machine']}. Median of {args.rounds} interleaved rounds; each serve level sends "
        f"{args.requests} requests (after {WARMUP} warm-up ones) over as many keep-alive connections as its "
        "concurrency, from the benchmark process on the same two cores (the client's CPU time is the server's loss; "
        "`classify images` pays no such cost).",
        "",
        "| row | images or requests/s | vs `classify_paths` | p50 ms | p99 ms | server CPU ms/request "
        "| errors (all rounds) | all rounds (/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        f"| `Classifier.classify_paths` (batch 16, 2 decode threads): what `classify images` runs | {reference:.1f} | 1.00x "
        f"| | | | | {', '.join(map(str, result['pipeline']['all_rps']))} |",
        f"| `edgecnn classify images --json` (whole process: start-up, model load, output) | {result['cli']['rps']:.1f} "
        f"| {result['cli']['rps'] / reference:.2f}x | | | | | {', '.join(map(str, result['cli']['all_rps']))} |",
    ]
    for name in SETTINGS:
        for c in CONCURRENCY:
            row = result[f"{name} @{c}"]
            lines.append(f"| `edgecnn serve` {name} ({' '.join(SETTINGS[name])}), concurrency {c} | {row['rps']:.1f} "
                         f"| {row['rps'] / reference:.2f}x | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
                         f"| {row['server_cpu_ms']:.2f} | {row['errors_all_rounds']} | {', '.join(map(str, row['all_rps']))} |")
    target = top["rps"] >= 0.7 * reference and top["p99_ms"] < 100 and top["errors_all_rounds"] == 0
    lines += [
        "",
        f"Targets at concurrency 32 with batching on: at least 70% of `classify_paths`' throughput "
        f"({top['rps'] / reference:.0%}), p99 under 100 ms ({top['p99_ms']:.1f} ms), zero errors "
        f"({top['errors_all_rounds']}): **{'met' if target else 'not met'}** on this run. With 32 requests always "
        f"in flight the mean latency is 32 / throughput (Little's law): {1000 * 32 / top['rps']:.0f} ms at "
        f"{top['rps']:.0f} requests/s, so a p99 under 100 ms needs more than 320 requests/s from the machine.",
        "",
        "Server resident memory after the last round: " + ", ".join(
            f"{name} {info['rss_mb']:.0f} MB" for name, info in server_info.items())
        + f"; exit codes after SIGTERM: {', '.join(str(i['exit_code']) for i in server_info.values())}.",
        "",
        f"Load average when the run ended: {', '.join(f'{v:.1f}' for v in os.getloadavg())} (the machine is shared "
        "with other jobs: treat absolute figures as noisy, the side-by-side ratios as the result).",
    ]
    write_results(Path(args.out), lines, report)


if __name__ == "__main__":
    main()
