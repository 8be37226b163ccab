"""Replay searches against recorded learning curves (a tabular benchmark of the search).

Each replayed search runs the live sweep's own parts on the recorded table
(:mod:`sweep.replay.table`) instead of training: the searcher :func:`sweep.tune._optuna` builds
from a sweep config (:class:`sweep.tune.ResumableOptunaSearch` with its sampler from
:data:`sweep.tune.SAMPLERS` and its :class:`sweep.budget.EpochBudget`), Ray's ``ASHAScheduler``
that :func:`sweep.tune._scheduler` builds, the objective of :mod:`sweep.objective`, and warm start
through :func:`sweep.warmstart.seed_study`. What stands in for Tune is :func:`drive`, a loop that
makes the Tune controller's calls in its order (``suggest``; per result ``scheduler.on_trial_result``
then ``searcher.on_trial_result``, or on a stop ``scheduler.on_trial_complete`` and
``searcher.on_trial_complete``), with ``concurrency`` trials training one epoch each per step.
Driving the objects directly, not through ``tune.Tuner``, is what makes 100 searches fit in
minutes: a Tune run starts actors and writes experiment state for every trial (seconds each).

A proposed (λ, μ) answers with the recorded cell nearest to it in log space; each replay seed also
draws which recorded training seed answers. Methods (:data:`METHODS`): the grid (FIFO, every cell
to the end, in a shuffled order), grid + ASHA, random + ASHA, TPE + ASHA, and TPE + ASHA warm-started
from a half-budget TPE + ASHA search on another training seed (its trials cost nothing here, as in
a live warm start). The searches get the grid's cost as their budget.

Scores, per search, against trial-epochs spent: the best objective of the trials that finished
(reached the last epoch), and the hypervolume of their (accuracy, GAN-test) front above chance
(1/K, 1/K). The goal compares the search with the grid on the same training seed.

Those scores are read on the training seed whose noisy values chose the cell (a winner's curse).
The held-out score (:func:`heldout`) reads a choice on the other recorded training seeds instead:
per search and budget fraction, the held-out objective of its incumbent less that of the grid's
choice on the same training seed, and whether the two are separable there; beside them the oracle,
the cell best on the mean over all seeds.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import numpy as np

from analysis.hypervolume import chance_reference, hypervolume_2d
from sweep.objective import objective_value, worst_value
from sweep.replay.table import Table, read_table
from trainer import keys
from trainer.config import ConfigError
from trainer.stats import Interval, combine, proportion, seeds_interval, wilson

METHODS = ("grid", "grid+asha", "random+asha", "tpe+asha", "tpe+asha warm")
DEFAULT = "tpe+asha"  # the sweep's default search, judged by the goal
FRACTIONS = (0.25, 0.5, 1.0)  # budget fractions of the grid's epochs the table reports
CONCURRENCY = 4  # trials training at once (a sweep's max_concurrent_trials)
HV_TARGET = 0.95  # "reaches the grid's hypervolume": at least this share of it (see docs/results.md)


@dataclass
class Search:
    """One replayed search: its anytime curve and what it ran."""

    method: str
    replay_seed: int
    train_seed: int
    spent: list[int] = field(default_factory=list)  # trial-epochs after each epoch trained
    best: list[float] = field(default_factory=list)  # best finished objective at that point
    hv: list[float] = field(default_factory=list)  # hypervolume of the finished front at that point
    trials: list[dict[str, Any]] = field(default_factory=list)  # one per trial: cell, status, epoch, values
    idle: bool = False  # it stopped with nothing running and nothing proposed

    def at(self, epochs: float) -> tuple[float, float]:
        """Best objective and hypervolume once ``epochs`` trial-epochs were spent (or fewer)."""
        i = int(np.searchsorted(self.spent, epochs, side="right")) - 1
        return (self.best[i], self.hv[i]) if i >= 0 else (-math.inf, 0.0)

    def incumbent(self, epochs: float) -> tuple[float, float] | None:
        """The cell of the best trial finished once ``epochs`` trial-epochs were spent (None: none)."""
        done = [t for t in self.trials if t["status"] == keys.Status.FINISHED and t["spent"] <= epochs]
        return max(done, key=lambda t: t["objective"])["cell"] if done else None


@dataclass(frozen=True)
class Method:
    """A replayed method: ``kind`` (one of :data:`METHODS`, which says grid or search, ASHA or not,
    warm or cold, and the sampler) with ``sets``, KEY=VALUE overrides of its sweep config applied
    after the kind's own (another sampler, ASHA's grace period ...); ``label`` names it in reports."""

    label: str
    kind: str
    sets: tuple[str, ...] = ()


def as_method(method: str | Method) -> Method:
    return method if isinstance(method, Method) else Method(method, method)


def sweep_config(table: Table, method: str, budget: int, sampler_seed: int, sets: tuple[str, ...] = ()):
    """The sweep config a live search of ``method`` (a kind of :data:`METHODS`) over the table's
    ranges would run, with ``sets`` (KEY=VALUE) applied last."""
    from sweep.loading import load_sweep_config

    lo_l, hi_l, lo_m, hi_m = min(table.lams), max(table.lams), min(table.mus), max(table.mus)
    overrides = [
        f"trainer.epochs={table.epochs}", f"trainer.eval.every={table.eval_every}",
        "search.method=optuna", "search.grid={}", "search.points=[]", "search.n_trials=100000",
        f"search.space.loss.lam={{low: {lo_l!r}, high: {hi_l!r}, log: true}}",
        f"search.space.loss.mu={{low: {lo_m!r}, high: {hi_m!r}, log: true}}",
        f"search.max_epochs_total={budget}", f"search.sampler={'random' if method.startswith('random') else 'tpe'}",
        f"search.sampler_seed={sampler_seed}",  # search.startup_trials: the default (10), as a live sweep
        "scheduler.kind=asha", f"scheduler.grace_period={table.eval_every}", "scheduler.reduction_factor=3",
        "analysis=false", *sets,
    ]  # fmt: skip
    return load_sweep_config("quickstart", overrides, name=f"replay-{method.replace('+', '-').replace(' ', '-')}")


def nearest(table: Table, params: dict[str, float]) -> tuple[float, float]:
    """The recorded (λ, μ) nearest to a proposal in log space."""
    def snap(values: list[float], x: float) -> float:
        return min(values, key=lambda v: abs(math.log10(v) - math.log10(x)))

    return snap(table.lams, params["loss.lam"]), snap(table.mus, params["loss.mu"])


def drive(
    table: Table,
    train_seed: int,
    propose: Callable[[str], Any],
    objective_cfg: Any,
    searcher: Any = None,
    scheduler: Any = None,
    concurrency: int = CONCURRENCY,
    reference: tuple[float, float] = (0.0, 0.0),
    out: Search | None = None,
) -> Search:
    """Run trials proposed by ``propose(trial_id)`` (a config, None to wait, or "FINISHED") on the
    recorded curves, making the Tune controller's calls to ``scheduler`` and ``searcher``."""
    from sweep.tune import CONTINUE, FINISHED, STOP

    acc_key = table.meta.get("accuracy", keys.VAL_ACC)
    out = out or Search("", 0, train_seed)
    running: dict[str, dict[str, Any]] = {}
    front: list[tuple[float, float]] = []
    best, spent, hv, n, proposing = -math.inf, 0, 0.0, 0, True
    while True:
        while proposing and len(running) < concurrency:
            tid = f"t{n:04d}"
            config = propose(tid)
            if config is None or config == FINISHED:
                proposing = config is None
                break
            n += 1
            lam, mu = nearest(table, config)
            running[tid] = {"cell": (lam, mu), "epoch": 0, "objective": worst_value(objective_cfg),
                            "trial": SimpleNamespace(trial_id=tid)}
            if scheduler is not None:
                scheduler.on_trial_add(None, running[tid]["trial"])
        if not running:
            out.idle = proposing  # the searcher waits although nothing runs: a live sweep's stall
            return out
        for tid in list(running):  # every running trial trains one epoch
            t = running[tid]
            t["epoch"] += 1
            spent += 1
            metrics = table.metrics(*t["cell"], train_seed, t["epoch"])
            if metrics[keys.STATUS] == keys.Status.FAILED:  # the trial raised: Tune's failure path
                if scheduler is not None:
                    scheduler.on_trial_error(None, t["trial"])
                if searcher is not None:
                    searcher.on_trial_complete(tid, None, error=True)
                del running[tid]
                out.trials.append({"cell": t["cell"], "status": keys.Status.FAILED.value, "epoch": t["epoch"],
                                   "objective": t["objective"], "spent": spent})
                out.spent.append(spent)
                out.best.append(best)
                out.hv.append(hv)
                continue
            value = objective_value(objective_cfg, metrics)
            if value is not None:  # as sweep.trial: the last evaluation's objective until the next
                t["objective"] = value
            result = {**metrics, keys.OBJECTIVE: t["objective"], "training_iteration": t["epoch"]}
            done = metrics[keys.STATUS] in (keys.Status.FINISHED, keys.Status.DIVERGED)
            decision = STOP if done else (
                scheduler.on_trial_result(None, t["trial"], result) if scheduler is not None else CONTINUE)
            if decision == STOP:
                if scheduler is not None:
                    scheduler.on_trial_complete(None, t["trial"], result)
                if searcher is not None:
                    searcher.on_trial_complete(tid, result)
                del running[tid]
                out.trials.append({"cell": t["cell"], "status": metrics[keys.STATUS], "epoch": t["epoch"],
                                   "objective": t["objective"], "spent": spent})
                if metrics[keys.STATUS] == keys.Status.FINISHED:
                    best = max(best, t["objective"])
                    front.append((metrics[acc_key], metrics.get(keys.GAN_TEST, 0.0)))
                    hv = hypervolume_2d(*zip(*front), reference=reference)
            elif searcher is not None:
                searcher.on_trial_result(tid, result)
            out.spent.append(spent)
            out.best.append(best)
            out.hv.append(hv)


def _grid_proposer(table: Table, rng: random.Random) -> Callable[[str], Any]:
    cells = [(lam, mu) for lam in table.lams for mu in table.mus]
    rng.shuffle(cells)  # as sweep.tune.search_setup shuffles a grid run under ASHA
    queue = iter(cells)

    def propose(tid: str) -> Any:
        cell = next(queue, None)
        return "FINISHED" if cell is None else {"loss.lam": cell[0], "loss.mu": cell[1]}  # Tune's FINISHED

    return propose


def chance(table: Table) -> tuple[float, float]:
    """The hypervolume's reference: chance on both axes, (1/K, 1/K)."""
    return chance_reference(int(table.meta["classes"]))


def replay(table: Table, method: str | Method, replay_seed: int, budget: int) -> Search:
    """One search of ``method`` at ``replay_seed`` with ``budget`` trial-epochs."""
    import optuna

    from sweep import tune as sweep_tune
    from sweep import warmstart

    spec = as_method(method)
    method = spec.kind
    rng = random.Random(replay_seed)
    train_seed = rng.choice(table.seeds)
    np.random.seed(replay_seed)  # ASHA draws its bracket with NumPy's global generator
    out = Search(spec.label, replay_seed, train_seed)
    cfg = sweep_config(table, method, budget, replay_seed, spec.sets)
    scheduler = None
    if method != "grid":
        scheduler = sweep_tune._scheduler(cfg)
        scheduler.set_search_properties(keys.OBJECTIVE, "max")  # what tune.TuneConfig(metric, mode) does
    if method.startswith("grid"):
        return drive(table, train_seed, _grid_proposer(table, rng), cfg.objective, None, scheduler,
                     reference=chance(table), out=out)
    storage = optuna.storages.InMemoryStorage()
    if method.endswith("warm"):
        # The earlier sweep: half the budget, another training seed and sampler seed.
        source_seed = rng.choice([s for s in table.seeds if s != train_seed] or table.seeds)
        source = replay_source(table, replay_seed + 10_000, source_seed, budget // 2, spec.sets)
        warmstart.seed_study(cfg, cfg.name, storage, source)
    searcher = sweep_tune._optuna(cfg, storage)
    return drive(table, train_seed, searcher.suggest, cfg.objective, searcher, scheduler,
                 reference=chance(table), out=out)


def replay_source(table: Table, sampler_seed: int, train_seed: int, budget: int, sets: tuple[str, ...] = ()) -> list:
    """The ended trials of a cold TPE + ASHA search (with ``sets``), as warm start reads an earlier sweep's."""
    import optuna

    from sweep import tune as sweep_tune
    from sweep.warmstart import WarmTrial

    cfg = sweep_config(table, "tpe+asha", budget, sampler_seed, sets)
    scheduler = sweep_tune._scheduler(cfg)
    scheduler.set_search_properties(keys.OBJECTIVE, "max")
    searcher = sweep_tune._optuna(cfg, optuna.storages.InMemoryStorage())
    run = drive(table, train_seed, searcher.suggest, cfg.objective, searcher, scheduler)
    return [
        WarmTrial(run_id=f"source-{i}", sweep="source", status=t["status"] if t["status"] != keys.Status.RUNNING else keys.Status.STOPPED,
                  params={"loss.lam": t["cell"][0], "loss.mu": t["cell"][1]}, values=[t["objective"]],
                  epoch=t["epoch"])
        for i, t in enumerate(run.trials)
    ]


def grid_truth(table: Table, train_seed: int, objective_cfg: Any) -> dict[str, Any]:
    """The whole grid on one training seed: best objective, its cell, and the front's hypervolume."""
    acc_key = table.meta.get("accuracy", keys.VAL_ACC)
    finals = {}
    front = []
    for (lam, mu), by_seed in table.cells.items():
        row = by_seed[train_seed]
        if row["status"] != keys.Status.FINISHED:
            continue
        m = table.metrics(lam, mu, train_seed, table.epochs)
        finals[(lam, mu)] = objective_value(objective_cfg, m)
        front.append((m[acc_key], m.get(keys.GAN_TEST, 0.0)))
    cell = max(finals, key=finals.get)
    return {"best": finals[cell], "cell": cell, "finals": finals,
            "hv": hypervolume_2d(*zip(*front), reference=chance(table)) if front else 0.0}


def objective_interval(table: Table, cell: tuple[float, float], seed: int, objective_cfg: Any) -> Interval:
    """The 95 % interval of a cell's final objective (Wilson on accuracy and on GAN-test, propagated)."""
    m = table.metrics(*cell, seed, table.epochs)
    acc = proportion(m[table.meta.get("accuracy", keys.VAL_ACC)], int(table.meta["val_images"]))
    gan = proportion(m[keys.GAN_TEST], int(table.meta["samples"]))
    w = objective_cfg.weight
    return combine(lambda a, g: w * a + (1 - w) * g, [acc, gan], bounds=(0.0, 1.0))


def final_interval(table: Table, cell: tuple[float, float], seed: int, objective_cfg: Any) -> Interval:
    """A cell's final objective on one training seed with its 95 % interval; a cell that diverged or
    failed on that seed scores the worst value there (lo = hi), as its trial would."""
    if table.cells[cell][seed]["status"] != keys.Status.FINISHED:
        worst = worst_value(objective_cfg)
        return Interval(worst, worst, worst)
    return objective_interval(table, cell, seed, objective_cfg)


def heldout(table: Table, cell: tuple[float, float], seeds: list[int], objective_cfg: Any) -> Interval:
    """The held-out score of a cell: its mean final objective over ``seeds`` (training seeds that did
    not choose it), with the interval propagated from each seed's (:func:`final_interval`).

    Propagated, not Student's t across those seeds: the table has three training seeds, so a held-out
    mean has two and t with one degree of freedom is 12.7 standard errors wide. The interval is the
    evaluation noise of the held-out runs, not the spread between training seeds.
    """
    if not seeds:  # a table of one training seed has nothing to hold out: never separable
        return Interval(math.nan, -math.inf, math.inf)
    parts = [final_interval(table, cell, s, objective_cfg) for s in seeds]
    return combine(lambda *v: math.fsum(v) / len(v), parts, bounds=(0.0, 1.0))


def oracle_cell(table: Table, objective_cfg: Any) -> tuple[float, float]:
    """The cell best on the mean final objective over all recorded training seeds."""
    def mean(cell: tuple[float, float]) -> float:
        return math.fsum(final_interval(table, cell, s, objective_cfg).value for s in table.seeds) / len(table.seeds)

    return max(table.cells, key=mean)


@dataclass
class Report:
    """Every search of every method, with the grid's truth per training seed."""

    table: Table
    searches: dict[str, list[Search]]
    truth: dict[int, dict[str, Any]]
    grid_epochs: int
    seconds: float

    def goal(self, method: str) -> dict[str, float]:
        """Shares of seeds whose search, with <= 25 % of the grid's epochs, found the grid's best
        objective exactly, or a cell not separable from it (their 95 % intervals overlap), and
        with <= 50 % reached HV_TARGET of the grid's hypervolume."""
        runs = self.searches[method]
        objective_cfg = sweep_config(self.table, DEFAULT, self.grid_epochs, 0).objective
        exact = sep = hv = 0
        for s in runs:
            truth = self.truth[s.train_seed]
            exact += s.at(0.25 * self.grid_epochs)[0] >= truth["best"] - 1e-12
            cell = s.incumbent(0.25 * self.grid_epochs)
            if cell is not None:
                top = objective_interval(self.table, truth["cell"], s.train_seed, objective_cfg)
                sep += objective_interval(self.table, cell, s.train_seed, objective_cfg).overlaps(top)
            hv += s.at(0.5 * self.grid_epochs)[1] >= HV_TARGET * truth["hv"]
        n = len(runs)
        return {"best_exact": exact / n, "best_not_separable": sep / n, "hv": hv / n}

    def objective_cfg(self) -> Any:
        return sweep_config(self.table, DEFAULT, self.grid_epochs, 0).objective

    def heldout_gaps(self, method: str, fraction: float) -> tuple[list[float], int]:
        """Per search of ``method``: the held-out score of its choice once ``fraction`` of the grid's
        epochs were spent, less the held-out score of the grid's choice on the same training seed
        (both on the other training seeds, :func:`heldout`); and how many of those choices are not
        separable from the grid's there. No finished trial yet: the worst value, separable."""
        cfg = self.objective_cfg()
        gaps, not_separable = [], 0
        for s in self.searches[method]:
            others = [t for t in self.table.seeds if t != s.train_seed]
            grid = heldout(self.table, self.truth[s.train_seed]["cell"], others, cfg)
            cell = s.incumbent(fraction * self.grid_epochs)
            if cell is None:
                gaps.append(worst_value(cfg) - grid.value)
                continue
            mine = heldout(self.table, cell, others, cfg)
            gaps.append(mine.value - grid.value)
            not_separable += mine.overlaps(grid)
        return gaps, not_separable

    def oracle_gaps(self) -> tuple[list[float], int]:
        """The oracle's row beside :meth:`heldout_gaps`: the cell best on the mean over all training
        seeds (so not held out itself), on the training seeds of the first method's searches."""
        cfg = self.objective_cfg()
        cell = oracle_cell(self.table, cfg)
        gaps, not_separable = [], 0
        for s in next(iter(self.searches.values())):
            others = [t for t in self.table.seeds if t != s.train_seed]
            grid = heldout(self.table, self.truth[s.train_seed]["cell"], others, cfg)
            mine = heldout(self.table, cell, others, cfg)
            gaps.append(mine.value - grid.value)
            not_separable += mine.overlaps(grid)
        return gaps, not_separable


def grid_epochs_of(table: Table) -> int:
    """The grid's cost in trial-epochs: every cell to the last epoch (the searches' budget)."""
    return len(table.lams) * len(table.mus) * table.epochs


def check_methods(table: Table, methods: Sequence[str | Method]) -> None:
    """Build each method's sweep config once, so a bad override is refused (ConfigError) before any
    search runs."""
    for m in map(as_method, methods):
        if m.kind not in METHODS:
            raise ConfigError(f"replay method kind {m.kind!r} is none of {', '.join(METHODS)}")
        sweep_config(table, m.kind, grid_epochs_of(table), 0, m.sets)


def run_all(table: Table, seeds: int, methods: Sequence[str | Method] = METHODS, seed_base: int = 0) -> Report:
    """``seeds`` searches of each method, at replay seeds ``seed_base`` … ``seed_base + seeds - 1``,
    with the grid's cost as budget."""
    start = time.perf_counter()
    check_methods(table, methods)
    grid_epochs = grid_epochs_of(table)
    objective_cfg = sweep_config(table, DEFAULT, grid_epochs, 0).objective
    truth = {s: grid_truth(table, s, objective_cfg) for s in table.seeds}
    searches = {
        as_method(m).label: [replay(table, m, r, grid_epochs) for r in range(seed_base, seed_base + seeds)]
        for m in methods
    }
    return Report(table, searches, truth, grid_epochs, time.perf_counter() - start)


def summary_rows(report: Report) -> list[dict[str, Any]]:
    """One row per method: mean and 95 % interval across seeds of the best objective and of the
    hypervolume as shares of the grid's, at each budget fraction, and the goal's shares."""
    rows = []
    for method, runs in report.searches.items():
        row: dict[str, Any] = {"method": method, "seeds": len(runs)}
        for f in FRACTIONS:
            gaps, ratios = [], []
            for s in runs:
                truth = report.truth[s.train_seed]
                best, hv = s.at(f * report.grid_epochs)
                gaps.append((best if best > -math.inf else 0.0) - truth["best"])
                ratios.append(hv / truth["hv"] if truth["hv"] else math.nan)
            row[f"gap@{f:g}"] = seeds_interval(gaps)
            row[f"hv@{f:g}"] = seeds_interval(ratios)
        for f in FRACTIONS:
            gaps, not_separable = report.heldout_gaps(method, f)
            row[f"heldout@{f:g}"] = seeds_interval(gaps)
            row[f"heldout_ns@{f:g}"] = not_separable / len(runs)
        row.update(report.goal(method))
        row["idle"] = sum(s.idle for s in runs)
        rows.append(row)
    return rows


def markdown(report: Report) -> str:
    """The summary tables in Markdown: scored on the answering training seed, then held out."""
    head = ("| method | best − grid best @25 % | @50 % | HV / grid HV @25 % | @50 % | @100 % | "
            "best @25 %: exact / not separable | HV ≥ 95 % @50 % |")
    lines = [head, "|" + " --- |" * 8]
    rows = summary_rows(report)
    for r in rows:
        n = r["seeds"]
        lines.append(
            f"| {r['method']} | {r['gap@0.25']} | {r['gap@0.5']} | {r['hv@0.25']} | {r['hv@0.5']} | {r['hv@1']} | "
            f"{share(r['best_exact'], n)} / {share(r['best_not_separable'], n)} | {share(r['hv'], n)} |")
    head = ("| method | held-out − grid's choice @25 % | @50 % | @100 % | not separable from the grid's "
            "choice, held out @25 % | @50 % | @100 % |")
    lines += ["", head, "|" + " --- |" * 7]
    for r in rows:
        lines.append(f"| {r['method']} | " + " | ".join(str(r[f"heldout@{f:g}"]) for f in FRACTIONS) + " | "
                     + " | ".join(share(r[f"heldout_ns@{f:g}"], r["seeds"]) for f in FRACTIONS) + " |")
    gaps, not_separable = report.oracle_gaps()
    lines.append(f"| oracle (best on all seeds) | {seeds_interval(gaps)} | | | "
                 f"{share(not_separable / len(gaps), len(gaps))} | | |")
    return "\n".join(lines)


def share(fraction: float, n: int) -> str:
    """A share of ``n`` seeds with its 95 % Wilson interval, in percent: "45% [26, 66]"."""
    iv = wilson(round(fraction * n), n)
    return f"{iv.value:.0%} [{100 * iv.lo:.0f}, {100 * iv.hi:.0f}]"


def plot(report: Report, path: Path) -> None:
    """Anytime curves: mean across seeds with its 95 % interval, best-objective gap and HV share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.arange(0, report.grid_epochs + 1, max(report.table.epochs // 2, 1))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, runs in report.searches.items():
        for ax, which in zip(axes, ("best", "hv")):
            mean, lo, hi = [], [], []
            for e in grid:
                vals = []
                for s in runs:
                    truth = report.truth[s.train_seed]
                    best, hv = s.at(e)
                    vals.append((best if best > -math.inf else 0.0) - truth["best"] if which == "best"
                                else hv / truth["hv"])
                iv = seeds_interval(vals)
                mean.append(iv.value), lo.append(iv.lo), hi.append(iv.hi)
            x = 100 * grid / report.grid_epochs
            (line,) = ax.plot(x, mean, label=method)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
    axes[0].set(xlabel="trial-epochs spent (% of the grid's)", ylabel="best objective − grid's best",
                title="Best finished objective", ylim=(-0.1, 0.01))
    axes[1].set(xlabel="trial-epochs spent (% of the grid's)", ylabel="hypervolume / grid's",
                title="Hypervolume above chance (1/K, 1/K)", ylim=(0, 1.05))
    for ax in axes:
        ax.axvline(25, color="grey", lw=0.5, ls=":")
        ax.axvline(50, color="grey", lw=0.5, ls=":")
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", fontsize=8)
    n = len(next(iter(report.searches.values())))
    fig.suptitle(f"Replay of {len(report.table.lams)}×{len(report.table.mus)} recorded λ×μ curves: "
                 f"mean of {n} seeds per method, 95 % interval", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_csv(report: Report, path: Path) -> None:
    """The anytime curves, one row per (method, seed, budget fraction)."""
    lines = ["method,replay_seed,train_seed,fraction,epochs,best,best_gap,hv,hv_share"]
    for method, runs in report.searches.items():
        for s in runs:
            truth = report.truth[s.train_seed]
            for f in (0.1, 0.25, 0.5, 0.75, 1.0):
                best, hv = s.at(f * report.grid_epochs)
                best = best if best > -math.inf else float("nan")
                lines.append(f"{method},{s.replay_seed},{s.train_seed},{f},{f * report.grid_epochs:g},"
                             f"{best:.6f},{best - truth['best']:.6f},{hv:.6f},{hv / truth['hv']:.6f}")
    path.write_text("\n".join(lines) + "\n")


def data_facts(table: Table) -> None:
    """Fill in the table's number of classes and of validation images (from its trainer config)
    when the recording did not store them."""
    if "classes" in table.meta and "val_images" in table.meta:
        return
    from trainer.config import TrainConfig
    from trainer.data import load_dataset

    data = load_dataset(TrainConfig.model_validate(table.meta["trainer"]).data, "cpu")
    table.meta["classes"] = data.num_classes
    table.meta["val_images"] = len(data.val_y) if data.val_y is not None else len(data.test_y)


def load(table_path: Path) -> Table:
    """The recorded table with its data facts, Optuna's per-study lines silenced."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per study created, 100 of them
    table = read_table(table_path)
    data_facts(table)
    return table


def main(table_path: Path, seeds: int, out: Path, seed_base: int = 0, sets: tuple[str, ...] = ()) -> int:
    """``python -m sweep.replay run``: replay every method, write table, CSV and picture.
    ``sets`` (KEY=VALUE) override every method's sweep config."""
    table = load(table_path)
    methods = [Method(m, m, sets) for m in METHODS]
    check_methods(table, methods)  # a bad override: refused before anything runs or is written
    report = run_all(table, seeds, methods, seed_base)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    if sets:
        text = f"Every method with {' '.join(sets)}.\n\n{text}"
    (out / "replay.md").write_text(text + "\n")
    write_csv(report, out / "replay.csv")
    plot(report, out / "replay.png")
    print(text)
    print(f"\n{seeds} seeds ({seed_base}..{seed_base + seeds - 1}) x {len(report.searches)} methods in "
          f"{report.seconds:.0f} s; grid: {report.grid_epochs} trial-epochs; wrote {out}/replay.md, replay.csv, replay.png")
    return 0
