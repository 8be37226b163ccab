"""What a finished sweep tells its user: the trials, the finalists, the best point and the verdict.

One :class:`Outcome` holds what the stages found (Tune's rows, the confirmation, the split that
selected, the training seed's pooled variance); every function here is a pure function of it that
prints or returns text: the terminal's summary (:func:`print_summary`), the parent run's
description (:func:`note`), its ``best/*`` metrics (:func:`best_metrics`). The best point is
named by one rule everywhere (:meth:`Outcome.best`): the confirmation's where it ran (with
retrains, the best mean over new training seeds), else the selection's, labelled as such.

The closing lines are here too: the seconds per phase (:class:`Phases`) and where the results are
with the commands that open, analyse and continue them (:func:`print_next_steps`).
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sweep import tracking
from sweep.cli import rerun_command
from sweep.config import SweepConfig
from sweep.finalists import Confirmation, Confirmed, seeds_phrase
from sweep.record import BEST_METRIC_PREFIX, BEST_SELECTION_PREFIX, VIEW_STATE_KEY, Status
from sweep.rows import best_row, objective_of, point_of
from sweep.runs_view import runs_table_url
from trainer import keys
from trainer.pooled import Pooled


@dataclass(frozen=True)
class Outcome:
    """What the sweep found, for the report."""

    rows: list[dict[str, Any]]  # Tune's rows (trial_id, metrics, status, error)
    confirmation: Confirmation = field(default_factory=lambda: Confirmation([], None, None, False))
    split: str = "val"  # objective.split: what selected
    # The training seed's run-to-run variance per frame column (analysis.verdicts.pooled_all):
    # from points with >= 2 seeds, the retrains' included.
    pooled: Mapping[str, Pooled] = field(default_factory=dict)

    def best(self) -> Confirmed | None:
        """The confirmed best point (None: not confirmed; then :func:`best_row` is the best)."""
        return self.confirmation.best

    def best_trial(self) -> str | None:
        """The Tune trial id of the best point by the one rule."""
        confirmed = self.best()
        if confirmed is not None:
            return confirmed.finalist.trial_id
        row = best_row(self.rows)
        return None if row is None else str(row["trial_id"])

    def best_row(self) -> Mapping[str, Any] | None:
        """Tune's row of the best point (its selection numbers)."""
        trial = self.best_trial()
        return next((r for r in self.rows if r["trial_id"] == trial), None)

    def one_seed(self) -> bool:
        """Whether the search trained each point with one seed (so its intervals are the evaluation's)."""
        names = [point_of(r) for r in self.rows]
        return len(names) == len(set(_without_seed(n) for n in names))


def _without_seed(name: str) -> str:
    head, sep, tail = name.rpartition(" s")
    return head if sep and tail.isdigit() else name


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-" if value is None else str(value)


def _fmt_iv(iv: Any) -> str:
    return "-" if iv is None else str(iv)


def _with_interval(m: Mapping[str, Any], key: str, value: Any) -> str:
    """``0.625 [0.538, 0.705]``: ``value`` (metric ``key`` of a trial's last result) with its logged
    95 % interval; ``-`` for None."""
    lo, hi = m.get(keys.lo_key(key)), m.get(keys.hi_key(key))
    if not isinstance(value, float) or lo is None or hi is None:
        return _fmt(value)
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def selection_header(split: str) -> str:
    """What selected, per the run's split, for the trials table's header."""
    if split == "test":
        return ("test and gan are what selected (objective.split: test; this preset has no validation split, so "
                "it SELECTED ON THE TEST SET)")
    return "val and gan are what selected, test never selects"


def training_noise_line(outcome: Outcome) -> str | None:
    """What the trials table's intervals cover, and the training seed's noise where measured."""
    pool = outcome.pooled.get("objective")
    measured = (f"the training seed's run-to-run sd of the objective, pooled over points trained with several "
                f"seeds, is {pool.sd:.3f} ({pool.df} d.f.)" if pool is not None else None)  # fmt: skip
    if outcome.one_seed():
        return ("These intervals cover the evaluation's noise only (one training seed per point)"
                + (f"; {measured}, so a single trial's number moves by about ±{1.96 * pool.sd:.3f} with the seed."
                   if measured else ": a point's value on another seed is not in them."))
    return f"Intervals of points with several seeds: {measured}." if measured else None


def print_summary(outcome: Outcome) -> None:
    """The trials table (best first by the selection objective), the finalists, the verdict."""
    rows = outcome.rows
    print("\nTrials, best first by the selection objective (val/test = validation/test accuracy, gan = GAN-test,"
          f" objective = eval/objective; each with its 95 % interval; {selection_header(outcome.split)}):")
    print(f"  {'point':24s} {'status':9s} {'epoch':>5s} {'val':>21s} {'test':>21s} {'gan':>21s} {'objective':>21s}")
    ranked = sorted(rows, key=lambda r: (objective_of(r) is None, -(objective_of(r) or 0.0), point_of(r)))
    for row in ranked:
        m = row["metrics"]
        print(
            f"  {point_of(row):24s} {row['status']:9s} {_fmt(m.get(keys.EPOCH)):>5s} "
            f"{_with_interval(m, keys.VAL_ACC, m.get(keys.VAL_ACC)):>21s} "
            f"{_with_interval(m, keys.TEST_ACC, m.get(keys.TEST_ACC)):>21s} "
            f"{_with_interval(m, keys.GAN_TEST, m.get(keys.GAN_TEST)):>21s} "
            f"{_with_interval(m, keys.OBJECTIVE, objective_of(row)):>21s}"
        )
        if row["error"]:
            print(f"      error: {row['error']}")
    noise = training_noise_line(outcome)
    if noise:
        print(noise)
    if outcome.confirmation.finalists:
        _print_confirmed(outcome)
    if rows:
        print(best_line(outcome))
        for line in verdict_lines(outcome):
            print(f"  {line}")
    for status in (Status.DIVERGED, Status.STOPPED, Status.FAILED):
        named = sorted(point_of(r) for r in rows if r["status"] == status)
        if named:
            print(f"{status.capitalize()}: {', '.join(named)}")


def _print_confirmed(outcome: Outcome) -> None:
    confirmation = outcome.confirmation
    draw = "test images" if outcome.split == "val" else "test images (the draw that selected: objective.split is test)"
    print(f"\nFinalists confirmed on fresh draws (value [95 % interval]; selection = the objective that chose them; "
          f"the confirmed accuracy is on the {draw}):")  # fmt: skip
    if confirmation.retrained:
        print("  (retrained with confirm.train_seeds: each finalist's mean over its new training seeds, with the "
              "run-to-run variance pooled over the finalists; its own selected run is not in the mean)")
    print(f"  {'point':32s} {'selection':>9s}  {'objective':21s} {'test acc':21s} {'gan':21s} own run's objective")
    for c in confirmation.finalists:
        own = _fmt_iv(c.own.objective) if c.own is not None else "-"
        print(
            f"  {c.finalist.point:32s} {c.finalist.objective:9.3f}  {_fmt_iv(c.objective):21s} "
            f"{_fmt_iv(c.test_acc):21s} {_fmt_iv(c.gan_test):21s} {own}"
        )


def best_line(outcome: Outcome, md: bool = False) -> str:
    """The best point with its confirmed numbers (or its selection numbers, labelled so) and the
    finalists not separable from it; ``md``: for the parent's description (Markdown)."""
    row = outcome.best_row()
    if row is None:
        return "No finished trial." if md else "Best point: none (no trial finished)"
    c = outcome.best()
    end = "." if md else ""
    name = point_of(row) if c is None or not c.retrains else _without_seed(point_of(row))
    name = f"**{name}**" if md else name
    if c is None or c.objective is None:
        return (f"Best point: {name}, selection objective {_fmt(objective_of(row))} (the draw that chose it; "
                f"not confirmed on fresh draws){end}")  # fmt: skip
    shown = c.retrains[0] if c.retrains and not c.retrains[0].diverged else c.own or c
    fresh = f"{shown.samples} new samples, seed {shown.sample_seed}, and " if c.gan_test is not None else ""
    if c.retrains:
        how = (f"{seeds_phrase(c)}; each seed confirmed on {fresh}{shown.test_images} test images; the best mean "
               f"of {len(outcome.confirmation.finalists)} finalist(s); its own selected run "
               f"{point_of(row).rpartition(' ')[2]}: {_fmt_iv(c.own.objective if c.own else None)}")
    else:
        how = f"95 % interval; confirmed on {fresh}{shown.test_images} test images; evaluation noise only"
    text = f"Best point: {name}, objective {c.objective} ({how}; selection objective {c.finalist.objective:.3f})"
    against = outcome.confirmation.against_best()
    if not against:
        return f"{text}; no other finalist{end}"
    others = [o.finalist.point for o, _, separable in against if not separable]
    tail = f"not separable from it: {', '.join(others)}" if others else "separable from every other finalist"
    return f"{text}; {tail}{end}"


def verdict_lines(outcome: Outcome) -> list[str]:
    """One line per other finalist: best − it with its 95 % interval and whether Holm separates it."""
    against = outcome.confirmation.against_best()
    verdict = outcome.confirmation.verdict
    if not against or verdict is None:
        return []
    family = (f"Holm over all {verdict.family} pairs, since the best was picked from these numbers"
              if verdict.picked_here else f"Holm over the {verdict.family} comparisons with it")
    lines = [f"best − each other finalist (95 % interval of the difference; {family}):"]
    for other, diff, separable in against:
        lines.append(f"  {other.finalist.point:32s} {str(diff.interval()):26s} "
                     f"{'separable' if separable else 'not separable'} ({diff.how}, p = {diff.p_value:.3f})")
    return lines


def best_metrics(outcome: Outcome) -> tuple[dict[str, Any], dict[str, float]]:
    """The parent's summary of the best point: the mapping ``tracking.finish_parent`` logs as
    ``best/*`` (its confirmed numbers where confirmed), and the extra parent metrics: the confirmed
    numbers' ``best/<name>_lo``/``_hi`` and the selection numbers as ``best/selection_<name>``."""
    row = outcome.best_row()
    if row is None:
        return {}, {}
    m = row["metrics"]
    summary = {"point": point_of(row), **m, keys.OBJECTIVE: objective_of(row)}
    extra: dict[str, float] = {}
    for key, short in ((keys.OBJECTIVE, "objective"), (keys.TEST_ACC, "test_acc"), (keys.GAN_TEST, "gan_test")):
        if isinstance(summary.get(key), (int, float)):
            extra[f"{BEST_SELECTION_PREFIX}{short}"] = float(summary[key])
    c = outcome.best()
    if c is not None:
        for key, short, iv in ((keys.OBJECTIVE, "objective", c.objective), (keys.TEST_ACC, "test_acc", c.test_acc),
                               (keys.GAN_TEST, "gan_test", c.gan_test)):  # fmt: skip
            if iv is not None:
                summary[key] = iv.value
                extra[keys.lo_key(BEST_METRIC_PREFIX + short)] = iv.lo
                extra[keys.hi_key(BEST_METRIC_PREFIX + short)] = iv.hi
    return summary, extra


def counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Trials per final status."""
    ends = (Status.FINISHED, Status.DIVERGED, Status.STOPPED, Status.FAILED)
    return {str(s): sum(r["status"] == s for r in rows) for s in ends}


def note(name: str, outcome: Outcome) -> str:
    """The parent run's description in the MLflow UI (Markdown)."""
    by_status = ", ".join(f"{n} {s}" for s, n in counts(outcome.rows).items())
    text = f"Sweep **{name}**: {len(outcome.rows)} trials ({by_status})."
    row = outcome.best_row()
    if row is not None:
        m = row["metrics"]
        text += (
            f" {best_line(outcome, md=True)} As selection measured it: objective {_fmt(objective_of(row))}, "
            f"validation accuracy {_fmt(m.get(keys.VAL_ACC))}, test accuracy {_fmt(m.get(keys.TEST_ACC))}, "
            f"GAN-test {_fmt(m.get(keys.GAN_TEST))}."
        )
    noise = training_noise_line(outcome)
    if noise:
        text += " " + noise.replace("These intervals", "The trials' intervals")
    return text + " Config: `sweep.yaml`; Table 2 and Pareto front: `analysis/` in this run's artifacts."


class Phases:
    """Wall seconds per phase of the run, for the closing line: ``with phases("judge"): ...``."""

    def __init__(self) -> None:
        self.started = time.time()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        mark = time.time()
        try:
            yield
        finally:
            self.seconds[name] = time.time() - mark

    def summary(self) -> str:
        split = ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())
        return f"{time.time() - self.started:.0f} s ({split})"


def ui_command(uri: str, experiment_id: str) -> str:
    """How to open the experiment's runs table in the MLflow UI (the sweep's shared view)."""
    if uri.startswith(("http://", "https://")):
        return f"open {runs_table_url(uri, experiment_id, VIEW_STATE_KEY)}"
    link = runs_table_url("http://127.0.0.1:5000", experiment_id, VIEW_STATE_KEY)
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)}\n  then browse {link}"


def print_next_steps(
    cfg: SweepConfig, uri: str, parent_id: str, storage: str, args: argparse.Namespace, experiment_id: str
) -> None:
    """Where the results are, and the commands that open, analyse and continue them."""
    exp, q = cfg.experiment_name, shlex.quote  # every printed command pastes into a shell as is
    uri_flag = f" --tracking-uri {q(uri)}"
    print(
        f"\nResults:\n"
        f"  MLflow:      {uri}  (experiment '{exp}', parent run '{tracking.parent_name(cfg.name)}' = {parent_id})\n"
        f"  Ray results: {storage.rstrip('/')}/{cfg.name}\n"
        f"Open the MLflow UI (the runs table, best first):\n"
        f"  {ui_command(uri, experiment_id)}\n"
        f"Analysis (Table 2 heatmap, Pareto front):\n"
        f"  python -m analysis table2 --experiment {q(exp)}{uri_flag}\n"
        f"  python -m analysis pareto --experiment {q(exp)}{uri_flag}\n"
        f"Continue after an interruption:\n"
        f"  {rerun_command(cfg, args)}"
    )
