"""What a training run is told (TrainConfig, checked), the preprocessing it fixes, and what it returns (TrainResult)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .defaults import DEFAULT_ARCH, DEFAULT_BATCH_SIZE, DEFAULT_WEIGHT_DECAY
from .models import model_info, validate_size
from .runtime.spec import PreprocessSpec
from .transfer import DEFAULT_BACKBONE_LR, DEFAULT_HEAD_WARMUP, DEFAULT_MIN_STEPS


@dataclass(frozen=True)
class TrainConfig:
    arch: str = DEFAULT_ARCH  # a name from `edgecnn models`
    img_size: int | None = None  # model input side; None = the architecture's default size
    epochs: int | None = None  # passes over the training set; None = DEFAULT_EPOCHS, raised to reach min_steps
    batch_size: int = DEFAULT_BATCH_SIZE  # global batch: split across processes under DDP
    lr: float | None = None  # peak learning rate; None = 2e-3 for AdamW, 0.05 for SGD (scaled by batch/64)
    optimizer: str = "adamw"  # adamw or sgd (momentum 0.9, nesterov)
    weight_decay: float = DEFAULT_WEIGHT_DECAY  # decoupled for AdamW, L2 for SGD; not applied to biases and norms
    warmup_epochs: float = 1.0  # linear warm-up before the cosine decay
    label_smoothing: float = 0.1  # softens targets; makes softmax margins honest
    crop_scale: float = 0.7  # smallest area fraction of the random resized crop
    hflip: bool = False  # horizontal flips: off, since they are wrong for text, arrows and hands
    crop_pct: float | None = None  # evaluation crop; None = the architecture's (1.0 keeps the whole shorter side)
    val_split: float = 0.2  # share held out per class when DATA_DIR has no train/ and val/
    seed: int = 0  # one seed for the split, the initial weights, the order and the augmentation
    workers: int = 0  # DataLoader worker processes; 0 loads in the training process (images are cached)
    device: str = "auto"  # auto, cpu or cuda
    amp: bool = False  # CUDA autocast: bfloat16 where supported, else float16 with a grad scaler
    sync_bn: bool = False  # synchronize BatchNorm statistics across processes (DDP only)
    # Starting weights and the few-images recipe (edgecnn.transfer; benchmarks/transfer.py measures the defaults).
    pretrained: bool = False  # start from the architecture's ImageNet weights (torchvision, via the torch hub cache)
    weights: str | None = None  # start from a torchvision-format state_dict file (.pth); the classifier is new
    init: str | None = None  # start from an edgecnn checkpoint of this architecture (other labels: a new classifier)
    freeze_backbone: bool = False  # train the classifier only, all the way (a linear probe); needs starting weights
    head_warmup: float = DEFAULT_HEAD_WARMUP  # share of the steps that train a new classifier alone, backbone frozen
    backbone_lr: float = DEFAULT_BACKBONE_LR  # with starting weights: the backbone's learning rate / the classifier's
    min_steps: int = DEFAULT_MIN_STEPS  # with epochs=None: at least this many optimizer steps (tiny datasets)
    balance: bool = False  # weight the loss by inverse class frequency (composes with DDP's sampler)
    calibrate: bool = True  # after training: fit a softmax temperature on val, fold it into best.pt (and an OOD threshold)
    gpu_augment: str = "auto"  # random crops on the device, batched (auto: when it is CUDA), on, or off (Pillow on the CPU)

    def __post_init__(self) -> None:
        model_info(self.arch)  # raises for an unknown architecture
        checks = [
            (self.epochs is None or self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (0 <= self.head_warmup < 1, f"head warm-up is a share of the steps in [0, 1), got {self.head_warmup}"),
            (0 < self.backbone_lr <= 1, f"backbone learning rate factor must be in (0, 1], got {self.backbone_lr}"),
            (self.min_steps >= 0, f"min steps must be >= 0, got {self.min_steps}"),
            (sum(map(bool, (self.pretrained, self.weights, self.init))) <= 1,
             "--pretrained, --weights and --init are alternatives: start from one of them"),
            (not self.freeze_backbone or bool(self.pretrained or self.weights or self.init),
             "--freeze-backbone trains only the classifier, which needs starting weights: add --pretrained, "
             "--weights FILE or --init CKPT"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr is None or self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.optimizer in ("adamw", "sgd"), f"optimizer must be adamw or sgd, got {self.optimizer!r}"),
            (0 < self.crop_scale <= 1, f"crop scale must be in (0, 1], got {self.crop_scale}"),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (self.gpu_augment in ("auto", "on", "off"), f"gpu augment must be auto, on or off, got {self.gpu_augment!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.img_size is not None:
            validate_size(self.img_size)

    @property
    def size(self) -> int:
        return self.img_size or model_info(self.arch).default_size

    @property
    def peak_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        base = 2e-3 if self.optimizer == "adamw" else 0.05
        return base * self.batch_size / 64

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}")
        return cls(**data)


@dataclass
class TrainResult:
    run_dir: Path
    best_val_accuracy: float
    best_epoch: int
    epochs_run: int
    seconds: float
    history: list[dict[str, float]]


def data_spec(config: TrainConfig, labels: tuple[str, ...]) -> PreprocessSpec:
    """The preprocessing of this run: the architecture's data config (what its starting weights expect)."""
    info = model_info(config.arch)
    crop_pct = info.crop_pct if config.crop_pct is None else config.crop_pct
    return PreprocessSpec(size=config.size, labels=labels, crop_pct=crop_pct, interpolation=info.interpolation,
                          mean=info.mean, std=info.std)
