"""Benchmark of the sweep service on the quickstart (prints figures, asserts nothing).

    python -m sweep.bench.quickstart [--workdir DIR] [--skip-asha]

Runs ``python -m sweep.run`` (the quickstart, FIFO) and the same grid with ASHA, each in a fresh
folder, and prints: wall time; driver overhead per trial (what a trial costs beyond its
trainer's own epochs and evaluations); epochs trained by ASHA against the full grid and the
best objective each reached. The README's performance section quotes its output.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow

from sweep.record import Role, Tag
from trainer import keys


def _sweep(folder: Path, extra: list[str]) -> float:
    """Run the quickstart in ``folder``; wall seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(folder / "sweep.log", "w") as log:
        code = subprocess.run([sys.executable, "-m", "sweep.run", *extra], cwd=folder, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"sweep in {folder} exited {code}; see {folder / 'sweep.log'}")
    return time.perf_counter() - start


def _children(folder: Path) -> list:
    mc = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = mc.get_experiment_by_name("quickstart")
    return mc.search_runs([exp.experiment_id], f"tags.`{Tag.ROLE}` = '{Role.TRIAL}'", max_results=1000)


def _stats(folder: Path, wall: float) -> dict[str, float]:
    runs = _children(folder)
    mc = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    trainer_s = 0.0  # seconds spent in the trainer's epochs and evaluations, all trials
    epochs = 0
    for run in runs:
        for key in (keys.EPOCH_SECONDS, keys.EVAL_SECONDS):
            trainer_s += sum(m.value for m in mc.get_metric_history(run.info.run_id, key))
        epochs += len(mc.get_metric_history(run.info.run_id, keys.TRAIN_LOSS))
    first = min(r.info.start_time for r in runs) / 1000
    last = max(r.info.end_time or r.info.start_time for r in runs) / 1000
    slots = 2  # the quickstart runs two 1-CPU trials at a time on a 2-core machine
    return {
        "wall_s": wall,
        "trials": len(runs),
        "trials_window_s": last - first,
        "overhead_per_trial_s": ((last - first) * slots - trainer_s) / len(runs),
        "trainer_s_per_trial": trainer_s / len(runs),
        "epochs": epochs,
        "best_objective": max(r.data.metrics.get(keys.OBJECTIVE, 0.0) for r in runs),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sweep.bench.quickstart", description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=None, help="where the two sweeps run (default: a temp dir)")
    p.add_argument("--skip-asha", action="store_true")
    args = p.parse_args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    fifo = _stats(root / "fifo", _sweep(root / "fifo", []))
    print(f"quickstart (FIFO): wall {fifo['wall_s']:.0f} s for {fifo['trials']} trials, judge and Ray start included")
    print(
        f"  trials ran for {fifo['trials_window_s']:.0f} s; per trial: {fifo['trainer_s_per_trial']:.1f} s in the "
        f"trainer, {fifo['overhead_per_trial_s']:.1f} s of driver/worker overhead (Tune, MLflow logging, uploads)"
    )
    print(f"  epochs trained: {fifo['epochs']}, best objective: {fifo['best_objective']:.3f}")
    if args.skip_asha:
        return
    asha_flags = [
        "--set", "scheduler.kind=asha", "--set", "scheduler.grace_period=2", "--set", "scheduler.reduction_factor=2",
        "--set", "trainer.eval.every=2",  # ASHA compares objectives at its rungs: evaluate there
    ]
    asha = _stats(root / "asha", _sweep(root / "asha", asha_flags))
    print(f"quickstart (ASHA, grace 2 epochs, reduction factor 2): wall {asha['wall_s']:.0f} s")
    print(
        f"  epochs trained: {asha['epochs']} vs {fifo['epochs']} for the full grid "
        f"({fifo['epochs'] / max(asha['epochs'], 1):.2f}x fewer); best objective {asha['best_objective']:.3f} "
        f"vs {fifo['best_objective']:.3f}"
    )
    print(f"results in {root}")


if __name__ == "__main__":
    main()
