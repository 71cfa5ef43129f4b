"""`edgecnn bench`: the arithmetic (deterministic, with an injected clock), the JSON schema, the CLI, no-torch use."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecnn.bench import (
    KIND_CLASSIFY,
    KIND_NAIVE,
    BenchError,
    bench,
    cold_starts,
    efficiency,
    format_table,
    onnx_macs,
    percentile,
    profile_operators,
    summarize,
    write_outputs,
)
from edgecnn.cli import cli

REQUIRED = {"model", "backend", "precision", "batch", "threads", "init_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms",
            "mean_ms", "throughput_ips", "cpu_percent", "size_bytes", "peak_rss_mb"}


@pytest.fixture(scope="module")
def onnx_model(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgecnn.export import export_onnx

    out = tmp_path_factory.mktemp("bench") / "tiny.onnx"
    export_onnx(checkpoint, out)
    return out


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The FP32 peak cache goes to a temporary folder, never the user's ~/.cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def ticking_clock(step: float = 0.001):
    """A clock that advances by ``step`` seconds on every reading: every timed span is exactly one step."""
    counter = itertools.count()
    return lambda: next(counter) * step


# ------------------------------------------------------------------------------------------ arithmetic
def test_percentile_matches_numpy_linear() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100):
        values = rng.exponential(size=n).tolist()
        for q in (0, 50, 90, 99, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summarize_known_numbers() -> None:
    s = summarize([0.001, 0.002, 0.003, 0.004], images_per_run=2)
    assert s["min_ms"] == pytest.approx(1.0) and s["max_ms"] == pytest.approx(4.0)
    assert s["p50_ms"] == pytest.approx(2.5) and s["mean_ms"] == pytest.approx(2.5)
    assert s["p90_ms"] == pytest.approx(3.7)  # 1 + 0.9 * 3 ranks in: between 3 and 4
    assert s["std_ms"] == pytest.approx(math.sqrt(1.25))
    assert s["throughput_ips"] == pytest.approx(800.0)  # 2 images per 2.5 ms


def test_p999_only_from_enough_runs() -> None:
    ms = [i / 1e3 for i in range(1, 1001)]  # 1..1000 ms
    assert summarize(ms, 1)["p999_ms"] == pytest.approx(1 + 0.999 * 999)  # linear between the closest ranks
    assert summarize(ms[:999], 1)["p999_ms"] is None


def test_p999_reaches_the_row(onnx_model: Path) -> None:
    report = bench([onnx_model], warmup=0, runs=1000, isolate=False, peak_gflops=10.0, clock=ticking_clock(0.002))
    (row,) = report.rows
    assert row.runs == 1000 and row.p999_ms == pytest.approx(2.0)
    assert "p99.9" in format_table(report) and " 2.000 " in format_table(report)


def test_efficiency_known_numbers() -> None:
    gflops, fraction = efficiency(1_000_000, 2, 1.0, peak_gflops=8.0, threads=1)
    assert gflops == pytest.approx(4.0)  # 2 FLOP/MAC x 1e6 MAC x 2 images / 1 ms
    assert fraction == pytest.approx(0.5)
    assert efficiency(None, 1, 1.0, peak_gflops=8.0) == (None, None)
    _, no_peak = efficiency(1_000_000, 1, 1.0, peak_gflops=None)
    assert no_peak is None


# ---------------------------------------------------------------------------------------- the library
def test_bench_in_process_with_injected_clock(onnx_model: Path) -> None:
    report = bench([onnx_model], batches=[1, 3], threads=[1], warmup=2, runs=7, isolate=False,
                   peak_gflops=100.0, clock=ticking_clock(0.001))
    assert [(r.batch, r.threads) for r in report.rows] == [(1, 1), (3, 1)]
    for row in report.rows:
        assert row.note == "" and row.runs == 7 and row.precision == "fp32" and row.backend == "onnxruntime"
        assert row.p50_ms == pytest.approx(1.0) and row.p99_ms == pytest.approx(1.0) and row.std_ms == pytest.approx(0.0)
        assert row.init_ms == pytest.approx(1.0) and row.first_ms == pytest.approx(1.0)
        assert row.throughput_ips == pytest.approx(1000.0 * row.batch)
        assert row.rss_scope == "process-so-far" and row.peak_rss_mb > 10
        assert row.size_bytes == onnx_model.stat().st_size
        assert row.p999_ms is None  # 7 runs: no p99.9
        # CPU% is measured with the real clocks, whatever the latency clock: one thread keeps it near 100.
        assert row.cpu_percent is not None and 0 < row.cpu_percent <= 100 * row.threads + 30
        assert row.macs and row.macs > 0
        assert row.gflops == pytest.approx(2 * row.macs * row.batch / 1e-3 / 1e9)
        assert row.peak_fraction == pytest.approx(row.gflops / 100.0)
    assert "tiny.onnx" in format_table(report) and "| model |" in format_table(report, markdown=True)


def test_onnx_macs_equal_torch_count(checkpoint: Path, onnx_model: Path) -> None:
    from edgecnn.checkpoint import load_checkpoint
    from edgecnn.models import count_macs

    ckpt = load_checkpoint(checkpoint)
    assert onnx_macs(onnx_model) == count_macs(ckpt.build_model(), ckpt.spec.size)


def test_end_to_end_rows(onnx_model: Path, shapes_dir: Path) -> None:
    report = bench([onnx_model], threads=[2], warmup=1, runs=2, images_dir=shapes_dir / "val", images_limit=6,
                   images_batch=4, isolate=False, peak_gflops=100.0, clock=ticking_clock(0.006))
    kinds = {r.kind: r for r in report.rows}
    e2e, naive = kinds[KIND_CLASSIFY], kinds[KIND_NAIVE]
    for row in (e2e, naive):
        assert row.note == "" and row.images == 6 and row.runs == 2 and row.threads == 2
        assert row.p50_ms == pytest.approx(1.0)  # one 6 ms tick per pass over 6 images: 1 ms per image
        assert row.throughput_ips == pytest.approx(1000.0)
    assert e2e.batch == 4 and naive.batch == 1
    assert set(e2e.stages_ms) >= {"infer", "wall"} and all(v >= 0 for v in e2e.stages_ms.values())
    assert "ms per image" in format_table(report)


def test_workers_isolated_and_outputs(onnx_model: Path, tmp_path: Path) -> None:
    report = bench([onnx_model, onnx_model], runs=5, warmup=1, peak_gflops=50.0)
    assert len(report.rows) == 2
    for row in report.rows:
        assert row.note == "" and row.rss_scope == "row" and row.runs == 5
        assert row.import_ms is not None and row.import_ms > 0
        assert 0 < row.min_ms <= row.p50_ms <= row.p90_ms <= row.p99_ms <= row.max_ms
    written = write_outputs(report, tmp_path / "out")
    assert [p.name for p in written] == ["bench.json", "bench.png"]
    data = json.loads(written[0].read_text())
    assert REQUIRED <= set(data["rows"][0]) and data["peak_gflops"] == 50.0
    from PIL import Image

    assert Image.open(written[1]).size[0] > 400


def test_a_row_that_cannot_run_is_reported_not_raised(onnx_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    report = bench([onnx_model, bad], runs=3, warmup=0, peak_gflops=50.0)
    good, broken = report.rows
    assert good.note == "" and good.p50_ms is not None
    assert broken.note.startswith("unavailable:") and "broken.onnx" in broken.note and broken.p50_ms is None


def test_profile_operators_accounts_for_the_convolutions(onnx_model: Path) -> None:
    ops = profile_operators(onnx_model, runs=5)
    by_op = {r["op"]: r for r in ops}
    assert "Conv" in by_op and by_op["Conv"]["nodes"] >= 3  # tinycnn: three convolutions
    kernels = [r for r in ops if r["share"] is not None]
    assert sum(r["share"] for r in kernels) == pytest.approx(1.0)
    assert all(r["ms_per_run"] >= 0 for r in ops)


def test_cold_starts_time_import_and_session(onnx_model: Path) -> None:
    (start,) = cold_starts(onnx_model, repeats=1)
    assert 0 < start["import_s"] < 30 and 0 < start["session_s"] < 30


def test_peak_probes_run_as_worker_jobs() -> None:
    from edgecnn.peak import measure_peak_gflops

    probes = measure_peak_gflops(size=64, repeats=3)
    assert set(probes) == {"numpy", "onnxruntime"} and all(v > 0 for v in probes.values())


def test_worker_rejects_an_unknown_job() -> None:
    done = subprocess.run([sys.executable, "-m", "edgecnn.bench.worker", "no-such-job"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "unknown bench worker job 'no-such-job'" in done.stderr
    assert "Traceback" not in done.stderr


def test_names_replace_file_names_in_the_table(onnx_model: Path) -> None:
    report = bench([onnx_model], runs=2, warmup=0, isolate=False, peak_gflops=10.0, clock=ticking_clock())
    text = format_table(report, names={str(onnx_model): "tinycnn@32"})
    assert "tinycnn@32 onnxruntime fp32 b1 t1" in text and "tiny.onnx" not in text


def test_bad_input_is_rejected(onnx_model: Path, tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="no such model"):
        bench([tmp_path / "missing.onnx"])
    with pytest.raises(BenchError, match="runs or seconds"):
        bench([onnx_model], runs=3, seconds=1.0)
    with pytest.raises(BenchError, match="batch"):
        bench([onnx_model], batches=[0])
    with pytest.raises(BenchError, match="no such checkpoint"):
        bench([onnx_model], torch_checkpoint=[tmp_path / "a.pt", tmp_path / "b.pt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no image files"):
        bench([onnx_model], images_dir=tmp_path / "empty")


# ------------------------------------------------------------------------------------------- OpenVINO
def test_openvino_rows_next_to_onnxruntime(onnx_model: Path) -> None:
    pytest.importorskip("openvino")
    report = bench([onnx_model], runs=5, warmup=1, openvino=True, peak_gflops=50.0)
    ort, ov_row = report.rows
    assert (ort.backend, ov_row.backend) == ("onnxruntime", "openvino")
    assert ov_row.note == "" and ov_row.runs == 5 and ov_row.p50_ms > 0 and ov_row.device == "cpu"
    assert ov_row.precision == ort.precision == "fp32"  # the file's metadata, read through OpenVINO
    assert ov_row.size_bytes == ort.size_bytes == onnx_model.stat().st_size and ov_row.macs == ort.macs
    assert ov_row.cpu_percent is not None and 0 < ov_row.cpu_percent <= 100 * ov_row.threads + 30
    assert "openvino fp32 b1 t1" in format_table(report)


def test_openvino_computes_what_onnxruntime_computes(onnx_model: Path) -> None:
    pytest.importorskip("openvino")
    import onnxruntime as ort

    from edgecnn.bench.runners import openvino_compile

    session = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    assert spec.type == "tensor(uint8)"  # edgecnn's exports take uint8 NHWC pixels; OpenVINO must read them
    x = np.random.default_rng(1).integers(0, 256, size=[1, *spec.shape[1:]], dtype=np.uint8)
    expected = session.run(None, {spec.name: x})
    compiled = openvino_compile(str(onnx_model), threads=1, batch=1)
    got = compiled({0: x})
    assert len(got) == len(expected)
    for i, want in enumerate(expected):
        np.testing.assert_allclose(got[compiled.outputs[i]], want, rtol=1e-4, atol=1e-5)


def test_openvino_unreadable_model_says_why(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    report = bench([bad], runs=3, warmup=0, openvino=True, peak_gflops=50.0)
    ov_row = report.rows[1]
    assert ov_row.backend == "openvino" and ov_row.note.startswith("unavailable: OpenVINO cannot run")
    assert "broken.onnx" in ov_row.note and ov_row.p50_ms is None


def test_openvino_missing_gives_the_install_line(onnx_model: Path, shapes_dir: Path, tmp_path: Path) -> None:
    block = tmp_path / "block"
    block.mkdir()
    (block / "openvino.py").write_text("raise ImportError('openvino is blocked in this test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "edgecnn", "bench", str(onnx_model), "--openvino", "--runs", "3",
                           "--warmup", "0", "--device", "cpu", "--json", "--eval", str(shapes_dir)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    ort, ov_row = json.loads(done.stdout)["rows"]
    assert ort["note"] == "" and ort["p50_ms"] > 0  # the onnxruntime row still runs
    assert ov_row["note"] == "unavailable: pip install 'edgecnn[openvino]'"
    # No OpenVINO, no OpenVINO score: blank with the reason, never the onnxruntime row's number copied over.
    assert ort["accuracy"] is not None and ov_row["accuracy"] is None and ov_row["eval_images"] is None
    assert ov_row["accuracy_note"] == "not measured: pip install 'edgecnn[openvino]'"
    assert "pip install 'edgecnn[openvino]'" in done.stderr


# ------------------------------------------------------------------------------------------ --eval DIR
@pytest.fixture(scope="module")
def int8_model(onnx_model: Path, shapes_dir: Path) -> Path:
    from edgecnn.export import quantize

    out = onnx_model.with_name("tiny.int8.onnx")
    quantize(onnx_model, shapes_dir / "train", out, calib_size=32)
    return out


@pytest.fixture(scope="module")
def relabelled_model(onnx_model: Path) -> Path:
    """The FP32 file with its labels rotated: the same pixels give the same index, named another class."""
    import onnx

    from edgecnn.runtime.spec import META_SPEC

    model = onnx.load(str(onnx_model))
    for prop in model.metadata_props:
        if prop.key == META_SPEC:
            spec = json.loads(prop.value)
            spec["labels"] = spec["labels"][1:] + spec["labels"][:1]
            prop.value = json.dumps(spec)
    out = onnx_model.with_name("relabelled.onnx")
    onnx.save(model, str(out))
    return out


@pytest.fixture(scope="module")
def agreed_dir(onnx_model: Path, shapes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """shapes/val re-filed by what the FP32 file answers: on it FP32 scores exactly 1 and the relabelled file 0,
    so a score shown on the wrong file's row, or labels matched by index instead of name, cannot pass."""
    import shutil

    from edgecnn.evaluate import evaluate

    report = evaluate(onnx_model, shapes_dir / "val")
    root = tmp_path_factory.mktemp("agreed")
    for i, (path, probs) in enumerate(zip(report.paths, report.predictions, strict=True)):
        folder = root / report.labels[int(probs.argmax())]
        folder.mkdir(exist_ok=True)
        shutil.copy(path, folder / f"{i:03d}{Path(path).suffix}")
    return root


def test_eval_scores_each_file_once_as_evaluate_does(onnx_model: Path, int8_model: Path, relabelled_model: Path,
                                                     checkpoint: Path, agreed_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import edgecnn.evaluate

    real = edgecnn.evaluate.evaluate
    calls: list[str] = []

    def counting(model, *args, **kwargs):
        calls.append(Path(model).name)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(edgecnn.evaluate, "evaluate", counting)
    models = [onnx_model, int8_model, relabelled_model]
    report = bench(models, batches=[1, 2], runs=3, warmup=0, isolate=False, peak_gflops=10.0, clock=ticking_clock(),
                   torch_checkpoint=checkpoint, torch_compile=False, eval_dir=agreed_dir)
    assert sorted(calls) == sorted(["tiny.onnx", "tiny.int8.onnx", "relabelled.onnx", checkpoint.name])  # once each
    monkeypatch.setattr(edgecnn.evaluate, "evaluate", real)
    n = sum(1 for p in agreed_dir.rglob("*") if p.is_file())
    expected = {str(m): real(m, agreed_dir) for m in [*models, checkpoint]}
    assert len(report.rows) == 8  # 4 files x 2 batches
    for row in report.rows:
        assert row.accuracy == expected[row.model].accuracy and row.eval_images == n == expected[row.model].n
        assert row.accuracy_note == ""
    by_file = {Path(r.model).name: r.accuracy for r in report.rows}
    assert by_file["tiny.onnx"] == 1.0 and by_file["relabelled.onnx"] == 0.0  # the control: the scores differ
    assert {r.precision for r in report.rows if r.model == str(int8_model)} == {"int8"}
    text = format_table(report)
    assert " acc " in text and "100.00%" in text and "0.00%" in text and f"on {n} images of" in text
    assert "acc" not in format_table(bench([onnx_model], runs=2, warmup=0, isolate=False, peak_gflops=10.0,
                                           clock=ticking_clock())).split("\n")[0]  # no --eval: no column


def test_eval_openvino_row_is_scored_by_openvino(onnx_model: Path, agreed_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    import edgecnn.bench.runners as runners

    compiled_for: list[int] = []
    real = runners.openvino_compile

    def spy(model_path: str, threads: int, batch: int):
        compiled_for.append(batch)
        return real(model_path, threads, batch)

    monkeypatch.setattr(runners, "openvino_compile", spy)
    report = bench([onnx_model], runs=3, warmup=0, isolate=False, peak_gflops=10.0, clock=ticking_clock(),
                   openvino=True, eval_dir=agreed_dir)
    ort_row, ov_row = report.rows
    assert ov_row.backend == "openvino" and ov_row.accuracy_note == "" and ov_row.eval_images == ort_row.eval_images
    assert compiled_for[0] == 64  # the score's own compile (the row's is batch 1): OpenVINO did the scoring
    # The same FP32 graph in another runtime: at most a near-tie may flip.
    assert abs(ov_row.accuracy - ort_row.accuracy) <= 1 / ort_row.eval_images


def test_eval_unknown_class_and_bad_folder_are_one_line_errors(onnx_model: Path, shapes_dir: Path,
                                                               tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(shapes_dir / "val", data)
    (data / "hexagon").mkdir()
    shutil.copy(next((shapes_dir / "val").rglob("*.png")), data / "hexagon" / "x.png")
    runner = CliRunner()
    for folder, words in ((data, ["hexagon", "not among the model's labels"]), (tmp_path / "empty", ["no images"])):
        folder.mkdir(exist_ok=True)
        result = runner.invoke(cli, ["bench", str(onnx_model), "--runs", "2", "--warmup", "0", "--in-process",
                                     "--eval", str(folder), "-q"])
        assert result.exit_code == 1 and all(w in result.output for w in words), result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    result = runner.invoke(cli, ["bench", str(onnx_model), "--eval", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "missing" in result.output
    with pytest.raises(BenchError, match="not a folder"):
        bench([onnx_model], eval_dir=tmp_path / "missing")


def test_eval_cli_json_matches_edgecnn_eval(onnx_model: Path, int8_model: Path, shapes_dir: Path,
                                            tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["bench", str(onnx_model), str(int8_model), "--runs", "3", "--warmup", "0",
                                 "--in-process", "--device", "cpu", "--eval", str(shapes_dir), "--json",
                                 "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    for row in rows:
        assert {"accuracy", "eval_images", "accuracy_note"} <= set(row)
        done = runner.invoke(cli, ["eval", row["model"], str(shapes_dir), "--device", "cpu", "--json"])
        want = json.loads(done.output)
        assert (row["accuracy"], row["eval_images"]) == (want["accuracy"], want["n"])  # shapes/val, as eval uses
    assert json.loads(result.output)["settings"]["eval_dir"] == str(shapes_dir)
    assert json.loads((tmp_path / "o" / "bench.json").read_text())["rows"][0]["accuracy"] == rows[0]["accuracy"]


# -------------------------------------------------------------------------------------------- the CLI
def test_cli_json_schema_and_torch_rows(onnx_model: Path, checkpoint: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", str(onnx_model), "--runs", "3", "--warmup", "1", "--torch",
                                      str(checkpoint), "--no-compile", "--json", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [(r["backend"], r["variant"]) for r in data["rows"]] == [("onnxruntime", ""), ("torch", "eager")]
    for row in data["rows"]:
        assert REQUIRED <= set(row)
        assert row["size_bytes"] == Path(row["model"]).stat().st_size
        assert row["p999_ms"] is None and 0 < row["cpu_percent"] <= 100 * row["threads"] + 30
        assert row["model"] in (str(onnx_model), str(checkpoint))  # the path as given
        assert row["p50_ms"] > 0 and row["throughput_ips"] > 0 and row["peak_rss_mb"] > 0
    onnx_row, torch_row = data["rows"]
    assert torch_row["macs"] == onnx_row["macs"]  # counted from the torch module and from the ONNX graph
    assert data["peak_gflops"] > 0
    assert (tmp_path / "o" / "bench.json").is_file() and (tmp_path / "o" / "bench.png").is_file()


def test_cli_table_and_errors(onnx_model: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["bench", str(onnx_model), "--runs", "3", "--warmup", "0", "--in-process", "-q"])
    assert result.exit_code == 0, result.output
    assert "p50" in result.output and "img/s" in result.output and "tiny.onnx" in result.output
    result = runner.invoke(cli, ["bench", str(onnx_model), "--runs", "3", "--seconds", "1"])
    assert result.exit_code == 2 and "not both" in result.output
    result = runner.invoke(cli, ["bench", str(onnx_model), "--batch", "1,x"])
    assert result.exit_code == 2 and "comma-separated" in result.output
    result = runner.invoke(cli, ["bench"])
    assert result.exit_code == 2 and "at least one" in result.output


def test_bench_runs_without_torch(onnx_model: Path, tmp_path: Path) -> None:
    # A `torch` and an `onnx` that refuse to import, first on the path of the parent and of every worker.
    block = tmp_path / "block"
    block.mkdir()
    for name in ("torch", "onnx"):
        (block / f"{name}.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    code = (
        "import json, sys\n"
        "import edgecnn.bench as b\n"
        "loaded = {'torch', 'numpy', 'onnxruntime'} & set(sys.modules)\n"
        "assert not loaded, loaded  # the workers time these imports: nothing may preload them\n"
        f"r = b.bench([{str(onnx_model)!r}], runs=3, warmup=1, peak_gflops=50.0)\n"
        "print(json.dumps(r.to_dict()))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)["rows"][0]
    assert row["note"] == "" and row["p50_ms"] > 0
    assert row["macs"] is None  # no onnx and no edgecnn.macs metadata: the column stays empty, not guessed


def test_suite_without_demo_says_to_run_it(tmp_path: Path) -> None:
    suite = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
    done = subprocess.run([sys.executable, str(suite), "--demo", str(tmp_path / "nothing")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "make demo" in done.stderr and "Traceback" not in done.stderr
