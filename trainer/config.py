"""One validated config for a training run: the single source of defaults.

Every field carries its meaning and unit. Configs load from YAML files, plain dicts
and dotted ``key=value`` overrides; unknown keys and out-of-range values raise
:class:`ConfigError` naming the offending field, before any work starts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DATASETS = ("cifar10", "cifar100", "digits", "synthetic", "gaussians")
Arch = Literal["resnet18", "resnet9", "vgg11", "vgg11_released"]
ARCHS = get_args(Arch)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field."""


class _Strict(BaseModel):
    # extra="forbid": a typo in a key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    dataset: Literal["cifar10", "cifar100", "digits", "synthetic", "gaussians"] = "digits"
    data_dir: str = "./data"  # torchvision root for cifar10/cifar100
    download: bool = False  # allow torchvision to download CIFAR into data_dir
    # Check CIFAR's files against the md5 sums torchvision knows for the published dataset; false
    # reads an own copy in CIFAR's on-disk format (other images, a subset) unchecked.
    verify: bool = True
    train_size: int | None = Field(None, ge=1)  # use the first N training images (None: all)
    test_size: int | None = Field(None, ge=1)  # use the first N test images (None: all)
    augment: bool = True  # random crop with padding + horizontal flip, on the device
    crop_padding: int = Field(4, ge=0)  # pixels of zero padding before the random crop
    flip: bool = True  # random horizontal flips (when augment is on)
    # Shape of the generated datasets (synthetic, gaussians); ignored by the real ones.
    num_classes: int = Field(10, ge=2)
    channels: int = Field(1, ge=1)
    image_size: int = Field(8, ge=2)  # pixels per side
    # gaussians only: the known class-conditional density N(m_y, noise_std^2 * K).
    noise_std: float = Field(0.1, gt=0)  # per-pixel standard deviation
    covariance: Literal["isotropic", "smooth"] = "isotropic"  # K = I, or a smooth correlated K
    split_seed: int = 0  # seed of the dataset itself (generation, train/test and validation splits)
    # Validation images carved from the training images (after train_size) by a generator seeded
    # with split_seed: a fraction in (0, 1), a count (>= 1), or 0 for none (train on every training
    # image, as the paper did; then nothing but the test set is left to select by). The default,
    # a tenth, is 5000 of CIFAR's 50,000 training images, 144 of digits' 1437, 200 of the 2000
    # gaussians images, and scales with train_size.
    val_size: float = Field(0.1, ge=0)

    @field_validator("val_size")
    @classmethod
    def _check_val_size(cls, v: float) -> float | int:
        if v < 1:
            return v
        if v != int(v):
            raise ValueError("must be a fraction in (0, 1), a count (a whole number >= 1), or 0 for none")
        return int(v)

    def resolved_image_size(self) -> int:
        """Pixels per side of the dataset's images."""
        return FIXED_IMAGE_SIZES.get(self.dataset, self.image_size)


FIXED_IMAGE_SIZES = {"cifar10": 32, "cifar100": 32, "digits": 8}  # pixels; the others use image_size
MIN_SIZE = {"vgg11_released": 16}  # pixels per side an arch needs (four 2x max-pools)


class ModelConfig(_Strict):
    # vgg11_released: the released code's judge layout (images of 16 px or more); vgg11: the
    # standard VGG-11, which fits any size.
    arch: Arch = "resnet18"
    width: float = Field(1.0, gt=0)  # channel multiplier: 1.0 is the paper's 64/128/256/512
    beta: float | None = Field(10.0, gt=0)  # softplus sharpness; None gives ReLU


# The paper's values for each loss (Section 4); `preset: NAME` in a loss section starts
# from these and explicit fields override them.
LOSS_PRESETS: dict[str, dict[str, Any]] = {
    "baseline": {"kind": "ce"},
    "score_matching": {"kind": "score_matching", "lam": 1e-3, "mu": 1e-4, "sigma": 0.01},
    # The released code's defaults (train.py: regularization constant 1e-5, ScoreMatching's
    # stability weight 1e-3, noise std 0.01), which are also the best cell of the paper's
    # Appendix D sweep (λ = 1e-5, μ = 1e-3); the main text's models use "score_matching".
    "score_matching_released": {"kind": "score_matching", "lam": 1e-5, "mu": 1e-3, "sigma": 0.01},
    "anti_score_matching": {"kind": "anti_score_matching", "lam": 1e-4, "tau": 1000.0, "sigma": 0.01},
    # The released code (idiap/rethinking-saliency) used tau=1e4 and sigma=1e-3.
    "anti_score_matching_released": {
        "kind": "anti_score_matching",
        "lam": 1e-4,
        "tau": 1e4,
        "sigma": 1e-3,
    },
    "grad_norm": {"kind": "grad_norm", "lam": 1e-3},
}


class LossConfig(_Strict):
    kind: Literal["ce", "grad_norm", "score_matching", "anti_score_matching"] = "ce"
    lam: float = Field(0.0, ge=0)  # λ: weight of the regularizer
    mu: float = Field(0.0, ge=0)  # μ: weight of the stability term h(x)^2 (score matching)
    sigma: float = Field(0.01, gt=0)  # std of the input noise v in the trace estimator
    tau: float = Field(1000.0, gt=0)  # clamp of h(x) per sample (anti score matching)
    samples: int = Field(1, ge=1)  # noise draws per input for the trace estimator
    estimator: Literal["taylor", "central", "hutchinson"] = "taylor"
    # How the finite-difference estimators (taylor, central) run their passes; hutchinson has no
    # noisy forward and ignores it. "separate": clean and noisy inputs in separate forwards (the
    # released code; BatchNorm batch statistics per pass). "batched": one forward over the
    # concatenation [x, x+v(, x−v)] — fewer, larger kernels, but in train mode BatchNorm
    # normalizes with statistics of the joint batch, so the numbers differ from "separate" in
    # train mode (identical in eval mode).
    forward: Literal["separate", "batched"] = "separate"
    # Float32 precision of the convolutions and matmuls of every loss with a finite difference
    # (score_matching, anti_score_matching, and grad_norm_method != double_backward), backward
    # included, on CUDA: "tf32" (default; its error is far below the estimator's own noise, see
    # docs/performance-gpu.md) or "ieee" float32. No effect on CPU. bf16 is refused (see below).
    precision: Literal["tf32", "ieee"] = "tf32"
    # How the weight gradient of the ½‖∇ₓf_y‖² term is taken (grad_norm, score_matching).
    # "double_backward": exact, through the input gradient's graph (the paper's and the released
    # code's way). "central_difference" / "forward_difference": ∇θ of a finite difference of
    # Σf_y along the detached input gradient, no double backward (two / one extra forwards).
    grad_norm_method: Literal["double_backward", "central_difference", "forward_difference"] = (
        "double_backward"
    )
    # Step of the finite difference above: root-mean-square per-sample L2 norm of the input
    # perturbation, in input units (pixels in [0, 1]). Chosen by tests/test_gradnorm_fd.py's table.
    grad_norm_eps: float = Field(1e-3, gt=0)
    # The μ term (score_matching): "biased" is the paper's mean h² of one estimate (its
    # expectation carries 4‖∇ₓf_y‖²/σ² besides (tr H)², see docs/losses.md); "unbiased" is
    # h₁·h₂ of two independent estimates (expectation (tr H)²; twice the noise draws).
    stability: Literal["biased", "unbiased"] = "biased"

    @field_validator("precision", mode="before")
    @classmethod
    def _refuse_bf16(cls, v: Any) -> Any:
        if isinstance(v, str) and v.lower() in ("bf16", "bfloat16", "fp16", "float16", "half"):
            raise ValueError(
                f"{v!r} is refused: on an H100, against float64 at fixed noise, bf16 autocast put "
                "the trace estimate h off by a median of 75-108 and gave the regularizer's weight "
                "gradient a cosine of 0.945 (TF32: 4.8 and 0.9998; docs/performance-gpu.md); "
                "use tf32 or ieee"
            )
        return v

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "preset" in data:
            data = dict(data)
            name = data.pop("preset")
            if name not in LOSS_PRESETS:
                raise ValueError(f"unknown loss preset {name!r}; choose from {sorted(LOSS_PRESETS)}")
            data = {**LOSS_PRESETS[name], **data}
        return data


class OptimConfig(_Strict):
    lr: float = Field(0.1, gt=0)  # SGD learning rate at batch_size
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    nesterov: bool = False
    milestones: list[float] = [0.5, 0.75]  # fractions of the epochs where lr is multiplied by gamma
    gamma: float = Field(0.1, gt=0, le=1)

    @field_validator("milestones")
    @classmethod
    def _check_milestones(cls, v: list[float]) -> list[float]:
        if any(not 0 < m < 1 for m in v) or v != sorted(v):
            raise ValueError("must be increasing fractions strictly between 0 and 1")
        return v


CONSTANT_FILL = 0.5  # the released code's fill value for removed pixels (perturbation_fill: constant)


class EvalConfig(_Strict):
    every: int = Field(0, ge=0)  # evaluate every k epochs; 0: only after the last epoch
    enabled: bool = True  # run the paper's evaluations (samples, GAN-test, ratios, perturbation)
    judge: str | None = None  # path to a judge checkpoint (trainer.judge); None: no GAN-test
    # Samples (Fig. 2): projected gradient ascent on f_y.
    samples: int = Field(1024, ge=1)  # number of generated samples; targets = test labels in order
    steps: int = Field(500, ge=0)  # gradient-ascent steps
    step_size: float = Field(0.1, gt=0)
    prior: float = Field(0.01, ge=0)  # weight of the pull towards 0.5
    init_mean: float = 0.5
    init_std: float = Field(0.2, ge=0)
    # Density ratios (Fig. 1).
    density_sigmas: list[float] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    density_draws: int = Field(1, ge=1)  # noise draws per test image
    density_images: int = Field(1024, ge=1)  # test images used
    # Pixel perturbation (Fig. 3).
    perturbation_points: int = Field(25, ge=2)  # fractions logspace(-2, 0, points)
    perturbation_fill: Literal["image_mean", "constant"] = "image_mean"  # paper; "constant" is 0.5
    perturbation_images: int = Field(1024, ge=1)
    # Images written as grids.
    grid_images: int = Field(64, ge=1)
    # Who the pictures are of, opening every picture's title so that a downloaded file still
    # names its run (the sweep sets its point name, e.g. "sm λ1e-3 μ1e-4 s0"); "": no label.
    label: str = ""


class TrainConfig(_Strict):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    eval: EvalConfig = EvalConfig()
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=1)
    seed: int = 0  # seeds weights, data order, augmentation and noise
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    # Throughput levers of the training step (no effect on CPU; off unless trainer.bench shows
    # they pay on the device, see docs/performance-gpu.md).
    channels_last: bool = False  # model and batches in NHWC memory format (CUDA only)
    cudnn_benchmark: bool = False  # let cuDNN time its convolution algorithms on first use

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str) -> str:
        if v != "auto" and v.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ValueError(f"must be auto, cpu, cuda[:N] or mps, not {v!r}")
        return v

    @model_validator(mode="after")
    def _check_arch_fits(self) -> TrainConfig:
        check_arch_fits(self.model.arch, self.data, "model.arch")
        return self


def check_arch_fits(arch: str, data: DataConfig, field: str) -> None:
    """Refuse an arch whose pools the dataset's images are too small for (ValueError naming ``field``)."""
    size = data.resolved_image_size()
    if size < MIN_SIZE.get(arch, 0):
        raise ValueError(
            f"{field}: {arch} needs images of at least {MIN_SIZE[arch]} px (four 2x max-pools), but "
            f"data.dataset={data.dataset} has {size} px: use vgg11"
        )


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        # A whole-model check (e.g. check_arch_fits) names its own fields.
        lines.append(msg if not e["loc"] and e["type"] == "value_error" else f"{field}: {msg}")
    return "; ".join(lines)


def set_dotted(tree: dict, key: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``key = "a.b.c"``, creating dicts on the way."""
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{key}: {p!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


class YamlAlias(yaml.YAMLError):
    """A YAML alias (``*name``) in a config or ``--set`` value: refused by :func:`load_yaml`."""

    def __init__(self, event: yaml.AliasEvent) -> None:
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        super().__init__(f"line {line}: YAML alias *{event.anchor} (aliases and merge keys are not accepted; "
                         "write the values out)")


def load_yaml(text: str) -> Any:
    """Read one YAML document with PyYAML's safe loader, refusing aliases (:class:`YamlAlias`).

    An alias repeats its anchor's node, so a few hundred bytes of nested aliases (a "billion
    laughs") stand for 10^8 values, which validation would then walk for minutes; no config
    needs one. The text's events are scanned first (linear in its length, nothing expanded), so
    such a value is refused at once.
    """
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise YamlAlias(event)
    return yaml.load(text, Loader=yaml.SafeLoader)


def parse_override(item: str) -> tuple[str, Any]:
    """``"loss.lam=1e-3"`` -> ``("loss.lam", 0.001)``; the value is read as YAML (no aliases)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like key=value")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except YamlAlias as e:
        raise ConfigError(f"{key.strip()}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{key}: cannot read value {raw!r}: {e}") from None
    # YAML 1.1 reads "1e-3" as a string; numbers written that way are meant as floats.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return key.strip(), value


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing or malformed file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = load_yaml(path.read_text()) or {}
    except YamlAlias as e:
        raise ConfigError(f"config file {str(path)!r}, {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


def validate(model: type[BaseModel], data: Mapping[str, Any], prefix: str = "") -> Any:
    """Validate ``data`` as ``model``; errors become one ConfigError naming each field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        msg = _format_errors(e)
        if prefix:
            msg = "; ".join(f"{prefix}.{part}" for part in msg.split("; "))
        raise ConfigError(msg) from None


def load_config(
    source: str | Path | Mapping[str, Any] | TrainConfig | None = None,
    overrides: Sequence[str] = (),
) -> TrainConfig:
    """Build a TrainConfig from a YAML file, a dict or defaults, then apply ``key=value`` overrides."""
    if isinstance(source, TrainConfig):
        data = source.model_dump()
    elif isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
    elif source is None:
        data = {}
    else:
        data = read_yaml(source)
    for item in overrides:
        set_dotted(data, *parse_override(item))
    return validate(TrainConfig, data)


def flatten(cfg: BaseModel | Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a config to ``{"loss.lam": 0.001, ...}`` (for logging as parameters)."""
    data = cfg.model_dump() if isinstance(cfg, BaseModel) else cfg
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
