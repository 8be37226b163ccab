"""The command line that evaluates a trained checkpoint, or measures what one evaluation costs.

(The evaluations themselves are the library trainer.evaluation; this module only reads files,
rebuilds the model and calls it.)

    python -m trainer.evaluate --checkpoint RUN/last.pt --judge judges/judge-KEY.pt --out RUN/eval \\
        [--set eval.samples=256 --set eval.steps=100 --set device=cpu]
    python -m trainer.evaluate --bench [--bench-samples 64 --bench-steps 3 --bench-images 128]

The first rebuilds the model and dataset from the resolved config stored in the checkpoint, runs
every evaluation (trainer.evaluation.evaluate_all), prints every metric and writes the images.
``--bench`` times one full evaluation of ResNet-18 (width 1) at CIFAR-100 size with the default
EvalConfig on random weights and images; each part runs on a reduced number of samples, steps and
images and is extrapolated linearly (the work is linear in each), which the output states.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from trainer import evaluation as ev
from trainer.checkpoint import judge_from_info, load_checkpoint, read_judge
from trainer.config import ConfigError, EvalConfig, TrainConfig, load_config
from trainer.data import Dataset, load_dataset
from trainer.models import build_model
from trainer.train import resolve_device


# What --set may change: how and where the model is evaluated, not what was trained.
EVAL_OVERRIDES = ("eval.", "device=", "data.")


class UsageError(Exception):
    """Bad user input: printed as one line, exit status 2."""


def model_from_checkpoint(
    checkpoint: str | Path, device: str | torch.device | None = None, overrides: Sequence[str] = ()
) -> tuple[nn.Module, TrainConfig, Dataset]:
    """Rebuild the model of a training checkpoint from the resolved config stored in it.

    Returns the model with the checkpoint's weights, on ``device`` (default: the config's
    ``device``) in eval mode, the config with ``overrides`` applied, and the dataset the config
    names, on the same device. Raises trainer.checkpoint.CheckpointError for a missing, unreadable
    or non-training file, UsageError for weights that do not fit, ConfigError for a bad override
    (all ConfigErrors).
    """
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    cfg = load_config(state["config"], overrides)
    device = resolve_device(cfg.device if device is None else str(device))
    data = load_dataset(cfg.data, device)
    model = build_model(
        cfg.model.arch, data.num_classes, data.in_channels, cfg.model.width, cfg.model.beta, data.image_size
    )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise UsageError(
            f"checkpoint {str(checkpoint)!r}: its weights do not fit {cfg.model.arch} on {cfg.data.dataset}"
        ) from None
    return model.to(device).eval(), cfg, data


def evaluate_checkpoint(
    checkpoint: str | Path, judge: str | Path | None, out_dir: str | Path | None, overrides: Sequence[str] = ()
) -> tuple[dict[str, float], dict[str, str]]:
    """Rebuild the model and data of a training checkpoint and run evaluate_all on them.

    ``judge`` defaults to the checkpoint config's ``eval.judge`` (None: no GAN-test); ``out_dir``
    to ``eval/`` beside the checkpoint. Every input is checked before anything is written.
    """
    checkpoint = Path(checkpoint)
    for item in overrides:
        if not item.startswith(EVAL_OVERRIDES):
            raise UsageError(f"--set {item!r}: only eval.*, device and data.* can change when evaluating a checkpoint")
    model, cfg, data = model_from_checkpoint(checkpoint, overrides=overrides)
    judge = judge if judge is not None else cfg.eval.judge
    judge_info = read_judge(judge) if judge is not None else None
    if judge_info is not None and judge_info["num_classes"] != data.num_classes:
        raise UsageError(
            f"judge {str(judge)!r} has {judge_info['num_classes']} classes, "
            f"data.dataset={cfg.data.dataset} has {data.num_classes}"
        )
    out_dir = Path(out_dir) if out_dir is not None else checkpoint.parent / "eval"
    judge_model = judge_from_info(judge_info, resolve_device(cfg.device)) if judge_info is not None else None
    return ev.evaluate_all(model, data, cfg.eval, judge=judge_model, out_dir=out_dir, seed=cfg.seed, loss=cfg.loss)


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process over all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":  # CUDA runs asynchronously: wait before reading the clocks
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(samples: int, steps: int, images: int, device: str = "cpu") -> dict[str, float]:
    """Time one default evaluation of ResNet-18 (width 1) on 32x32x3 images with 100 classes.

    Sampling runs ``samples`` × ``steps`` and the other parts on ``images`` test images; each is
    scaled linearly to the default EvalConfig. Returns the extrapolated wall seconds per part.
    """
    cfg = EvalConfig()
    device = resolve_device(device)
    grid = min(images, cfg.grid_images)
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=100, in_channels=3, width=1.0).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(images, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 100, (images,), generator=gen).to(device)
    fractions = np.logspace(-2, 0, cfg.perturbation_points)
    ev.input_gradient(model, x[:2], y[:2])  # warm-up: one-off kernel setup is not evaluation cost
    parts = {
        "samples": (
            lambda: ev.generate_samples(model, torch.arange(samples) % 100, shape=(3, 32, 32), steps=steps),
            (cfg.samples / samples) * (cfg.steps / steps),
        ),
        "density_ratios": (
            lambda: ev.density_ratios(model, x, y, cfg.density_sigmas, cfg.density_draws),
            cfg.density_images / images,
        ),
        "pixel_perturbation": (
            lambda: ev.pixel_perturbation(model, x, y, fractions=fractions, fill=cfg.perturbation_fill),
            cfg.perturbation_images / images,
        ),
        "saliency": (lambda: ev.saliency_maps(model, x[:grid], y[:grid]), cfg.grid_images / grid),
    }
    print(
        f"evaluation cost: resnet18 width 1, 32x32x3, 100 classes, {device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(
        f"measured: samples {samples} x {steps} steps, density/perturbation on {images} images; "
        f"scaled linearly to samples {cfg.samples} x {cfg.steps} steps, density {cfg.density_images} images x "
        f"{len(cfg.density_sigmas)} sigmas x {cfg.density_draws} draws, perturbation {cfg.perturbation_images} "
        f"images x {cfg.perturbation_points} fractions"
    )
    result = {}
    total_wall = total_cpu = 0.0
    for name, (fn, scale) in parts.items():
        wall, cpu = _timed(fn, device)
        result[name] = wall * scale
        total_wall += wall * scale
        total_cpu += cpu * scale
        print(f"  {name:20s} measured {wall:7.2f} s wall  x{scale:8.1f} -> {wall * scale:9.1f} s wall, {cpu * scale:9.1f} s CPU")
    result["total"] = total_wall
    print(f"  {'total (extrapolated)':20s} {total_wall:9.1f} s wall = {total_wall / 60:.1f} min, {total_cpu:9.1f} s CPU")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="training checkpoint (last.pt or best.pt)")
    parser.add_argument("--judge", type=Path, help="judge file from trainer.judge (omit: no GAN-test)")
    parser.add_argument("--out", type=Path, help="directory for images and eval.json (default: beside the checkpoint)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the checkpoint's config, e.g. eval.samples=256 or device=cpu")
    parser.add_argument("--bench", action="store_true", help="time one default evaluation of resnet18 at CIFAR size")
    parser.add_argument("--bench-samples", type=int, default=64, help="samples timed (default 64)")
    parser.add_argument("--bench-steps", type=int, default=3, help="gradient-ascent steps timed (default 3)")
    parser.add_argument("--bench-images", type=int, default=128, help="test images timed (default 128)")
    parser.add_argument("--bench-device", default="cpu", help="device of --bench: cpu (default), cuda, auto")
    parser.add_argument("--bench-threads", type=int, help="CPU threads of --bench (default: torch's, one per core)")
    args = parser.parse_args(argv)
    try:
        if args.bench:
            if min(args.bench_samples, args.bench_steps, args.bench_images, args.bench_threads or 1) < 1:
                raise UsageError("--bench-samples, --bench-steps, --bench-images and --bench-threads must be at least 1")
            if args.bench_threads is not None:
                torch.set_num_threads(args.bench_threads)
            bench(args.bench_samples, args.bench_steps, args.bench_images, args.bench_device)
            return 0
        if args.checkpoint is None:
            raise UsageError("--checkpoint is required (or --bench)")
        metrics, files = evaluate_checkpoint(args.checkpoint, args.judge, args.out, args.overrides)
    except (UsageError, ConfigError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    for name in sorted(metrics):
        print(f"{name:40s} {metrics[name]:.6g}")
    for name, path in files.items():
        print(f"{name:40s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
