"""Benchmark: seconds per training step of each loss and trace estimator, against a ce step.

    python -m trainer.bench --arch resnet18 --batch 32 --steps 10 --json bench.json

A step is forward + backward + SGD update on one random CIFAR-shaped batch. All variants share one
process and device and are timed interleaved (one step of each in turn, after warm-up steps), so
background load hits them alike; the table reports the median over steps and its ratio to ``ce``.
Targets, recorded and not asserted: score_matching/taylor at most 2.0x a ce step on CPU and 3.3x
on GPU, and taylor cheaper than hutchinson. The ``+batched`` variants run the finite-difference
passes as one forward over the concatenated clean and noisy batch (``loss.forward=batched``). On
GPU the ce step may use TF32 while the finite-difference losses turn it off (as they must): the
ratio is the honest cost.
"""

from __future__ import annotations

import argparse
import json
import os
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
    # The opt-in joint forward over [x, x+v(, x−v)], measured against the faithful separate one.
    **{
        f"score_matching/{est}+batched": LossConfig(
            **{**LOSS_PRESETS["score_matching"], "estimator": est, "forward": "batched"}
        )
        for est in ("taylor", "central")
    },
}
TARGET_RATIO = {"cpu": 2.0, "cuda": 3.3}  # score_matching/taylor vs ce, per device type


def _step(model, optimizer, x, y, cfg: LossConfig, generator) -> tuple[float, float]:
    """(wall, process CPU) seconds of one training step, the device synchronized on both ends."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    start, cpu_start = time.perf_counter(), time.process_time()
    with precision(cfg, x.device):
        out = compute_loss(model, x, y, cfg, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        out["total"].backward()
    optimizer.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return time.perf_counter() - start, time.process_time() - cpu_start


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
    load_before = os.getloadavg()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for i in range(warmup + steps):
        for name in variants:
            seconds = _step(model, optimizer, x, y, VARIANTS[name], generator)
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
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
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


def format_table(result: dict) -> str:
    """The result as a plain-text table."""
    lines = [
        f"{result['arch']} width {result['width']} batch {result['batch']} on {result['device_name']} "
        f"({result['threads']} threads), median of {result['steps']} steps, "
        f"load average {result['load_average_1min'][0]:.1f} -> {result['load_average_1min'][1]:.1f}",
        f"{'variant':<34}{'s/step':>10}{'x ce':>8}{'img/s':>10}{'cpu s':>10}{'x ce':>8}",
    ]
    for r in result["results"]:
        lines.append(
            f"{r['variant']:<34}{r['median_s']:>10.4f}{r['ratio_to_ce']:>8.2f}{r['images_per_s']:>10.1f}"
            f"{r['median_cpu_s']:>10.4f}{r['cpu_ratio_to_ce']:>8.2f}"
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
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if (
        min(args.batch, args.steps) < 1
        or args.width <= 0
        or args.warmup < 0
        or (args.threads is not None and args.threads < 1)
    ):
        print("error: --batch, --steps, --threads must be >= 1, --width > 0, --warmup >= 0", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
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
