"""Benchmarks and numerical checks of the training step; every GPU figure of docs/performance-gpu.md.

    python -m trainer.bench --arch resnet18 --batch 32 --steps 10 --json bench.json   # step table
    python -m trainer.bench --precision           # h and weight-gradient error of each precision
    python -m trainer.bench --grad-norm-check     # finite-difference gradient norm vs float64
    python -m trainer.bench --throughput 1,2,4    # whole trials (trainer.run), 1, 2, 4 per device,
                                                  # measured peak memory beside trainer.memory's estimate
    python -m trainer.bench --all --device cuda --batch 128 --json gpu.json   # all of the above

This module is the command line: it parses the options, prints each result as a table and writes
the JSON. The measurements themselves, and what each variant and check means, are in
:mod:`trainer.bench.measures`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import torch

from trainer.bench.measures import (
    LAYOUT_VARIANTS,
    VARIANTS,
    bench,
    grad_norm_check,
    measure_trial,
    precision_check,
    throughput,
)
from trainer.config import ConfigError

def format_table(result: dict) -> str:
    """The step table as plain text."""
    lines = [
        f"{result['arch']} width {result['width']} batch {result['batch']} on {result['device_name']} "
        f"({result['threads']} threads), median of {result['steps']} steps, "
        f"load average {result['load_average_1min'][0]:.1f} -> {result['load_average_1min'][1]:.1f}",
        f"{'variant':<36}{'s/step':>10}{'x ce':>8}{'img/s':>10}{'cpu s':>10}{'x ce':>8}",
    ]
    for r in result["results"]:
        lines.append(
            f"{r['variant']:<36}{r['median_s']:>10.4f}{r['ratio_to_ce']:>8.2f}{r['images_per_s']:>10.1f}"
            f"{r['median_cpu_s']:>10.4f}{r['cpu_ratio_to_ce']:>8.2f}"
        )
    for name, value in result["targets"].items():
        lines.append(f"{name}: {value}")
    return "\n".join(lines)


def format_precision(result: dict) -> str:
    lines = [
        f"precision check: {result['arch']} width {result['width']} batch {result['batch']} on "
        f"{result['device_name']}, {result['train_steps']} ce steps, {result['draws']} noise draws, "
        f"gradient norm by {result['grad_norm_method']}",
        f"h spread over draws (median) {result['h_spread_median']:.4g}; gradient cosine between two "
        f"float64 draws {result['grad_cosine_between_float64_draws']:.4f}; log-ratio (σ=1e-4) spread "
        f"{result['log_ratio_1e-4_spread_median']:.3g}",
        f"{'precision':<10}{'h err':>10}{'/spread':>10}{'cos min':>12}{'ratio err':>11}{'/spread':>10}"
        f"  verdict (rule: {result['rule']})",
    ]
    for r in result["results"]:
        verdict = (
            f"training {'ACCEPT' if r['accepted_for_training'] else 'REFUSE'}, "
            f"density ratios {'ACCEPT' if r['accepted_for_density_ratios'] else 'REFUSE'}"
        )
        lines.append(
            f"{r['precision']:<10}{r['h_error_median']:>10.3g}{r['h_error_to_spread']:>10.2e}"
            f"{r['grad_cosine_min']:>12.8f}{r['log_ratio_1e-4_error_median']:>11.3g}"
            f"{r['log_ratio_1e-4_error_to_spread']:>10.2e}  {verdict}"
        )
    return "\n".join(lines)


def format_grad_norm(result: dict) -> str:
    lines = [
        f"gradient-norm check: {result['arch']} width {result['width']} batch {result['batch']} on "
        f"{result['device_name']}, against {result['reference']}",
        f"{'precision':<10}{'method':<22}{'eps':>8}{'cosine':>12}{'rel err':>11}",
    ]
    for r in result["results"]:
        eps = "-" if r["eps"] is None else f"{r['eps']:.0e}"
        lines.append(
            f"{r['precision']:<10}{r['method']:<22}{eps:>8}{r['cosine']:>12.7f}{r['relative_error']:>11.2e}"
        )
    return "\n".join(lines)


def format_throughput(result: dict) -> str:
    c = result["config"]
    lines = [
        f"whole trials on {result['device_name']}: score_matching, ResNet-18 width {c['width']}, "
        f"batch {c['batch']}, {c['train_size']} synthetic 3x32x32 images x {c['epochs']} epochs "
        f"{' '.join(c['overrides'])}",
        f"{'trials':>6}{'img/s (sum)':>14}{'peak GiB/trial':>16}{'reserved GiB':>14}  each",
    ]
    for r in result["results"]:
        peak = "-" if r["peak_memory_gib_per_trial"] is None else f"{r['peak_memory_gib_per_trial']:.2f}"
        res = r.get("peak_reserved_gib_per_trial")
        res = "-" if res is None else f"{res:.2f}"
        each = ", ".join(f"{v:.0f}" for v in r["images_per_s_each"])
        lines.append(f"{r['trials']:>6}{r['images_per_s_sum']:>14.1f}{peak:>16}{res:>14}  {each}")
    est = result.get("estimate")
    if est:  # trainer.memory's estimate, to compare with the measured peak (allocated) above
        lines.append(f"estimate (trainer.memory, on the CPU): peak allocated {est['peak_gib']:.2f} GiB; {est['parts']}")
    return "\n".join(lines)


# ---- command line --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.bench", description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet9", "vgg11"])
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--variants", help="comma-separated step variants (default: all for the device)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--precision", action="store_true", help="run the precision check instead")
    p.add_argument("--grad-norm-check", action="store_true", help="run the gradient-norm check instead")
    p.add_argument("--check-width", type=float, default=0.25, help="network width of the two checks")
    p.add_argument("--throughput", help="whole-trial throughput for these trial counts, e.g. 1,2,4")
    p.add_argument("--trial-epochs", type=int, default=2)
    p.add_argument("--trial-images", type=int, default=4096, help="training images per trial epoch")
    p.add_argument("--trial-set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override of the throughput trials, e.g. loss.precision=ieee")  # fmt: skip
    p.add_argument("--all", action="store_true", help="step table, both checks and --throughput 1,2,4")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--trial-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.trial_worker:
        if args.threads:
            torch.set_num_threads(args.threads)
        # One trial of throughput(): its figures as the last line of stdout, read by the parent.
        print(json.dumps(measure_trial(json.loads(args.trial_worker))))
        return 0
    try:
        counts = [int(n) for n in args.throughput.split(",")] if args.throughput else []
    except ValueError:
        counts = [0]
    if (
        min(args.batch, args.steps, args.trial_epochs, args.trial_images, *counts) < 1
        or min(args.width, args.check_width) <= 0
        or args.warmup < 0
        or (args.threads is not None and args.threads < 1)
    ):
        print(
            "error: --batch, --steps, --threads, --trial-epochs, --trial-images and each --throughput "
            "count must be integers >= 1, --width and --check-width > 0, --warmup >= 0",
            file=sys.stderr,
        )
        return 2
    variants = args.variants.split(",") if args.variants else None
    unknown = [v for v in variants or [] if v not in {**VARIANTS, **LAYOUT_VARIANTS}]
    if unknown:
        print(f"error: unknown --variants {unknown}; choose from {sorted({**VARIANTS, **LAYOUT_VARIANTS})}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    steps_table = args.all or not (args.precision or args.grad_norm_check or counts)
    if args.all and not counts:
        counts = [1, 2, 4]
    result: dict = {}
    try:
        if steps_table:
            result["steps"] = bench(args.arch, args.width, args.batch, args.steps, args.warmup, args.device,
                                    variants=variants)  # fmt: skip
            print(format_table(result["steps"]), flush=True)
        if args.precision or args.all:
            # Once per gradient-norm method, each against float64 with the double backward.
            result["precision"] = []
            for method in ("double_backward", "central_difference", "forward_difference"):
                check = precision_check(args.arch, args.check_width, args.batch, device=args.device,
                                        grad_norm_method=method)  # fmt: skip
                result["precision"].append(check)
                print(format_precision(check), flush=True)
        if args.grad_norm_check or args.all:
            result["grad_norm"] = grad_norm_check(args.arch, args.check_width, args.batch, device=args.device)
            print(format_grad_norm(result["grad_norm"]), flush=True)
        if counts:
            result["throughput"] = []
            for extra in ([[]] if not args.all else [[], ["loss.precision=ieee"]]):
                t = throughput(counts, args.device, args.trial_epochs, args.trial_images, args.batch,
                               args.width, [*args.trial_set, *extra], args.threads)  # fmt: skip
                result["throughput"].append(t)
                print(format_throughput(t), flush=True)
    except ConfigError as e:  # an unknown or unavailable device, a bad --trial-set
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        # A plain step table keeps its historical layout; several parts go under their names.
        payload = result["steps"] if list(result) == ["steps"] else result
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
