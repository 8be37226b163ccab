"""Does the service's cost per trial grow with the number of trials? Near-zero trials, service beside bare Tune.

    python -m sweep.bench.scale --trials 100 1000 [--workdir DIR] [--repeats 1] [--baseline TREE]

For each N: the service (``python -m sweep.run`` in a fresh folder: N trials of a near-zero trainer
config, a synthetic dataset of 32 images, one epoch, no evaluation, no judge, no confirmation, no
analysis; each trial still makes its MLflow run, logs its params, metrics and checkpoint, and
reports a checkpoint to Tune as every trial does) and bare Ray Tune (``tune.Tuner`` over a function
that writes a 1 kB checkpoint and reports once, Tune's defaults otherwise), both on a private
local Ray of 1 CPU per trial, one after the other in this run. Prints, per N, the trials phase's
wall seconds (the service's own phase split; ``fit()`` for bare Tune), the cost per trial, and the
ratio service / bare. A cost per trial that grows with N is work that grows with the number of
trials (such as saving every trial's state after every checkpoint). ``--baseline TREE`` also times
the service of another source tree (e.g. ``git worktree add TREE <commit before a change>``) in the
same run, so a change is measured beside what it changes under the same load. Prints figures,
asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NEAR_ZERO = [
    "trainer.data.dataset=synthetic", "trainer.data.train_size=32", "trainer.data.test_size=16",
    "trainer.data.val_size=8", "trainer.data.augment=false", "trainer.model.arch=resnet9",
    "trainer.model.width=0.0625", "trainer.epochs=1", "trainer.batch_size=32", "trainer.eval.enabled=false",
    "judge=null", "objective.name=accuracy", "confirm.enabled=false", "analysis=false", "search.grid={}",
    "search.points=[{loss.preset: baseline}]", "resources.cpus=1", "resources.gpus=0", "trainer.device=cpu",
]  # fmt: skip
PHASE = re.compile(r"trials (\d+) s")


def service(folder: Path, n: int, tree: Path | None = None) -> float:
    """The service's trials phase for ``n`` near-zero trials, in seconds (its own phase split);
    ``tree``: the source tree to run it from (default: the one this module is imported from)."""
    folder.mkdir(parents=True, exist_ok=True)
    sets = [*NEAR_ZERO, f"search.seeds=[{', '.join(map(str, range(n)))}]", f"search.max_points={max(n, 1)}"]
    argv = [sys.executable, "-m", "sweep.run", "--name", f"scale-{n}", *sum((["--set", s] for s in sets), [])]
    tree = tree or Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
    with open(folder / "sweep.log", "w") as log:
        code = subprocess.run(argv, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    text = (folder / "sweep.log").read_text()
    found = [line for line in text.splitlines() if " done in " in line]
    if code != 0 or not found or not PHASE.search(found[-1]):
        raise SystemExit(f"the service's sweep of {n} trials in {folder} exited {code}; see {folder / 'sweep.log'}")
    return float(PHASE.search(found[-1]).group(1))


def bare(folder: Path, n: int) -> float:
    """Bare Ray Tune's ``fit()`` for ``n`` trials that each write a 1 kB checkpoint and report once."""
    code = (
        "import os, sys, tempfile, time\n"
        "from pathlib import Path\n"
        "import ray\n"
        "from ray import tune\n"
        "def trainable(config):\n"
        "    with tempfile.TemporaryDirectory() as d:\n"
        "        Path(d, 'last.pt').write_bytes(b'0' * 1024)\n"
        "        tune.report({'x': 1.0}, checkpoint=tune.Checkpoint.from_directory(d))\n"
        "ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)\n"
        f"tuner = tune.Tuner(tune.with_resources(trainable, {{'cpu': 1}}), param_space={{'i': tune.grid_search(list(range({n})))}},\n"
        f"    run_config=tune.RunConfig(name='bare', storage_path={str(folder)!r}, verbose=0))\n"
        "start = time.perf_counter()\n"
        "tuner.fit()\n"
        "print('FIT', time.perf_counter() - start)\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True)
    found = [line for line in out.stdout.splitlines() if line.startswith("FIT ")]
    if out.returncode != 0 or not found:
        raise SystemExit(f"bare Tune with {n} trials exited {out.returncode}: {out.stderr[-2000:]}")
    return float(found[-1].split()[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweep.bench.scale", description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, nargs="+", default=[100, 1000], help="numbers of trials (default 100 1000)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each (the median is printed)")
    p.add_argument("--workdir", type=Path, default=None, help="where the sweeps run (default: a temp dir)")
    p.add_argument("--baseline", type=Path, default=None,
                   help="also time the service of this source tree (a worktree of another commit)")
    args = p.parse_args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="sweep-scale-"))
    trees = {"service": None, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    started = time.time()
    rows = []
    for n in args.trials:
        row = {
            label: statistics.median(service(root / f"{label}-{n}-{r}", n, tree) for r in range(args.repeats))
            for label, tree in trees.items()
        }
        row["bare Tune"] = statistics.median(bare(root / f"bare-{n}-{r}", n) for r in range(args.repeats))
        rows.append((n, row))
        times = ", ".join(f"{label} {s:7.1f} s ({1000 * s / n:6.1f} ms a trial)" for label, s in row.items())
        ratios = "; ".join(f"{label} / bare {row[label] / row['bare Tune']:.2f}" for label in trees)
        print(f"{n:5d} trials: {times}; {ratios}", flush=True)
    if len(rows) > 1:
        (n0, first), (n1, last) = rows[0], rows[-1]
        growth = ", ".join(f"{label} x{(last[label] / n1) / (first[label] / n0):.2f}" for label in first)
        print(f"cost per trial from {n0} to {n1} trials: {growth} (1.00: it does not grow with the number of trials)")
    print(f"{time.time() - started:.0f} s in all; results in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
