"""Command line: ``python -m analysis table2|pareto|figures --experiment NAME [...]``.

By default the most recent sweep of the experiment is analysed and the outputs are written to
``out/analysis/<experiment>/<sweep>/`` (the folder the sweep itself writes them to) and logged to
the sweep's parent run under ``analysis/``. A Table 2 coloured by another metric than the
objective, or a front of other metrics than accuracy and GAN-test, gets its own file names
(``gan_test_table2.png``, ``test_acc_sample_loglik_pareto.png``); the table and the front are
also printed as text.
``pareto`` also prints the front's hypervolume and logs it on the parent run as
``sweep/hypervolume``; ``fronts --sweep A --sweep B`` draws several sweeps' fronts in one plot
with their hypervolumes.
Bad input (unknown experiment or sweep, no finished trials, trials without λ/μ or with a λ/μ
that is no number, a store that is locked or damaged, an unknown
metric, trials that selected on different splits or were scored by different judges, a test-set
metric as a front's axis for trials selected on validation) prints one line to stderr and exits
with status 2. Trials that selected on the test set get a loud line on stderr after the outputs.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import sqlalchemy.exc
from mlflow.exceptions import MlflowException

from analysis import (default_out_dir, figures, fronts, hypervolume_metrics, log_outputs, pareto, sweep_best_run,
                      table2)
from analysis.hypervolume import DEFAULT_REFERENCE, BOOTSTRAP_DRAWS, describe_reference, front_hypervolume_interval
from analysis.runs import (AnalysisError, check_comparable, client, column_name, default_tracking_uri, load,
                           select_parent, selection_notice)
from sweep import tracking


def _table2(frame: pd.DataFrame, args: argparse.Namespace) -> dict[str, Path]:
    stem = "" if args.metric == "objective" else f"{args.metric}_"  # one file per metric
    best_run = sweep_best_run(args.parent, args.tracking_uri) if args.parent else None
    paths = table2.write_table2(frame, args.out, args.metric, args.axes, stem=stem, best_run=best_run)
    print(f"Table 2 (the heatmap's colour: {args.metric}):")
    print(paths[f"{stem}table2.md"].read_text())
    return paths


def _pareto(frame: pd.DataFrame, args: argparse.Namespace) -> dict[str, Path]:
    xc, yc = pareto.front_axes(frame, args.x, args.y)
    stem = "" if args.x is None and args.y == "gan_test" else f"{xc}_{yc}_"  # one file per pair of metrics
    paths = pareto.write_pareto(frame, args.out, args.x, args.y, args.include_stopped, args.minimize, stem=stem)
    front = pd.read_csv(paths[f"{stem}front.csv"])
    print(f"Pareto front of {xc} and {yc}: {int(front['on_front'].sum())} point(s) on the front of the point "
          f"estimates, {int(front['candidate'].sum())} not separably dominated (seeds averaged; checkpoints and "
          f"interval columns in front.csv):")
    print(pareto.front_text(front, xc, yc) + "\n")
    reference = tuple(args.reference) if args.reference else None
    args.hypervolume = front_hypervolume_interval(frame, args.x, args.y, reference, args.include_stopped,
                                                  args.minimize)
    print(f"hypervolume {args.hypervolume} (reference point {describe_reference(xc, yc, reference)}; 95 % interval "
          f"by a parametric bootstrap over the points' intervals, {BOOTSTRAP_DRAWS} draws)")
    return paths


def _fronts(args: argparse.Namespace) -> dict[str, Path]:
    reference = tuple(args.reference) if args.reference else None
    paths, volumes, (xc, yc) = fronts.write_fronts(args.experiment, args.sweep or [], args.out, args.tracking_uri, args.x,
                                         args.y, reference, args.include_stopped, args.minimize)
    for name, volume in volumes.items():
        print(f"hypervolume {volume:.4f} {name} (reference point {describe_reference(xc, yc, reference)})")
    return paths


def _figures(frame: pd.DataFrame, args: argparse.Namespace) -> dict[str, Path]:
    check_comparable(frame)  # Table 1 and Fig. 3 compare models' GAN-test and accuracy
    if not args.fig3b:
        return figures.write_figures(frame, args.out, args.runs)
    # Fig. 3b first: it checks its runs and checkpoints before writing anything, and it needs no
    # logged curves, so Fig. 1/3a and Table 1 are skipped with a note when none were logged.
    paths = figures.fig3b_pixel_perturbation(
        frame, args.out, baseline_run_id=args.fig3b_baseline, run_ids=args.runs,
        tracking_uri=args.tracking_uri, images=args.fig3b_images, device=args.fig3b_device)
    try:
        paths.update(figures.write_figures(frame, args.out, args.runs))
    except AnalysisError as e:
        print(f"analysis: Fig. 1/3a and Table 1 skipped: {e}", file=sys.stderr)
    return paths


COMMANDS: dict[str, Callable[[pd.DataFrame, argparse.Namespace], dict[str, Path]]] = {
    "table2": _table2,
    "pareto": _pareto,
    "figures": _figures,
}
# Commands over several sweeps (they read the store themselves and log nothing).
MULTI_COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Path]]] = {"fronts": _fronts}


def parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per output)."""
    p = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Write Table 2, a Pareto front or the paper's figures from a sweep's MLflow runs.",
    )
    p.add_argument("command", choices=sorted({*COMMANDS, *MULTI_COMMANDS}), help="what to write")
    p.add_argument("--experiment", required=True, help="MLflow experiment (the sweep config's `experiment`)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--sweep", action="append",
                       help="the most recent sweep with this name (default: the most recent sweep); "
                            "fronts: repeat for each sweep (default: every sweep of the experiment)")
    which.add_argument("--parent-run-id", help="the sweep whose parent run has this id")
    which.add_argument("--all", action="store_true", help="every trial of the experiment (not logged to MLflow)")
    p.add_argument("--out", type=Path, help="output folder (default: out/analysis/<experiment>/<sweep>)")
    p.add_argument("--tracking-uri",
                   help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI or {default_tracking_uri()})")
    p.add_argument("--no-log", action="store_true", help="do not log the outputs to the sweep's parent run")
    g = p.add_argument_group("table2")
    g.add_argument("--metric", default="objective",
                   help="colour of the heatmap: objective, test_acc, gan_test, score_alignment, fisher_divergence, ...")
    g.add_argument("--axes", choices=("present", "paper"), default="present",
                   help="λ/μ values shown: those run, or the paper's grid plus those run")
    g = p.add_argument_group("pareto")
    g.add_argument("--x", default=None,
                   help="first metric of the front (default: the accuracy the trials selected by: val_acc, "
                        "or test_acc for trials selected on the test set)")
    g.add_argument("--y", default="gan_test", help="second metric of the front")
    g.add_argument("--minimize", nargs="*", metavar="METRIC",
                   help="metrics of the front to minimize (default: losses and Fisher divergences)")
    g.add_argument("--include-stopped", action="store_true", help="let trials stopped early onto the front")
    g.add_argument("--reference", nargs=2, type=float, metavar=("X", "Y"),
                   help="reference point of the hypervolume, in the metrics' units (default: "
                        f"{DEFAULT_REFERENCE[0]:g} {DEFAULT_REFERENCE[1]:g}; a minimized metric's is an upper bound)")
    g = p.add_argument_group("figures")
    g.add_argument("--runs", nargs="+", metavar="RUN", help="run ids or names to overlay (default: all finished)")
    g.add_argument("--fig3b", action="store_true",
                   help="also Fig. 3b: downloads the runs' checkpoints and ranks pixels by each model's gradients")
    g.add_argument("--fig3b-baseline", metavar="RUN",
                   help="run id or name of the Fig. 3b baseline (default: the finished ce trial with the best accuracy)")
    g.add_argument("--fig3b-images", type=int, default=256, metavar="N", help="test images of Fig. 3b (default 256)")
    g.add_argument("--fig3b-device", default="cpu", help="device of Fig. 3b: cpu (default), cuda, auto")
    return p


def run(args: argparse.Namespace) -> dict[str, Path]:
    """Select the trials, write the command's outputs and log them; returns name -> path."""
    args.notice = None  # a line about the selection split, printed after the outputs
    if args.command in MULTI_COMMANDS:
        if args.out is None:
            args.out = Path("out", "analysis", args.experiment, "fronts")
        return MULTI_COMMANDS[args.command](args)
    if args.sweep and len(args.sweep) > 1:
        raise AnalysisError(f"--sweep: {args.command} reads one sweep; compare several with `fronts`")
    parent = None
    if not args.all:
        parent = args.parent_run_id or select_parent(args.experiment, args.tracking_uri,
                                                     args.sweep[0] if args.sweep else None)
    frame = load(args.experiment, args.tracking_uri, parent)
    args.parent = parent
    if args.out is None:
        names = frame["sweep"].dropna()
        name = "all" if parent is None else str(names.iloc[0]) if len(names) else parent
        args.out = default_out_dir(args.experiment, name)
    args.notice = selection_notice(check_comparable(frame, gan_test=False))  # said once the outputs exist
    paths = COMMANDS[args.command](frame, args)
    if parent is not None and not args.no_log:
        log_outputs(paths, parent, args.tracking_uri)
        # sweep/hypervolume names one number: the accuracy/GAN-test front against (0, 0).
        default = args.x is None and column_name(args.y) == "gan_test" and args.reference in (None, list(DEFAULT_REFERENCE))
        if args.command == "pareto" and default and not args.include_stopped:
            tracking.log_parent_metrics(client(args.tracking_uri), parent, hypervolume_metrics(args.hypervolume))
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; exits 2 with one line on stderr for bad input."""
    args = parser().parse_args(argv)
    try:
        paths = run(args)
    except (AnalysisError, MlflowException) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"analysis: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except (sqlalchemy.exc.DBAPIError, sqlite3.DatabaseError) as e:  # a locked or damaged sqlite store
        reason = str(getattr(e, "orig", None) or e).splitlines()[0]
        hint = ": another process holds it; run this again once it is done" if "locked" in reason else ""
        uri = args.tracking_uri or default_tracking_uri()
        print(f"analysis: error: the MLflow store {uri} cannot be read ({reason}){hint}", file=sys.stderr)
        raise SystemExit(2) from None
    print("Files:")
    for path in paths.values():
        print(f"  {path}")
    if args.notice:
        print(f"analysis: {args.notice}", file=sys.stderr)


if __name__ == "__main__":
    main()
