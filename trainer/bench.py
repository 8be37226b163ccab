"""Benchmark: seconds per training step of each loss and trace estimator, against a ce step.

    python -m trainer.bench --arch resnet18 --batch 32 --steps 10 --json bench.json

A step is forward + backward + SGD update on one random CIFAR-shaped batch. All variants share one
process and device and are timed interleaved (one step of each in turn, after warm-up steps), so
background load hits them alike; the table reports the median over steps and its ratio to ``ce``.
Targets, recorded and not asserted: score_matching/taylor at most 2.0x a ce step on CPU and 3.3x
on GPU, and taylor cheaper than hutchinson. On GPU the ce step may use TF32 while the
finite-difference losses turn it off (as they must): the ratio is the honest cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from trainer.config import LOSS_PRESETS, ConfigError, LossConfig
from trainer.losses import compute_loss, precision
from trainer.models import build_model
from trainer.train import resolve_device

# Each benchmarked variant: name -> loss config (the paper's presets).
VARIANTS: dict[str, LossConfig] = {
    "ce": LossConfig(kind="ce"),
    "grad_norm": LossConfig(preset="grad_norm"),
    **{
        f"{kind}/{est}": LossConfig(**{**LOSS_PRESETS[kind], "estimator": est})
        for kind in ("score_matching", "anti_score_matching")
        for est in ("taylor", "central", "hutchinson")
    },
}
TARGET_RATIO = {"cpu": 2.0, "cuda": 3.3}  # score_matching/taylor vs ce, per device type


def _step(model, optimizer, x, y, cfg: LossConfig, generator) -> float:
    """Seconds of one training step (device synchronized on both ends)."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    start = time.perf_counter()
    with precision(cfg, x.device):
        out = compute_loss(model, x, y, cfg, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        out["total"].backward()
    optimizer.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return time.perf_counter() - start


def bench(
    arch: str = "resnet18",
    width: float = 1.0,
    batch: int = 32,
    steps: int = 10,
    warmup: int = 2,
    device: str = "auto",
    num_classes: int = 100,
    image_size: int = 32,
    variants: Sequence[str] = tuple(VARIANTS),
) -> dict:
    """Median seconds per step of each variant and its ratio to ce; returns a JSON-ready dict."""
    dev = resolve_device(device)
    torch.manual_seed(0)
    model = build_model(arch, num_classes, 3, width).to(dev)
    # A tiny lr keeps the shared model sane over all variants' steps; it does not change the cost.
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(batch, 3, image_size, image_size, device=dev)
    y = torch.randint(num_classes, (batch,), device=dev)
    generator = torch.Generator(dev).manual_seed(0)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(warmup + steps):
        for name in variants:
            seconds = _step(model, optimizer, x, y, VARIANTS[name], generator)
            if i >= warmup:
                times[name].append(seconds)
    ce = statistics.median(times["ce"])
    rows = [
        {
            "variant": name,
            "median_s": statistics.median(t),
            "ratio_to_ce": statistics.median(t) / ce,
            "images_per_s": batch / statistics.median(t),
        }
        for name, t in times.items()
    ]
    ratio = {r["variant"]: r["ratio_to_ce"] for r in rows}
    target = TARGET_RATIO.get(dev.type)
    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "arch": arch,
        "width": width,
        "batch": batch,
        "image_size": image_size,
        "steps": steps,
        "warmup": warmup,
        "results": rows,
        "targets": {
            "score_matching/taylor_ratio_max": target,
            "score_matching/taylor_ratio_met": target is not None
            and ratio["score_matching/taylor"] <= target,
            "taylor_cheaper_than_hutchinson": ratio["score_matching/taylor"]
            < ratio["score_matching/hutchinson"],
        },
    }


def format_table(result: dict) -> str:
    """The result as a plain-text table."""
    lines = [
        f"{result['arch']} width {result['width']} batch {result['batch']} on {result['device_name']} "
        f"({result['threads']} threads), median of {result['steps']} steps",
        f"{'variant':<34}{'s/step':>10}{'x ce':>8}{'img/s':>10}",
    ]
    for r in result["results"]:
        lines.append(
            f"{r['variant']:<34}{r['median_s']:>10.4f}{r['ratio_to_ce']:>8.2f}{r['images_per_s']:>10.1f}"
        )
    for name, value in result["targets"].items():
        lines.append(f"{name}: {value}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.bench", description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet9", "vgg11"])
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if min(args.batch, args.steps) < 1 or args.width <= 0 or args.warmup < 0:
        print("error: --batch and --steps must be >= 1, --width > 0, --warmup >= 0", file=sys.stderr)
        return 2
    try:
        result = bench(args.arch, args.width, args.batch, args.steps, args.warmup, args.device)
    except ConfigError as e:  # an unknown or unavailable device
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
