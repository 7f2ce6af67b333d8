"""Training configuration: three frozen dataclasses, no TensorFlow import.

Every field is one ``fcnx train`` flag (``batch_size`` -> ``--batch-size``), with its
help text in the field's metadata; the CLI is generated from these classes. Defaults
are the recipe measured by ``benchmarks/train_quality.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fcnx.runtime.flags import opt
from fcnx.runtime.intensity import INTENSITY_HELP, parse_intensity

ARCHS = ("fcn32s", "fcn16s", "fcn8s", "fcn4s", "fcn2s")
WIDTHS = {
    "slim": (32, 64, 128, 256, 256),  # the original write-up
    "vgg16": (64, 128, 256, 512, 512),  # the paper's VGG16
}
CONVS_PER_BLOCK = (2, 2, 3, 3, 3)
ENCODER_STRIDE = 32
PRECISIONS = ("auto", "float32", "mixed_bfloat16")


@dataclass(frozen=True)
class ModelConfig:
    """The network. ``--no-batch-norm --no-bilinear-init --no-linear-scores --bn-momentum
    0.99`` reproduces the write-up's model; the defaults are the measured improvements."""

    arch: str = opt("fcn8s", "skip architecture", choices=ARCHS)
    width: str = opt(
        "slim", "encoder widths: slim 32-256 (the write-up), vgg16 64-512", choices=tuple(WIDTHS)
    )
    in_channels: int = opt(1, "1 (grayscale) or 3 (RGB); fcnx train takes it from the data", cli=False)
    num_classes: int = opt(2, "classes; fcnx train takes it from the labels", cli=False)
    head: str = opt(
        "softmax",
        "softmax over the classes, or a 1-channel sigmoid (binary only)",
        choices=("softmax", "sigmoid"),
    )
    batch_norm: bool = opt(True, "batch normalization after every encoder conv")
    bn_momentum: float = opt(
        0.9, "batch-norm moving-average momentum (Keras default 0.99 lags on short runs)"
    )
    bilinear_init: bool = opt(True, "initialize transposed convs to bilinear upsampling (the FCN paper)")
    linear_scores: bool = opt(True, "linear score layers (the write-up used ReLU)")
    fc_filters: int = opt(1024, "filters of the fc6/fc7 1x1 convolutions")
    dropout: float = opt(0.1, "dropout after fc6 and fc7 (the write-up: 0.5)")
    norm_mean: float = opt(0.0, "in-graph normalization: (uint8 - mean) / std")
    norm_std: float = opt(255.0, "in-graph normalization: (uint8 - mean) / std")

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.width not in WIDTHS:
            raise ValueError(f"width must be one of {', '.join(WIDTHS)}, got {self.width!r}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if self.head not in ("softmax", "sigmoid"):
            raise ValueError(f"head must be 'softmax' or 'sigmoid', got {self.head!r}")
        if self.head == "sigmoid" and self.num_classes != 2:
            raise ValueError(f"a sigmoid head is binary: num_classes must be 2, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.bn_momentum < 1.0:
            raise ValueError(f"bn_momentum must be in (0, 1), got {self.bn_momentum}")
        if self.norm_std <= 0:
            raise ValueError(f"norm_std must be positive, got {self.norm_std}")

    @property
    def output_stride(self) -> int:
        """Input sides must be multiples of this (the encoder's five 2x pools)."""
        return ENCODER_STRIDE

    @property
    def skip_levels(self) -> tuple[int, ...]:
        """Pool levels fused on the way up: fcn8s -> (4, 3), fcn2s -> (4, 3, 2, 1)."""
        n = ARCHS.index(self.arch)
        return tuple(range(4, 4 - n, -1))

    @property
    def final_upsample(self) -> int:
        return ENCODER_STRIDE // 2 ** len(self.skip_levels)

    @property
    def output_channels(self) -> int:
        return 1 if self.head == "sigmoid" else self.num_classes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation, applied identically to image and mask (see augment.py)."""

    rotation: float = opt(180.0, "max rotation in degrees either way (EM has no up)")
    width_shift: float = opt(0.05, "max horizontal shift, fraction of the width")
    height_shift: float = opt(0.05, "max vertical shift, fraction of the height")
    shear: float = opt(5.0, "max shear in degrees")
    zoom: float = opt(0.1, "zoom in [1 - zoom, 1 + zoom]")
    hflip: bool = opt(True, "random horizontal flips")
    vflip: bool = opt(True, "random vertical flips")
    brightness: float = opt(0.1, "max brightness shift, fraction of 255 (image only)")
    contrast: float = opt(0.1, "contrast factor in [1 - c, 1 + c] (image only)")
    elastic: float = opt(
        0.0, "elastic deformation (U-Net's EM augmentation): std in pixels of random shifts on a coarse grid"
    )
    elastic_grid: int = opt(3, "control points per side of the elastic deformation's grid")

    def __post_init__(self) -> None:
        for name in ("width_shift", "height_shift", "zoom", "brightness", "contrast"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"augment {name} must be in [0, 1), got {value}")
        if not 0.0 <= self.rotation <= 180.0:
            raise ValueError(f"rotation must be in [0, 180] degrees, got {self.rotation}")
        if not 0.0 <= self.shear < 90.0:
            raise ValueError(f"shear must be in [0, 90) degrees, got {self.shear}")
        if self.elastic < 0 or self.elastic_grid < 2:
            raise ValueError(
                f"elastic must be >= 0 and elastic_grid >= 2, got {self.elastic}, {self.elastic_grid}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


NO_AUGMENTATION = AugmentConfig(0.0, 0.0, 0.0, 0.0, 0.0, False, False, 0.0, 0.0, elastic=0.0)


@dataclass(frozen=True)
class TrainConfig:
    """A training run: data, schedule, loss. ``model`` and ``augment`` nest the others."""

    data: str = opt("", "dataset folder with image/ and label/, or an image stack with --labels", cli=False)
    labels: str | None = opt(
        None,
        "with DATA an image stack (a multi-page TIFF such as ISBI's train-volume.tif): its label stack "
        "(train-labels.tif), page i the label of page i",
        metavar="STACK",
    )
    out: str = opt("", "run folder to write", cli=False)
    val: str | None = opt(
        None, "separate validation folder (image/, label/); default: split off --val-fraction", metavar="DIR"
    )
    val_fraction: float = opt(0.15, "fraction of DATA held out for validation (deterministic by --seed)")
    classes: str | None = opt(
        None, "classes file: 'name' or 'name R G B' per line; default: detect 0/255 or ids", metavar="FILE"
    )
    channels: int | None = opt(None, "model input channels, 1 or 3; default: 3 if any image is colour")
    intensity: str = opt("auto", INTENSITY_HELP + "; recorded in the model card", metavar="SPEC")
    epochs: int = opt(36, "epochs")
    steps_per_epoch: int = opt(50, "batches per epoch (random crops, so an epoch is a step count)")
    batch_size: int = opt(4, "crops per batch")
    crop: int = opt(256, "random crop side, a multiple of 32; validation always uses whole images")
    lr: float = opt(1e-3, "Adam learning rate", metavar="LR")
    schedule: str = opt("cosine", "learning-rate schedule", choices=("cosine", "constant"))
    ema: float = opt(
        0.0,
        "keep an exponential moving average of the weights with this momentum (Polyak averaging, "
        "e.g. 0.99); validation, best.keras and last.keras use the averaged weights (0: off)",
        metavar="M",
    )
    dice_weight: float = opt(1.0, "weight of the soft Dice loss added to cross-entropy (0: off)")
    lovasz_weight: float = opt(
        0.0, "weight of the Lovasz-softmax loss (a convex surrogate of 1 - IoU per class) added (0: off)"
    )
    class_weights: tuple[float, ...] | None = opt(None, "cross-entropy weight per class, e.g. 2 1")
    precision: str = opt(
        "float32",
        "training compute: float32, or mixed_bfloat16 (bfloat16 convolutions, float32 weights; "
        "~1.4x faster epochs on CPUs with AMX); auto: mixed_bfloat16 where the CPU has AMX-BF16 and no GPU "
        "is used, else float32. Saved models are float32 either way",
        choices=PRECISIONS,
    )
    seed: int = opt(0, "seed for the split, initialization, crops and augmentation")
    resume: bool = opt(False, "continue an interrupted run in OUT at the epoch it reached")
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.crop < 32 or self.crop % ENCODER_STRIDE:
            raise ValueError(f"crop must be a positive multiple of {ENCODER_STRIDE}, got {self.crop}")
        for name in ("epochs", "steps_per_epoch", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        parse_intensity(self.intensity, "--intensity")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.dice_weight < 0 or self.lovasz_weight < 0:
            raise ValueError(
                f"dice_weight and lovasz_weight must be >= 0, got {self.dice_weight}, {self.lovasz_weight}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The inverse of to_dict (config.json); unknown keys are errors."""
        values = dict(data)
        values.setdefault("intensity", "full")  # a config.json from before --intensity: read as it was
        values["model"] = ModelConfig(**values.get("model", {}))
        values["augment"] = AugmentConfig(**values.get("augment", {}))
        if values.get("class_weights") is not None:
            values["class_weights"] = tuple(values["class_weights"])
        return cls(**values)
