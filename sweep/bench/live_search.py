"""Benchmark: does a search beat the full grid at equal cost? (prints figures, asserts nothing)

    python -m sweep.bench.live_search --size tiny --seeds 0 1 2      # minutes on 2 CPU cores
    python -m sweep.bench.live_search --size quickstart --seeds 0 1 2  # the quickstart's digits trials
    python -m sweep.bench.live_search --size replay --seeds 0 1 --methods grid  # live grid vs the recorded table

For each seed (the trainer's seed and the sampler's) it runs on ``digits``, in one MLflow store:

* ``grid``: the full λ×μ grid (FIFO), every trial to the end;
* ``cold``: an Optuna search with ASHA, no prior knowledge, within ``--budget`` (a fraction of
  the grid's trial-epochs, enforced by ``search.max_epochs_total``);
* ``warm``: a coarse 2×2 grid, then an Optuna search with ASHA warm-started from it
  (``search.warm_start``); the coarse grid's epochs count against the same budget.

(``--methods`` picks among them) and reports, per method, the hypervolume of the accuracy/GAN-test front against (0, 0) (mean
and standard deviation over seeds), the trial-epochs it trained, and the trial-epochs it needed
until a trial reached the full grid's best objective (trials in start order, each counted with
the epochs it reached). The issue's goal: the hypervolume of the grid with ≤ 50 % of its epochs
and its best objective with ≤ 25 %.

``--size replay`` trains with the settings the replay's recorded table was recorded with (read from
the table: its ``--set`` overrides, its epochs and evaluation epochs), so the live grid's cells are
cells of the table: for each training seed the table holds, each live cell's final validation
accuracy and GAN-test are printed beside the recorded ones, in images and samples, with how many
agree exactly. That is the spot check that the replay's curves are what a live sweep trains.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.hypervolume import front_hypervolume
from analysis.runs import AnalysisError, load
from sweep import tracking
from sweep.bench.replay.table import Table, read_table
from trainer import keys
from trainer.stats import seeds_interval, wilson

EXPERIMENT = "bench-search"
GRID = [1.0e-2, 1.0e-3, 1.0e-4, 1.0e-5]  # λ and μ of the full grid: 16 points
COARSE = [1.0e-2, 1.0e-4]  # λ and μ of the coarse grid the warm search starts from: 4 points
SPACE = "{low: 1.0e-6, high: 2.0e-2}"  # log-uniform, holds every grid value
# Sizes: trainer overrides. tiny is the test suite's miniature; quickstart is the quickstart's trials.
SIZES: dict[str, list[str]] = {
    "tiny": [
        "trainer.data.train_size=256", "trainer.data.test_size=96", "trainer.epochs=2", "trainer.eval.every=1",
        "trainer.eval.samples=16", "trainer.eval.steps=5", "trainer.eval.density_images=32",
        "trainer.eval.perturbation_images=32", "trainer.eval.perturbation_points=3", "trainer.eval.grid_images=16",
        "judge.width=0.0625", "judge.epochs=1",
    ],
    "quickstart": ["trainer.eval.every=2"],  # 4 epochs; ASHA's rungs need fresh objectives
    "replay": [],  # the recorded table's own settings (replay_size)
}
METHODS = ("grid", "cold", "warm")


def replay_size(table: Table) -> tuple[list[str], int, int]:
    """The trainer overrides, epochs and evaluation interval the replay's table was recorded with."""
    words = shlex.split(str(table.meta.get("command", "")))
    sets = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--set"]
    sets = [s for s in sets if not s.startswith(("trainer.epochs=", "trainer.eval.every="))]
    return [*sets, f"trainer.epochs={table.epochs}", f"trainer.eval.every={table.eval_every}"], table.epochs, table.eval_every


def against_table(grid: pd.DataFrame, table: Table, seed: int) -> list[str]:
    """Lines comparing each live grid cell of training seed ``seed`` with the table's recording of it:
    the status, and for cells finished in both the final validation accuracy (in images) and
    GAN-test (in samples); a summary line last."""
    if seed not in table.seeds:
        return [f"  seed {seed}: not in the recorded table (seeds {table.seeds}); nothing to compare"]
    n_val, n_gan = int(table.meta.get("val_images", 0)), int(table.meta.get("samples", 0))
    lines = [f"  seed {seed}: {'λ':>7s} {'μ':>7s}  {'val acc live / recorded':>24s}  {'GAN-test live / recorded':>25s}"
             "  status live / recorded"]
    count = same_status = finished = same_acc = same_gan = 0
    gan_gaps: list[float] = []
    for _, row in grid.sort_values(["lam", "mu"]).iterrows():
        lam, mu = float(row["lam"]), float(row["mu"])
        recorded = table.cells.get((lam, mu), {}).get(seed)
        if recorded is None:
            continue
        count += 1
        live_status, rec_status = str(row["status"]), str(recorded["status"])
        same_status += live_status == rec_status
        both = live_status == rec_status == keys.Status.FINISHED
        rec_acc = recorded["acc"][-1] if recorded["acc"] else float("nan")
        rec_gan = recorded["gan"].get(table.epochs, float("nan"))
        live_acc, live_gan = float(row.get("val_acc", float("nan"))), float(row.get("gan_test", float("nan")))
        if both:
            finished += 1
            same_acc += round(live_acc * n_val) == round(rec_acc * n_val)
            same_gan += round(live_gan * n_gan) == round(rec_gan * n_gan)
            gan_gaps.append(abs(live_gan - rec_gan) * n_gan)
        status = "" if both else f"  {live_status} / {rec_status}"
        lines.append(f"  {'':7s} {lam:7.0e} {mu:7.0e}  {live_acc * n_val:8.0f} / {rec_acc * n_val:3.0f} of {n_val}"
                     f"      {live_gan * n_gan:8.0f} / {rec_gan * n_gan:3.0f} of {n_gan}{status}")
    gaps = (f"; GAN-test differs by at most {max(gan_gaps):.0f} of {n_gan} samples (mean {statistics.mean(gan_gaps):.1f})"
            if gan_gaps and max(gan_gaps) > 0 else "")
    lines.append(f"  seed {seed}: {count} cells, status the same in {same_status}; of the {finished} finished in "
                 f"both, validation accuracy identical in {same_acc}, GAN-test identical in {same_gan}{gaps}")
    return lines


@dataclass
class Outcome:
    """One sweep's figures."""

    hypervolume: float
    epochs: int  # trial-epochs trained
    to_best: int | None  # trial-epochs until a trial reached the grid's best objective; None: never
    best: float  # its best objective


def _sweep(root: Path, name: str, sets: list[str]) -> pd.DataFrame:
    """Run one sweep in-process (log in ``root/<name>.log``) and read its trials back; a sweep of
    that name already finished in ``root``'s store (the grids, on a rerun) is read, not rerun."""
    from sweep.run import main

    uri = f"sqlite:///{root / 'mlflow.db'}"
    parent = tracking.find_parent(tracking.client(uri), EXPERIMENT, name) if (root / "mlflow.db").exists() else None
    if parent is not None and tracking.client(uri).get_run(parent).info.status == "FINISHED":
        return load(EXPERIMENT, uri, parent).sort_values("start_time", kind="stable")
    args = ["--name", name, *sum((["--set", s] for s in sets), [])]
    with open(root / f"{name}.log", "w") as log, redirect_stdout(log):
        code = main(args)
    if code not in (0, 1):  # 1: some trials failed; they count with the epochs they reached
        raise SystemExit(f"sweep {name} exited {code}; see {root / (name + '.log')}")
    parent = tracking.find_parent(tracking.client(uri), EXPERIMENT, name)
    return load(EXPERIMENT, uri, parent).sort_values("start_time", kind="stable")


def _epochs(frame: pd.DataFrame) -> pd.Series:
    return frame["epochs_done"].fillna(0).astype(int)


def _outcome(frames: list[pd.DataFrame], target: float | None) -> Outcome:
    """Figures of a method whose trials ran as ``frames`` in that order (coarse grid first)."""
    trials = pd.concat(frames, ignore_index=True)
    try:
        volume = front_hypervolume(trials)
    except AnalysisError:  # no finished trial with both metrics
        volume = 0.0
    spent = _epochs(trials).cumsum()
    reached = trials["objective"].fillna(0) >= (target if target is not None else float("inf")) - 1e-12
    return Outcome(volume, int(spent.iloc[-1]), int(spent[reached].iloc[0]) if reached.any() else None,
                   float(trials["objective"].max()))


def _share(k: int, n: int) -> str:
    """``k/n`` seeds with the share's Wilson 95 % interval, in percent."""
    w = wilson(k, n)
    return f"{k}/{n} seeds ({100 * w.value:.0f} % [{100 * w.lo:.0f}, {100 * w.hi:.0f}])"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sweep.bench.live_search", description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=float, default=0.5, help="search budget as a fraction of the grid's epochs")
    p.add_argument("--sampler", choices=("tpe", "random", "qmc", "nsga2"), default="tpe")
    p.add_argument("--startup-trials", type=int, default=10,
                   help="search.startup_trials: completed trials (warm ones included) sampled at random first")
    p.add_argument("--workdir", type=Path, help="where the store and logs go (default: a temp dir)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="which sweeps to run per seed (the grid always runs: it is the reference)")
    p.add_argument("--table", type=Path, default=Path(__file__).parent / "replay" / "table.json.gz",
                   help="the replay's recorded table (--size replay)")
    args = p.parse_args(argv)
    table = read_table(args.table) if args.size == "replay" else None
    root = (args.workdir or Path(tempfile.mkdtemp(prefix="bench-search-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    sizes = dict(SIZES)
    if table is not None:
        sizes["replay"], epochs, grace = replay_size(table)
    else:
        epochs, grace = (4, 2) if args.size == "quickstart" else (2, 1)
    base = [*sizes[args.size], f"tracking.uri=sqlite:///{root / 'mlflow.db'}", f"tracking.artifacts={root / 'mlruns'}",
            f"storage_path={root / 'ray'}", f"experiment={EXPERIMENT}", "search.points=[]", "trainer.device=cpu",
            "analysis=false",
            "failure.max_failures=0"]  # a tiny trial's error is deterministic: a retry would repeat it
    grid_cost = len(GRID) ** 2 * epochs
    budget = int(args.budget * grid_cost)
    search = ["search.method=optuna", f"search.space.loss.lam={SPACE}",
              f"search.space.loss.mu={SPACE}", "search.seed_with_grid=false", f"search.sampler={args.sampler}",
              "scheduler.kind=asha", f"scheduler.grace_period={grace}",
              "scheduler.reduction_factor=2", "search.n_trials=100",  # the budget ends the search first
              f"search.startup_trials={args.startup_trials}"]
    tag = f"{args.sampler}-st{args.startup_trials}"  # search sweeps' names: reruns with other settings add new ones
    results: dict[str, list[Outcome]] = {m: [] for m in METHODS if m == "grid" or m in args.methods}
    comparison: list[str] = []
    for seed in args.seeds:
        seeded = [*base, f"search.seeds=[{seed}]"]
        grid = _sweep(root, f"grid-s{seed}", [*seeded, f"search.grid.loss.lam={GRID}", f"search.grid.loss.mu={GRID}"])
        target = float(grid["objective"].max())
        results["grid"].append(_outcome([grid], target))
        if table is not None:
            comparison += against_table(grid, table, seed)
        if "cold" in results:
            cold = _sweep(root, f"cold-s{seed}-{tag}", [*seeded, *search, f"search.sampler_seed={seed}",
                                                  f"search.max_epochs_total={budget}"])
            results["cold"].append(_outcome([cold], target))
        if "warm" in results:
            coarse = _sweep(root, f"coarse-s{seed}", [*seeded, f"search.grid.loss.lam={COARSE}",
                                                      f"search.grid.loss.mu={COARSE}"])
            left = budget - int(_epochs(coarse).sum())
            warm = _sweep(root, f"warm-s{seed}-{tag}", [*seeded, *search, f"search.sampler_seed={seed}",
                                                  f"search.max_epochs_total={left}", f"search.warm_start=[coarse-s{seed}]"])
            results["warm"].append(_outcome([coarse, warm], target))
        print(f"seed {seed}: " + "; ".join(f"{k} hv {v[-1].hypervolume:.4f}, {v[-1].epochs} epochs, best "
                                           f"{v[-1].best:.4f}, to grid best {v[-1].to_best}" for k, v in results.items()),
              flush=True)

    print(f"\nsearch vs grid on digits ({args.size}: {epochs} epochs per trial, {len(args.seeds)} seeds, "
          f"sampler {args.sampler}); grid {len(GRID)}x{len(GRID)} = {grid_cost} trial-epochs, search budget "
          f"{budget} ({args.budget:.0%}), warm = coarse {len(COARSE)}x{len(COARSE)} grid + search in that budget")
    print(f"  {'method':6s} {'hypervolume [95 % t]':>24s} {'hv / grid [95 % t]':>24s} {'epochs':>7s} "
          f"{'epochs to grid best (per seed)':>32s}  (intervals: Student's t over seeds; one seed: unbounded)")
    grid_hv = [o.hypervolume for o in results["grid"]]
    for method, outcomes in results.items():
        hv = [o.hypervolume for o in outcomes]
        ratio = seeds_interval([h / g if g > 0 else float("nan") for h, g in zip(hv, grid_hv)])
        to_best = ", ".join("never" if o.to_best is None else str(o.to_best) for o in outcomes)
        print(f"  {method:6s} {seeds_interval(hv)!s:>24s} {ratio!s:>24s} "
              f"{statistics.mean(o.epochs for o in outcomes):7.1f} {to_best:>32s}")
    for method in [m for m in ("cold", "warm") if m in results]:
        outcomes = results[method]
        hv_ok = sum(o.hypervolume >= g - 1e-12 and o.epochs <= 0.5 * grid_cost for o, g in zip(outcomes, grid_hv))
        best_ok = sum(o.to_best is not None and o.to_best <= 0.25 * grid_cost for o in outcomes)
        print(f"  goal, {method}: grid's hypervolume with <= 50 % of its epochs in {_share(hv_ok, len(outcomes))}; "
              f"its best objective with <= 25 % in {_share(best_ok, len(outcomes))}")
    if comparison:
        print(f"\nlive grid against the replay's recorded table ({args.table.name}; final epoch {epochs}):")
        print("\n".join(comparison))
    (root / "bench_search.json").write_text(json.dumps({k: [o.__dict__ for o in v] for k, v in results.items()},
                                                       indent=1))
    print(f"results in {root}")


if __name__ == "__main__":
    sys.exit(main())
