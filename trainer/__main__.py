"""Command line: one standalone training run with a progress bar and a final summary.

    python -m trainer --config FILE --set loss.preset=score_matching --set epochs=10 --out runs/sm

Checkpoints go to OUT/checkpoints (rerunning with the same --out resumes), evaluation images and
curves to OUT/eval/epoch_NNN. Bad input (config, missing data) is one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from trainer import keys
from trainer.config import ConfigError, load_config

# Metrics shown in the progress bar and the summary, with their short names.
SHOWN = {
    keys.TRAIN_LOSS: "loss",
    keys.TRAIN_ACC: "acc",
    keys.VAL_ACC: "val_acc",  # absent with data.val_size=0
    keys.TEST_ACC: "test_acc",
    keys.GAN_TEST: "gan_test",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", description=__doc__.split("\n")[0])
    p.add_argument("--config", help="YAML config file (default: the built-in defaults)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one field, e.g. --set loss.lam=1e-3 (repeatable)",
    )
    p.add_argument("--out", default="runs/trainer", help="output folder (default: runs/trainer)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 finished, 1 diverged, 2 bad input)."""
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        from tqdm import tqdm

        from trainer.train import run

        out = Path(args.out)
        bars: list[tqdm] = []  # opened at the first report, so that input errors print alone

        def report(metrics: dict, files: dict) -> None:
            epoch = metrics[keys.EPOCH]
            if not bars:
                bars.append(tqdm(total=cfg.epochs, initial=epoch - 1, unit="epoch", desc="train"))
            bars[0].update(epoch - bars[0].n)
            bars[0].set_postfix({short: f"{metrics[k]:.4g}" for k, short in SHOWN.items() if k in metrics})

        try:
            metrics = run(cfg, report=report, checkpoint_dir=out / "checkpoints", out_dir=out / "eval")
        finally:
            for bar in bars:
                bar.close()
    except ConfigError as e:  # DataError is a ConfigError too
        print(f"error: {e}", file=sys.stderr)
        return 2

    print(f"status: {metrics[keys.STATUS]} after {metrics.get(keys.EPOCH, 0)}/{cfg.epochs} epochs")
    for key, value in sorted(metrics.items()):
        if isinstance(value, float):
            print(f"  {key:<40} {value:.6g}")
    print(f"checkpoint: {out / 'checkpoints' / 'last.pt'}")
    return 1 if metrics[keys.STATUS] == keys.Status.DIVERGED else 0


if __name__ == "__main__":
    sys.exit(main())
