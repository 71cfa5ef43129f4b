"""One runner class per backend and kind of row: setup() once, then run(n) any number of times.

Runners live in the worker process (or in the caller's with isolate=False). Each imports what its row needs
inside setup(), where that import is timed: what a device pays before its first image. A new backend is a
new Runner subclass and one entry in RUNNERS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .rows import (
    KIND_CLASSIFY,
    KIND_MODEL,
    KIND_NAIVE,
    META_MACS,
    META_PRECISION,
    Clock,
    RowConfig,
    SetupInfo,
    WorkerError,
)


class Runner:
    """One configuration: ``setup()`` once, then ``run(n)``, which returns the seconds of each of n runs."""

    def __init__(self, cfg: RowConfig, clock: Clock):
        self.cfg, self.clock = cfg, clock

    def setup(self) -> SetupInfo:
        raise NotImplementedError

    def run(self, n: int) -> list[float]:
        raise NotImplementedError

    def extra(self) -> dict[str, Any]:
        """Measurements beyond the timings, reported once at the end (the end-to-end stage split)."""
        return {}


class OrtRunner(Runner):
    """session.run on a random input of the model's own shape and type: the model alone."""

    def setup(self) -> SetupInfo:
        cfg = self.cfg
        t0 = self.clock()
        import numpy as np

        import edgecnn.runtime  # noqa: F401  (timed: what a device pays before its first image)
        from edgecnn.runtime.session import create_session
        from edgecnn.runtime.spec import META_PRECISION

        t1 = self.clock()
        # The model alone, as a latency benchmark measures it: idle threads spin when there are several.
        self.session, used = create_session(cfg.model, device=cfg.device, threads=cfg.threads,
                                            spin=cfg.threads is not None and cfg.threads > 1)
        t2 = self.clock()
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise WorkerError(f"{cfg.model}: expected one input, found {len(inputs)}")
        spec = inputs[0]
        shape = [cfg.batch if i == 0 else d for i, d in enumerate(spec.shape)]
        if not all(isinstance(d, int) and d > 0 for d in shape):
            raise WorkerError(f"{cfg.model}: input shape {spec.shape} has dynamic dimensions other than the batch")
        if isinstance(spec.shape[0], int) and spec.shape[0] != cfg.batch:
            raise WorkerError(f"the model's batch is fixed at {spec.shape[0]}; ask for --batch {spec.shape[0]}")
        rng = np.random.default_rng(0)
        x: np.ndarray
        if spec.type == "tensor(uint8)":
            x = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif spec.type in ("tensor(float)", "tensor(float16)"):
            x = rng.standard_normal(shape).astype(np.float32 if spec.type == "tensor(float)" else np.float16)
        else:
            raise WorkerError(f"{cfg.model}: input type {spec.type} is not an image input")
        self.feed = {spec.name: x}
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        macs = meta.get(META_MACS)
        return {"import_ms": (t1 - t0) * 1e3, "init_ms": (t2 - t1) * 1e3, "device": used,
                "precision": meta.get(META_PRECISION, "unknown"), "macs": int(macs) if macs else None}

    def run(self, n: int) -> list[float]:
        out, run, feed, clock = [], self.session.run, self.feed, self.clock
        for _ in range(n):
            t = clock()
            run(None, feed)
            out.append(clock() - t)
        return out


OPENVINO_INSTALL = "pip install 'edgecnn[openvino]'"


def openvino_compile(model_path: str, threads: int, batch: int) -> Any:
    """The ONNX file compiled by OpenVINO's CPU plugin as bench runs it: the batch fixed, ``threads`` threads,
    one stream, and the file's own precision (a QDQ file runs as INT8; FP32 is not lowered to BF16 on AMX).

    Raises ImportError without openvino, WorkerError naming the file when OpenVINO cannot read or compile it.
    """
    import openvino as ov

    core = ov.Core()
    try:
        model = core.read_model(model_path)
        if len(model.inputs) != 1:
            raise WorkerError(f"{model_path}: expected one input, found {len(model.inputs)}")
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_dynamic:
            raise WorkerError(f"{model_path}: the input's rank is dynamic")
        if shape[0].is_static and shape[0].get_length() != batch:
            raise WorkerError(f"the model's batch is fixed at {shape[0].get_length()}; ask for --batch "
                              f"{shape[0].get_length()}")
        model.reshape({model.inputs[0]: ov.PartialShape([batch, *list(shape)[1:]])})
        config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                  # Otherwise OpenVINO runs FP32 layers in BF16 on CPUs with AMX: another model, not the file.
                  "INFERENCE_PRECISION_HINT": "f32"}
        return core.compile_model(model, "CPU", config)
    except RuntimeError as exc:  # OpenVINO reports unreadable files and unsupported operators as RuntimeError
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise WorkerError(f"OpenVINO cannot run {model_path}: {lines[-1] if lines else type(exc).__name__}") from None


class OpenVinoRunner(Runner):
    """The same ONNX file through OpenVINO's CPU plugin (a peer runtime), on a random input of its shape."""

    def setup(self) -> SetupInfo:
        cfg = self.cfg
        t0 = self.clock()
        try:
            import numpy as np
            import openvino as ov
        except ImportError:
            raise WorkerError(OPENVINO_INSTALL) from None

        t1 = self.clock()
        compiled = openvino_compile(cfg.model, cfg.threads, cfg.batch)
        self.request = compiled.create_infer_request()
        t2 = self.clock()
        port = compiled.inputs[0]
        shape = list(port.get_shape())
        rng = np.random.default_rng(0)
        if port.get_element_type() == ov.Type.u8:
            x = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif port.get_element_type() in (ov.Type.f32, ov.Type.f16):
            x = rng.standard_normal(shape).astype(np.float32 if port.get_element_type() == ov.Type.f32 else np.float16)
        else:
            raise WorkerError(f"{cfg.model}: input type {port.get_element_type()} is not an image input")
        self.x = x  # the tensor below shares this buffer: keep it alive
        self.request.set_input_tensor(ov.Tensor(x, shared_memory=True))
        # OpenVINO keeps the ONNX file's metadata_props under rt_info["framework"] of the model it reads.
        source, precision, macs = ov.Core().read_model(cfg.model), "unknown", None
        if source.has_rt_info(["framework", META_PRECISION]):
            precision = source.get_rt_info(["framework", META_PRECISION]).astype(str)
        if source.has_rt_info(["framework", META_MACS]):
            macs = int(source.get_rt_info(["framework", META_MACS]).astype(str))
        return {"import_ms": (t1 - t0) * 1e3, "init_ms": (t2 - t1) * 1e3, "device": "cpu", "precision": precision,
                "macs": macs}

    def run(self, n: int) -> list[float]:
        out, infer, clock = [], self.request.infer, self.clock
        for _ in range(n):
            t = clock()
            infer()
            out.append(clock() - t)
        return out


class TorchRunner(Runner):
    """The checkpoint's model in PyTorch, eager or torch.compile, doing the ONNX graph's work."""

    def setup(self) -> SetupInfo:
        cfg = self.cfg
        t0 = self.clock()
        import torch

        from ..checkpoint import load_checkpoint
        from ..models import count_macs, pixels_to_tensor

        t1 = self.clock()
        torch.set_num_threads(cfg.threads)
        device = torch.device("cuda" if cfg.device == "cuda" else "cpu")
        ckpt = load_checkpoint(cfg.model)
        spec = ckpt.spec
        model = ckpt.build_model().to(device)
        macs = count_macs(model, spec.size)
        # torch.compile compiles lazily: the first run pays for it, and says so in first_ms.
        net: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model) if cfg.variant == "compile" else model
        t2 = self.clock()
        gen = torch.Generator().manual_seed(0)
        pixels = torch.randint(0, 256, (cfg.batch, spec.size, spec.size, 3), dtype=torch.uint8, generator=gen)
        sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        # The same work as the ONNX graph: uint8 NHWC pixels in, normalization, the network, softmax out.
        @torch.inference_mode()
        def forward() -> None:
            net(pixels_to_tensor(pixels, spec, device)).softmax(dim=1)
            sync()

        self.forward = forward
        return {"import_ms": (t1 - t0) * 1e3, "init_ms": (t2 - t1) * 1e3, "device": device.type, "precision": "fp32",
                "macs": int(macs)}

    def run(self, n: int) -> list[float]:
        out, forward, clock = [], self.forward, self.clock
        for _ in range(n):
            t = clock()
            forward()
            out.append(clock() - t)
        return out


class ClassifyRunner(Runner):
    """A pass over the image files through Classifier.classify_paths, the code of `classify images`."""

    def setup(self) -> SetupInfo:
        cfg = self.cfg
        t0 = self.clock()
        from edgecnn.runtime import Classifier, StageTimes

        t1 = self.clock()
        self.classifier = Classifier(cfg.model, device=cfg.device, threads=cfg.threads)
        t2 = self.clock()
        self.stage_type = StageTimes
        self.totals = StageTimes()
        return {"import_ms": (t1 - t0) * 1e3, "init_ms": (t2 - t1) * 1e3, "device": self.classifier.device,
                "precision": self.classifier.precision, "macs": None}

    def run(self, n: int) -> list[float]:
        cfg, out = self.cfg, []
        for _ in range(n):
            stages = self.stage_type()
            t = self.clock()
            for result in self.classifier.classify_paths(list(cfg.paths), batch_size=cfg.batch, workers=cfg.threads,
                                                         top_k=5, timings=stages):
                if not result.ok:
                    raise WorkerError(f"classify images failed on {result.path}: {result.error}")
            out.append(self.clock() - t)
            for name in ("images", "decode_s", "wait_s", "infer_s", "post_s", "wall_s"):
                setattr(self.totals, name, getattr(self.totals, name) + getattr(stages, name))
        return out

    def extra(self) -> dict[str, Any]:
        t = self.totals
        if not t.images:
            return {}
        per = 1e3 / t.images
        # decode is summed over the worker threads (CPU time spent), the rest is the inference loop's wall time.
        return {"stages_ms": {"decode+preprocess (all threads)": t.decode_s * per, "wait for decode": t.wait_s * per,
                              "infer": t.infer_s * per, "softmax+top-k": t.post_s * per, "wall": t.wall_s * per}}


class NaiveRunner(Runner):
    """The baseline: open, convert, resize, run one image at a time; no draft decode, no batching, no overlap.

    The resize and crop are the runtime's own, so that the naive loop gives the same answers.
    """

    def setup(self) -> SetupInfo:
        cfg = self.cfg
        t0 = self.clock()
        import numpy as np
        from PIL import Image

        from edgecnn.runtime import Classifier
        from edgecnn.runtime.preprocess import resize_and_crop

        t1 = self.clock()
        clf = Classifier(cfg.model, device=cfg.device, threads=cfg.threads)
        t2 = self.clock()

        def one(path: str) -> None:
            with Image.open(path) as im:
                pixels = np.asarray(resize_and_crop(im.convert("RGB"), clf.spec), dtype=np.uint8)[None]
            int(clf.predict_pixels(pixels)[0].argmax())

        self.one = one
        return {"import_ms": (t1 - t0) * 1e3, "init_ms": (t2 - t1) * 1e3, "device": clf.device,
                "precision": clf.precision, "macs": None}

    def run(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = self.clock()
            for path in self.cfg.paths:
                self.one(path)
            out.append(self.clock() - t)
        return out


RUNNERS: dict[tuple[str, str], type[Runner]] = {
    ("onnxruntime", KIND_MODEL): OrtRunner, ("torch", KIND_MODEL): TorchRunner, ("openvino", KIND_MODEL): OpenVinoRunner,
    ("onnxruntime", KIND_CLASSIFY): ClassifyRunner, ("onnxruntime", KIND_NAIVE): NaiveRunner,
}


def make_runner(cfg: RowConfig, clock: Clock) -> Runner:
    return RUNNERS[(cfg.backend, cfg.kind)](cfg, clock)
