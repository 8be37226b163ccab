"""What ``python -m trainer.bench`` measures, as functions returning JSON-ready dicts.

:func:`bench` times the training step of each loss variant; :func:`precision_check` and
:func:`grad_norm_check` compare reduced precisions and finite-difference gradient norms with
float64; :func:`throughput` runs whole trials side by side. Nothing here prints:
``trainer.bench`` formats the dicts and is the command line (its docstring lists the commands).

Step table: a step is forward + backward + SGD update on one random CIFAR-shaped batch. All
variants share one process and device and are timed interleaved (one step of each in turn, after
warm-up steps), so background load hits them alike; the table reports the median over steps and
its ratio to ``ce``. Variant names: ``kind/estimator`` with the loss's defaults (``loss.precision``
tf32), ``+ieee`` IEEE float32, ``+cd``/``+fwd`` the gradient-norm term by central / forward
difference instead of double backward, ``+batched`` one joint forward, ``+unbiased`` the unbiased
stability term, ``+cl`` channels_last (CUDA only), ``+bench`` cudnn.benchmark. Targets, recorded
and not asserted: score_matching/taylor at most 2.0x a ce step on CPU and 3.3x on GPU, and taylor
cheaper than hutchinson.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from trainer import keys
from trainer.config import LOSS_PRESETS, ConfigError, LossConfig
from trainer.losses import compute_loss, grad_norm_term, input_gradient, precision, true_logit
from trainer.models import build_model
from trainer.precision import fp32_precision
from trainer.train import resolve_device


@dataclass(frozen=True)
class Variant:
    """One timed training step: a loss config and the memory-format / autotuning levers."""

    loss: LossConfig
    channels_last: bool = False
    cudnn_benchmark: bool = False


def _sm(estimator: str = "taylor", **over) -> LossConfig:
    return LossConfig(**{**LOSS_PRESETS["score_matching"], "estimator": estimator, **over})


VARIANTS: dict[str, Variant] = {
    "ce": Variant(LossConfig(kind="ce")),
    "grad_norm": Variant(LossConfig(preset="grad_norm")),
    **{
        f"{kind}/{est}": Variant(LossConfig(**{**LOSS_PRESETS[kind], "estimator": est}))
        for kind in ("score_matching", "anti_score_matching")
        for est in ("taylor", "central", "hutchinson")
    },
    # The opt-in joint forward over [x, x+v(, x−v)], measured against the separate one.
    **{f"score_matching/{est}+batched": Variant(_sm(est, forward="batched")) for est in ("taylor", "central")},
    # The precision and gradient-norm levers of issue-level interest.
    "score_matching/taylor+ieee": Variant(_sm(precision="ieee")),
    "grad_norm+cd": Variant(LossConfig(preset="grad_norm", grad_norm_method="central_difference")),
    "grad_norm+fwd": Variant(LossConfig(preset="grad_norm", grad_norm_method="forward_difference")),
    "score_matching/taylor+cd": Variant(_sm(grad_norm_method="central_difference")),
    "score_matching/taylor+fwd": Variant(_sm(grad_norm_method="forward_difference")),
    "score_matching/taylor+unbiased": Variant(_sm(stability="unbiased")),
}
# Memory-format and autotuning levers: meaningful on CUDA only (no-ops on CPU).
LAYOUT_VARIANTS: dict[str, Variant] = {
    f"{name}{suffix}": Variant(VARIANTS[name].loss, cl, cb)
    for name in ("ce", "grad_norm", "score_matching/taylor", "score_matching/taylor+cd")
    for suffix, cl, cb in (("+cl", True, False), ("+bench", False, True), ("+cl+bench", True, True))
}
TARGET_RATIO = {"cpu": 2.0, "cuda": 3.3}  # score_matching/taylor vs ce, per device type


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(model, optimizer, x, y, variant: Variant, generator) -> tuple[float, float]:
    """(wall, process CPU) seconds of one training step, the device synchronized on both ends."""
    cfg = variant.loss
    if variant.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    saved_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = variant.cudnn_benchmark
    try:
        _sync(x.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        with precision(cfg, x.device):
            out = compute_loss(model, x, y, cfg, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            out["total"].backward()
        optimizer.step()
        _sync(x.device)
        return time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        torch.backends.cudnn.benchmark = saved_benchmark


def _device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def bench(
    arch: str = "resnet18",
    width: float = 1.0,
    batch: int = 32,
    steps: int = 10,
    warmup: int = 2,
    device: str = "auto",
    num_classes: int = 100,
    image_size: int = 32,
    variants: Sequence[str] | None = None,
) -> dict:
    """Median seconds per step of each variant and its ratio to ce; returns a JSON-ready dict.

    ``variants`` default to :data:`VARIANTS`, plus :data:`LAYOUT_VARIANTS` on CUDA. channels_last
    variants are CUDA-only (on CPU torch 2.14.1's channels_last backward aborted the process).
    """
    dev = resolve_device(device)
    table = {**VARIANTS, **LAYOUT_VARIANTS}
    if variants is None:
        variants = list(VARIANTS) + (list(LAYOUT_VARIANTS) if dev.type == "cuda" else [])
    if dev.type != "cuda" and any(table[name].channels_last for name in variants):
        raise ConfigError("channels_last variants (+cl) run on CUDA only")
    torch.manual_seed(0)
    model = build_model(arch, num_classes, 3, width).to(dev)
    models = {False: model}
    if any(table[name].channels_last for name in variants):
        # Same weights in NHWC; each layout has its own optimizer state.
        models[True] = copy.deepcopy(model).to(memory_format=torch.channels_last)
    # A tiny lr keeps the shared model sane over all variants' steps; it does not change the cost.
    optimizers = {
        k: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4) for k, m in models.items()
    }
    x = torch.rand(batch, 3, image_size, image_size, device=dev)
    y = torch.randint(num_classes, (batch,), device=dev)
    generator = torch.Generator(dev).manual_seed(0)
    load_before = os.getloadavg()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for i in range(warmup + steps):
        for name in variants:
            v = table[name]
            seconds = _step(models[v.channels_last], optimizers[v.channels_last], x, y, v, generator)
            if i >= warmup:
                times[name].append(seconds)
    wall = {name: statistics.median(w for w, _ in t) for name, t in times.items()}
    cpu = {name: statistics.median(c for _, c in t) for name, t in times.items()}
    rows = [
        {
            "variant": name,
            "median_s": wall[name],
            "ratio_to_ce": wall[name] / wall["ce"],
            "images_per_s": batch / wall[name],
            # Process CPU seconds (all threads): less sensitive to other processes on a shared
            # machine than wall time, though not to spinning worker threads.
            "median_cpu_s": cpu[name],
            "cpu_ratio_to_ce": cpu[name] / cpu["ce"],
        }
        for name in times
    ]
    ratio = {r["variant"]: r["ratio_to_ce"] for r in rows}
    target = TARGET_RATIO.get(dev.type)
    # None where the variant was not run (a subset of ``variants``).
    taylor, hutchinson = ratio.get("score_matching/taylor"), ratio.get("score_matching/hutchinson")
    return {
        "device": str(dev),
        "device_name": _device_name(dev),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "arch": arch,
        "width": width,
        "batch": batch,
        "image_size": image_size,
        "steps": steps,
        "warmup": warmup,
        "load_average_1min": [load_before[0], os.getloadavg()[0]],  # before, after
        "results": rows,
        "targets": {
            "score_matching/taylor_ratio_max": target,
            "score_matching/taylor_ratio_met": None not in (target, taylor) and taylor <= target,
            "taylor_cheaper_than_hutchinson": None not in (taylor, hutchinson) and taylor < hutchinson,
        },
    }


# ---- numerical checks at fixed noise -----------------------------------------------------------

# Acceptance rules of a precision or a gradient-norm method (the same bar for both): its error
# in h at most 1/10 of h's own spread over noise draws, and the regularizer's weight gradient
# within cosine 0.999 of float64's.
MAX_ERROR_TO_SPREAD = 0.1
MIN_COSINE = 0.999


def precisions_offered(dev: torch.device) -> list[str]:
    """The precisions to check: TF32, IEEE float32 and bf16 autocast on CUDA; float32 on CPU."""
    return ["tf32", "ieee", "bf16"] if dev.type == "cuda" else ["float32"]


def _context(name: str, dev: torch.device):
    if name == "bf16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return fp32_precision("ieee" if name == "float32" else name, dev)


def briefly_trained(
    arch: str, width: float, num_classes: int, image_size: int, batch: int, steps: int, dev: torch.device
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A network after ``steps`` ce steps on seeded class-prototype images, and one batch (x, y)."""
    gen = torch.Generator().manual_seed(0)
    prototypes = torch.rand(num_classes, 3, image_size, image_size, generator=gen)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(num_classes, (batch,), generator=gen)
        x = (prototypes[y] + 0.15 * torch.randn(batch, 3, image_size, image_size, generator=gen)).clamp(0, 1)
        return x.to(dev), y.to(dev)

    torch.manual_seed(0)
    model = build_model(arch, num_classes, 3, width).to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        x, y = draw()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model, *draw()


def _regularizer(model, x, y, cfg: LossConfig, noise: torch.Tensor, grad_norm_method: str):
    """(per-sample h, weight gradient of mean h + ½·mean‖∇ₓf_y‖² + μ·mean h²) at the given noise
    (a (1, B, ...) tensor of v), in the caller's precision context, train mode."""
    model = copy.deepcopy(model)  # BatchNorm's running statistics change in train mode
    x = x.detach().to(noise.dtype).requires_grad_(True)
    logits, f_y = true_logit(model, x, y)
    f_noisy = true_logit(model, x.detach() + noise[0], y)[1]
    h = 2.0 / cfg.sigma**2 * (f_noisy - f_y)
    method = LossConfig(**{**cfg.model_dump(), "grad_norm_method": grad_norm_method})
    grad = input_gradient(f_y, x, create_graph=grad_norm_method == "double_backward", retain_graph=True)
    _, term = grad_norm_term(model, x, y, f_y, grad, method)
    reg = h.mean() + term + cfg.mu * h.pow(2).mean()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(reg, params, allow_unused=True, materialize_grads=True)
    return h.detach().double(), torch.cat([g.flatten() for g in grads]).double()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a, b, dim=0).item()


def precision_check(
    arch: str = "resnet18",
    width: float = 0.25,
    batch: int = 32,
    train_steps: int = 20,
    draws: int = 8,
    device: str = "auto",
    num_classes: int = 100,
    image_size: int = 32,
    precisions: Sequence[str] | None = None,
    grad_norm_method: str = "double_backward",
) -> dict:
    """At fixed noise, each precision against float64: per-sample h error, the regularizer's
    weight-gradient cosine, and the same for the density log-ratio at σ = 1e-4, each beside the
    spread of the quantity over noise draws; with a verdict per precision. The regularizer's
    gradient-norm term is taken by ``grad_norm_method``; the float64 reference always uses the
    double backward, so a finite-difference method is judged against the exact gradient."""
    dev = resolve_device(device)
    cfg = LossConfig(preset="score_matching")
    model, x, y = briefly_trained(arch, width, num_classes, image_size, batch, train_steps, dev)
    gen = torch.Generator().manual_seed(1)
    noises = [cfg.sigma * torch.randn(1, *x.shape, generator=gen, dtype=torch.float64).to(dev) for _ in range(draws)]
    model64 = copy.deepcopy(model).double()
    # The reference is always float64 with the exact (double-backward) gradient-norm term.
    ref = [_regularizer(model64, x, y, cfg, n, "double_backward") for n in noises]
    h64 = torch.stack([h for h, _ in ref])  # (draws, B)
    h_spread = h64.std(0).median().item()  # per-sample spread over draws, median over samples
    draw_cosine = _cosine(ref[0][1], ref[1][1]) if draws > 1 else None
    # Density ratio at σ = 1e-4, eval mode: log p(x+η|y) − log p(x|y) = f_y(x+η) − f_y(x).
    eta = [1e-4 * n[0] / cfg.sigma for n in noises]

    def log_ratios(m, dtype) -> torch.Tensor:
        m = copy.deepcopy(m).to(dtype).eval()
        with torch.no_grad():
            clean = true_logit(m, x.to(dtype), y)[1]
            return torch.stack([true_logit(m, x.to(dtype) + e.to(dtype), y)[1] - clean for e in eta]).double()

    r64 = log_ratios(model, torch.float64)
    r_spread = r64.std(0).median().item()
    rows = []
    for name in precisions or precisions_offered(dev):
        with _context(name, dev):
            out = [_regularizer(model, x, y, cfg, n.float(), grad_norm_method) for n in noises]
            r = log_ratios(model, torch.float32)
        h_err = (torch.stack([h for h, _ in out]) - h64).abs().median().item()
        cosines = [_cosine(g, g64) for (_, g), (_, g64) in zip(out, ref)]
        r_err = (r - r64).abs().median().item()
        accepted = h_err <= MAX_ERROR_TO_SPREAD * h_spread and min(cosines) >= MIN_COSINE
        rows.append(
            {
                "precision": name,
                "h_error_median": h_err,
                "h_error_to_spread": h_err / h_spread,
                "grad_cosine_min": min(cosines),
                "log_ratio_1e-4_error_median": r_err,
                "log_ratio_1e-4_error_to_spread": r_err / r_spread,
                "accepted_for_training": accepted,
                "accepted_for_density_ratios": r_err <= MAX_ERROR_TO_SPREAD * r_spread,
            }
        )
    return {
        "device_name": _device_name(dev),
        "torch": torch.__version__,
        "arch": arch,
        "width": width,
        "batch": batch,
        "train_steps": train_steps,
        "draws": draws,
        "grad_norm_method": grad_norm_method,
        "h_spread_median": h_spread,
        "grad_cosine_between_float64_draws": draw_cosine,
        "log_ratio_1e-4_spread_median": r_spread,
        "rule": f"error <= {MAX_ERROR_TO_SPREAD} x spread and cosine >= {MIN_COSINE}",
        "results": rows,
    }


GRAD_NORM_EPS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def grad_norm_check(
    arch: str = "resnet18",
    width: float = 0.25,
    batch: int = 32,
    train_steps: int = 20,
    device: str = "auto",
    num_classes: int = 100,
    image_size: int = 32,
    eps: Sequence[float] = GRAD_NORM_EPS,
    precisions: Sequence[str] | None = None,
) -> dict:
    """The weight gradient of ½·mean‖∇ₓf_y‖² by finite differences (each ε, each precision) and by
    double backward in that precision, against float64 double backward, train mode."""
    dev = resolve_device(device)
    model, x, y = briefly_trained(arch, width, num_classes, image_size, batch, train_steps, dev)

    def weight_grad(m, dtype, method: str, step: float) -> torch.Tensor:
        m = copy.deepcopy(m).to(dtype).train()
        cfg = LossConfig(kind="grad_norm", grad_norm_method=method, grad_norm_eps=step)
        xr = x.detach().to(dtype).requires_grad_(True)
        _, f_y = true_logit(m, xr, y)
        grad = input_gradient(f_y, xr, create_graph=method == "double_backward", retain_graph=True)
        _, term = grad_norm_term(m, xr, y, f_y, grad, cfg)
        grads = torch.autograd.grad(term, list(m.parameters()), allow_unused=True, materialize_grads=True)
        return torch.cat([g.flatten() for g in grads]).double()

    ref = weight_grad(model, torch.float64, "double_backward", 1.0)  # ε unused
    rows = []
    for name in [p for p in (precisions or precisions_offered(dev)) if p != "bf16"]:
        with _context(name, dev):
            cases = [("double_backward", None)] + [
                (method, e) for method in ("central_difference", "forward_difference") for e in eps
            ]
            for method, e in cases:
                g = weight_grad(model, torch.float32, method, e or 1.0)  # ε unused by double backward
                rows.append(
                    {
                        "precision": name,
                        "method": method,
                        "eps": e,
                        "cosine": _cosine(g, ref),
                        "relative_error": ((g - ref).norm() / ref.norm()).item(),
                    }
                )
    return {
        "device_name": _device_name(dev),
        "torch": torch.__version__,
        "arch": arch,
        "width": width,
        "batch": batch,
        "train_steps": train_steps,
        "reference": "float64 double backward, train mode",
        "results": rows,
    }


# ---- whole trials --------------------------------------------------------------------------------


def trial_config(
    device: str, epochs: int, train_size: int, batch: int, width: float, overrides: Sequence[str] = ()
) -> dict:
    """A score-matching trial on synthetic CIFAR-100-shaped data (3×32×32, 100 classes), eval off."""
    from trainer.config import load_config

    cfg = {
        "data": {"dataset": "synthetic", "channels": 3, "image_size": 32, "num_classes": 100,
                 "train_size": train_size, "test_size": 256},
        "model": {"arch": "resnet18", "width": width},
        "loss": {"preset": "score_matching"},
        "epochs": epochs,
        "batch_size": batch,
        "device": device,
        "eval": {"enabled": False},
    }  # fmt: skip
    return load_config(cfg, overrides).model_dump(mode="json")


def measure_trial(cfg: dict) -> dict:
    """Run one trial of config ``cfg`` (:func:`trial_config`): its last epoch's images/s and, on
    CUDA, its peak allocated and reserved memory in bytes (None on CPU)."""
    from trainer.train import run

    dev = resolve_device(cfg["device"])
    metrics = run(cfg)
    cuda = dev.type == "cuda"
    return {
        "images_per_s": metrics[keys.IMAGES_PER_SECOND],
        "peak_memory_bytes": torch.cuda.max_memory_allocated(dev) if cuda else None,
        "peak_reserved_bytes": torch.cuda.max_memory_reserved(dev) if cuda else None,  # the caching allocator's peak
    }


def throughput(
    per_device: Sequence[int] = (1, 2, 4),
    device: str = "auto",
    epochs: int = 2,
    train_size: int = 4096,
    batch: int = 128,
    width: float = 1.0,
    overrides: Sequence[str] = (),
    threads: int | None = None,
) -> dict:
    """Images/s of whole ``trainer.run`` trials: for each n, n processes at once on one device,
    summed (the last epoch of each, so the first epoch's one-off set-up is excluded)."""
    from trainer.config import load_config
    from trainer.memory import GIB, estimate_memory

    dev = resolve_device(device)
    cfg = trial_config(str(dev), epochs, train_size, batch, width, overrides)
    # trainer.memory's CPU estimate beside the measured peaks: one GPU run validates it.
    estimate = estimate_memory(load_config(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    rows = []
    for n in per_device:
        # Each trial in its own process (the command line's hidden --trial-worker, which prints
        # measure_trial's dict as its last line), so n of them share the device as n trials would.
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "trainer.bench", "--trial-worker", json.dumps(cfg),
                 *(["--threads", str(threads)] if threads else [])],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )  # fmt: skip
            for _ in range(n)
        ]
        trials = []
        for p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"trial worker failed ({p.returncode}): {err[-2000:]}")
            trials.append(json.loads(out.strip().splitlines()[-1]))
        peaks = [t["peak_memory_bytes"] for t in trials]
        reserved = [t.get("peak_reserved_bytes") for t in trials]
        rows.append(
            {
                "trials": n,
                "images_per_s_each": [t["images_per_s"] for t in trials],
                "images_per_s_sum": sum(t["images_per_s"] for t in trials),
                "peak_memory_gib_per_trial": None if None in peaks else max(peaks) / GIB,
                "peak_reserved_gib_per_trial": None if None in reserved else max(reserved) / GIB,
            }
        )
    return {
        "device_name": _device_name(dev),
        "torch": torch.__version__,
        "config": {"epochs": epochs, "train_size": train_size, "batch": batch, "width": width,
                   "overrides": list(overrides)},
        "results": rows,
        "estimate": {"peak_gib": estimate.peak_bytes / GIB, "footprint_gib": estimate.footprint_bytes / GIB,
                     "parts": estimate.describe()},
    }  # fmt: skip
