"""The command line of ``python -m sweep.run``: its flags, ``--help``, ``--smoke`` and loading the
sweep's config from them (:func:`load_config`, which raises ConfigError), and the one-line usage
error with exit status 2.

Light on purpose: it imports neither torch, MLflow nor Ray, so ``--help`` and a refused command
line answer at once (:mod:`sweep.run` imports :mod:`sweep.driver` only for a good one).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from sweep.config import SweepConfig
from sweep.config_files import load_sweep_config, preset_names

EXIT_USAGE = 2  # bad input: nothing was started or written

# --smoke: any preset as a few-minute CPU run through its real code paths (its dataset, model,
# loss, grid or search, judge, evaluations and analysis), every size cut down and the grid to its
# corners (each axis's first and last value). The --set flags
# given with it apply after these, so any of them can be changed.
SMOKE = (
    "resources.gpus=0", "trainer.device=cpu",
    "trainer.data.train_size=512", "trainer.data.test_size=256",  # images
    "trainer.model.width=0.0625", "trainer.epochs=2", "trainer.batch_size=64",
    "trainer.eval.every=0", "trainer.eval.samples=64", "trainer.eval.steps=20",
    "trainer.eval.density_images=128", "trainer.eval.perturbation_images=128",
    "trainer.eval.perturbation_points=5", "trainer.eval.grid_images=16",
)
SMOKE_JUDGE = ("judge.epochs=2", "judge.width=0.0625")  # when the preset has a judge
SMOKE_OPTUNA = ("search.n_trials=4",)  # and, with a budget, search.max_epochs_total = 4 trials' epochs
SMOKE_ASHA = ("trainer.eval.every=1", "scheduler.grace_period=1")  # ASHA's rungs need fresh objectives

# What --help shows: each preset's purpose and cost (its header says more: sweep/configs/NAME.yaml).
PRESETS = {
    "quickstart": "the default: digits, tiny ResNet-9, 3x3 λ×μ grid + baseline; CPU, a few minutes",
    "groundtruth": "the quickstart's grid on images of known density; CPU, a few minutes",
    "table1": "the paper's Table 1 (4 models) on CIFAR-100, ResNet-18, 200 epochs; GPUs, hours",
    "table2": "the paper's Table 2 (5x4 λ×μ grid) on CIFAR-100, ResNet-18, 200 epochs; GPUs, 21-33 GPU-hours",
    "table2_unbiased": "Table 2's grid with the unbiased stability term; GPUs, as table2 and more",
    "optuna": "Optuna search beyond the grid on CIFAR-100, up to 40 trials; GPUs, up to table2's cost",
}
HELP_EPILOG = """presets (--config NAME; sweep/configs/NAME.yaml's header has its command, cost and expected result):
{presets}

examples:
  python -m sweep.run                                    # the quickstart: CPU, a few minutes
  python -m sweep.run --config table2 --smoke            # a paper preset as a few-minute CPU run
  python -m sweep.run --config table2 --address auto     # the paper's grid on a Ray cluster
  python -m sweep.run --config table2 --resume           # continue a stopped sweep

exit status:
  0    done: every trial finished or diverged (a diverged trial is a result)
  1    some trials failed, or the driver crashed
  2    refused before running (bad config, flags, missing data, resources): nothing was written
  130  stopped by Ctrl-C (SIGINT); 143 SIGTERM; 129 SIGHUP: what was kept is printed, --resume continues
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = preset_names()
    presets = "\n".join(f"  {n:16s} {PRESETS.get(n, 'see its header')}" for n in names)
    p = argparse.ArgumentParser(
        prog="python -m sweep.run",
        description="Run a λ×μ sweep of the regularized trainer on Ray Tune, tracked in MLflow.",
        epilog=HELP_EPILOG.format(presets=presets),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default="quickstart", help=f"a YAML file or a preset: {', '.join(names)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--smoke", action="store_true",
                   help="cut the preset down to a few-minute CPU run (data, width, epochs, judge, evaluation sizes, "
                        "the grid's corners)")
    p.add_argument("--name", help="the sweep's name (default: the config's name)")
    p.add_argument("--resume", action="store_true", help="continue the sweep of this name after a crash or kill")
    p.add_argument("--address", help="Ray cluster to use ('auto' or HOST:PORT; default: RAY_ADDRESS, else a local one)")
    return p.parse_args(argv)


def smoke_overrides(cfg: SweepConfig) -> list[str]:
    """The --smoke overrides for ``cfg`` (loaded without them): SMOKE, plus the judge's, the
    search's and the scheduler's where the preset has them."""
    sets = list(SMOKE)
    if cfg.judge is not None:
        sets += SMOKE_JUDGE
    if cfg.search.method == "optuna":
        sets += SMOKE_OPTUNA
        if cfg.search.max_epochs_total is not None:
            sets.append(f"search.max_epochs_total={4 * 2}")  # 4 trials of trainer.epochs=2
    if cfg.scheduler.kind == "asha":
        sets += SMOKE_ASHA
    for axis, values in cfg.search.grid.items():
        if len(values) > 2:  # the grid's corners: each axis's first and last value (json is YAML)
            sets.append(f"search.grid.{axis}={json.dumps([values[0], values[-1]])}")
    return sets


def load_config(args: argparse.Namespace) -> SweepConfig:
    """The sweep's config from --config, --smoke, --set and --name (raises ConfigError)."""
    cfg = load_sweep_config(args.config, args.set, args.name)
    if not args.smoke:
        return cfg
    return load_sweep_config(args.config, [*smoke_overrides(cfg), *args.set], args.name)


def fail(message: str) -> int:
    """Print the one-line usage error; returns exit status 2."""
    print(f"sweep.run: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def rerun_command(cfg: SweepConfig, args: argparse.Namespace, resume: bool = True) -> str:
    """The shell command that runs this sweep again (``--resume``: continues it), quoted, to paste
    as is: every message that ends a sweep early and the closing summary print it."""
    return (
        f"cd {shlex.quote(str(Path.cwd()))} && python -m sweep.run --config {shlex.quote(args.config)}"
        f" --name {shlex.quote(cfg.name)}"
        + (" --smoke" if args.smoke else "")
        + (" --resume" if resume else "")
        + (f" --address {shlex.quote(args.address)}" if args.address else "")
        + "".join(f" --set {shlex.quote(s)}" for s in args.set)
    )
