"""Replay searches against recorded learning curves (a tabular benchmark of the search).

Each replayed search runs the live sweep's own parts on the recorded table
(:mod:`sweep.bench.replay.table`) instead of training: the searcher :func:`sweep.search.searcher` builds
from a sweep config (:class:`sweep.search.OptunaSearcher` with its sampler from
:data:`sweep.search.SAMPLERS` and its :class:`sweep.budget.EpochBudget`), Ray's ``ASHAScheduler``
that :func:`sweep.engine.tuner.scheduler` builds, the objective of :mod:`sweep.objective`, and warm start
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

What a user cares about is how good the chosen cell is on training seeds the search never saw, so
that is the score (:class:`Report`). Each replay seed shuffles the recorded training seeds: the
first ``reserve`` of them are the search's (the seed that answers its trials, and the new seeds a
replicating search retrains on); the rest are held out, the same for every method of that replay
seed. Per search and budget fraction (25, 50 and 100 % of the one-seed grid's epochs):

- the choice: the incumbent (the best finished trial, or the best mean over a point's seeds for a
  search that replicates) once that many epochs were spent;
- its value: the mean final objective over the held-out seeds (a diverged or failed run scores the
  objective's worst value there; no choice yet, the worst value);
- the regret: the leave-one-seed-out oracle less that value. The oracle, per held-out seed, is the
  cell best on the mean over the other held-out seeds, read on that one, then averaged: the best a
  choice made from held-out data could do without being scored on its own noise;
- the paired difference from the one-seed grid's full choice on the same replay seed.

Means over replay seeds carry 95 % intervals from a bootstrap over the training seeds (the cluster:
replay seeds that drew the same training seed share its noise, so they are not independent). Beside
them, on the search's own seed: the hypervolume of the finished trials' (accuracy, GAN-test) front
above chance (1/K, 1/K) as a share of the grid's, and the share of the epochs spent, by 25 % of the
budget, on cells whose held-out mean is below 0.5.
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
from sweep.bench.replay.table import Table, read_table
from trainer import keys
from trainer.config import ConfigError
from trainer.stats import Interval, seeds_interval

METHODS = ("grid", "grid+asha", "random+asha", "tpe+asha", "tpe+asha warm")
DEFAULT = "tpe+asha"  # the sweep's default search, judged by the goal
FRACTIONS = (0.25, 0.5, 1.0)  # budget fractions of the grid's epochs the table reports
CONCURRENCY = 4  # trials training at once (a sweep's max_concurrent_trials)
STARTUP_TRIALS = 10  # TPE's random startup trials in the replay's sweep config (the sweep's default)


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
    heldout: tuple[int, ...] = ()  # the training seeds it never saw, on which its choice is scored

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
    from sweep.config_files import load_sweep_config

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
    from sweep.engine.tuner import CONTINUE, FINISHED, STOP

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
    rng.shuffle(cells)  # as sweep.engine.tuner.search_setup shuffles a grid run under ASHA
    queue = iter(cells)

    def propose(tid: str) -> Any:
        cell = next(queue, None)
        return "FINISHED" if cell is None else {"loss.lam": cell[0], "loss.mu": cell[1]}  # Tune's FINISHED

    return propose


def chance(table: Table) -> tuple[float, float]:
    """The hypervolume's reference: chance on both axes, (1/K, 1/K)."""
    return chance_reference(int(table.meta["classes"]))


def replay(table: Table, method: str | Method, replay_seed: int, budget: int, reserve: int = 1) -> Search:
    """One search of ``method`` at ``replay_seed`` with ``budget`` trial-epochs; of the replay seed's
    shuffled training seeds the first ``reserve`` are the search's and the rest are held out."""
    import optuna

    from sweep import search
    from sweep.engine import tuner
    from sweep import warmstart

    spec = as_method(method)
    method = spec.kind
    rng = random.Random(replay_seed)
    order = rng.sample(table.seeds, len(table.seeds))  # the search's seeds first, then the held-out ones
    train_seed = order[0]
    np.random.seed(replay_seed)  # ASHA draws its bracket with NumPy's global generator
    out = Search(spec.label, replay_seed, train_seed, heldout=tuple(order[reserve:]))
    cfg = sweep_config(table, method, budget, replay_seed, spec.sets)
    scheduler = None
    if method != "grid":
        scheduler = tuner.scheduler(cfg)
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
    searcher = search.searcher(cfg, storage)
    return drive(table, train_seed, searcher.suggest, cfg.objective, searcher, scheduler,
                 reference=chance(table), out=out)


def replay_source(table: Table, sampler_seed: int, train_seed: int, budget: int, sets: tuple[str, ...] = ()) -> list:
    """The ended trials of a cold TPE + ASHA search (with ``sets``), as warm start reads an earlier sweep's."""
    import optuna

    from sweep import search
    from sweep.engine import tuner
    from sweep.warmstart import WarmTrial

    cfg = sweep_config(table, "tpe+asha", budget, sampler_seed, sets)
    scheduler = tuner.scheduler(cfg)
    scheduler.set_search_properties(keys.OBJECTIVE, "max")
    searcher = search.searcher(cfg, optuna.storages.InMemoryStorage())
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


def final_value(table: Table, cell: tuple[float, float], seed: int, objective_cfg: Any) -> float:
    """A cell's final objective on one training seed; a cell that diverged or failed there scores the
    objective's worst value, as its trial would."""
    if table.cells[cell][seed]["status"] != keys.Status.FINISHED:
        return worst_value(objective_cfg)
    return float(objective_value(objective_cfg, table.metrics(*cell, seed, table.epochs)))


def heldout_mean(table: Table, cell: tuple[float, float], seeds: Sequence[int], objective_cfg: Any) -> float:
    """A cell's mean final objective over ``seeds`` (NaN for none)."""
    if not seeds:
        return math.nan
    return math.fsum(final_value(table, cell, s, objective_cfg) for s in seeds) / len(seeds)


def oracle(table: Table, seeds: Sequence[int], objective_cfg: Any) -> float:
    """The leave-one-seed-out oracle over ``seeds``: for each, the cell best on the mean over the
    others, read on it; averaged (NaN with fewer than two seeds)."""
    if len(seeds) < 2:
        return math.nan
    values = []
    for h in seeds:
        rest = [s for s in seeds if s != h]
        cell = max(table.cells, key=lambda c: heldout_mean(table, c, rest, objective_cfg))
        values.append(final_value(table, cell, h, objective_cfg))
    return math.fsum(values) / len(values)


BOOTSTRAP_DRAWS = 2000


def cluster_bootstrap(values: Sequence[float], clusters: Sequence[int], draws: int = BOOTSTRAP_DRAWS,
                      seed: int = 0) -> Interval:
    """The mean of ``values`` with a 95 % percentile interval from resampling whole ``clusters``
    (the training seed each value's search saw) with replacement. One cluster: no spread to measure
    between them, so the interval is unbounded."""
    x = np.asarray(values, float)
    mean = float(x.mean()) if len(x) else math.nan
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(clusters):
        groups.setdefault(c, []).append(i)
    if len(groups) < 2:
        return Interval(mean, -math.inf, math.inf)
    members = list(groups.values())
    sums = np.array([x[m].sum() for m in members])
    counts = np.array([len(m) for m in members])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(members), size=(draws, len(members)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return Interval(mean, min(float(lo), mean), max(float(hi), mean))


@dataclass
class Report:
    """Every search of every method, scored on its replay seed's held-out training seeds."""

    table: Table
    searches: dict[str, list[Search]]
    truth: dict[int, dict[str, Any]]  # per training seed: the grid's best cell, objective and front
    grid_epochs: int
    seconds: float
    _oracles: dict[tuple[int, ...], float] = field(default_factory=dict, repr=False)

    def objective_cfg(self) -> Any:
        return sweep_config(self.table, DEFAULT, self.grid_epochs, 0).objective

    def value(self, s: Search, fraction: float) -> float:
        """The held-out value of ``s``'s choice once ``fraction`` of the grid's epochs were spent."""
        cell = s.incumbent(fraction * self.grid_epochs)
        if cell is None:
            return worst_value(self.objective_cfg())
        return heldout_mean(self.table, cell, s.heldout, self.objective_cfg())

    def oracle(self, s: Search) -> float:
        key = tuple(sorted(s.heldout))
        if key not in self._oracles:
            self._oracles[key] = oracle(self.table, key, self.objective_cfg())
        return self._oracles[key]

    def regret(self, s: Search, fraction: float) -> float:
        return self.oracle(s) - self.value(s, fraction)

    def paired(self, method: str, fraction: float, baseline: str = "grid", at: float = 1.0) -> list[float]:
        """Per replay seed: ``method``'s held-out value at ``fraction`` less ``baseline``'s at ``at``
        (the same replay seed, so the same held-out seeds)."""
        base = {s.replay_seed: s for s in self.searches[baseline]}
        return [self.value(s, fraction) - self.value(base[s.replay_seed], at) for s in self.searches[method]]

    def bad_share(self, s: Search, fraction: float, below: float = 0.5) -> float:
        """Share of the epochs spent by ``fraction`` of the budget on cells whose held-out mean is
        below ``below`` (the process: does the search learn where not to go)."""
        limit, spent, bad = fraction * self.grid_epochs, 0, 0
        cfg = self.objective_cfg()
        for t in s.trials:  # the trials that ended by then, with the epochs each trained
            if t["spent"] <= limit:
                spent += t["epoch"]
                bad += t["epoch"] * (heldout_mean(self.table, t["cell"], s.heldout, cfg) < below)
        return bad / spent if spent else math.nan


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


def run_all(table: Table, seeds: int, methods: Sequence[str | Method] = METHODS, seed_base: int = 0,
            reserve: int = 1) -> Report:
    """``seeds`` searches of each method, at replay seeds ``seed_base`` … ``seed_base + seeds - 1``,
    with the grid's cost as budget; ``reserve``: training seeds per replay seed kept for the search
    (the rest are held out)."""
    if not 1 <= reserve < len(table.seeds):
        raise ConfigError(f"replay: {reserve} training seed(s) for the search leave none of the table's "
                          f"{len(table.seeds)} to hold out")
    start = time.perf_counter()
    check_methods(table, methods)
    grid_epochs = grid_epochs_of(table)
    objective_cfg = sweep_config(table, DEFAULT, grid_epochs, 0).objective
    truth = {s: grid_truth(table, s, objective_cfg) for s in table.seeds}
    searches = {
        as_method(m).label: [replay(table, m, r, grid_epochs, reserve) for r in range(seed_base, seed_base + seeds)]
        for m in methods
    }
    return Report(table, searches, truth, grid_epochs, time.perf_counter() - start)


def summary_rows(report: Report) -> list[dict[str, Any]]:
    """One row per method, each a mean over its replay seeds with a cluster-bootstrap interval: the
    held-out regret and the paired difference from the one-seed grid's full choice at each budget
    fraction, the hypervolume share of the grid's on the search's own seed, and the share of
    epochs on cells whose held-out mean is below 0.5 by 25 % of the budget."""
    rows = []
    for method, runs in report.searches.items():
        clusters = [s.train_seed for s in runs]
        row: dict[str, Any] = {"method": method, "seeds": len(runs)}
        for f in FRACTIONS:
            row[f"regret@{f:g}"] = cluster_bootstrap([report.regret(s, f) for s in runs], clusters)
            if "grid" in report.searches:
                row[f"vs_grid@{f:g}"] = cluster_bootstrap(report.paired(method, f), clusters)
            shares = [s.at(f * report.grid_epochs)[1] / report.truth[s.train_seed]["hv"] for s in runs]
            row[f"hv@{f:g}"] = cluster_bootstrap(shares, clusters)
        bad = [report.bad_share(s, 0.25) for s in runs]
        kept = [(b, c) for b, c in zip(bad, clusters) if math.isfinite(b)]
        row["bad@0.25"] = cluster_bootstrap(*zip(*kept)) if kept else Interval(math.nan, math.nan, math.nan)
        row["idle"] = sum(s.idle for s in runs)
        rows.append(row)
    return rows


def separable(iv: Interval) -> str:
    """A paired difference's verdict: its 95 % interval excludes 0, or not."""
    if not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
        return "not separable"
    return "separable" if iv.lo > 0 or iv.hi < 0 else "not separable"


def identity_note(report: Report, fraction: float = 0.25) -> str | None:
    """TPE's first ``startup_trials`` proposals are random draws seeded like random's: how often
    their incumbents coincide at ``fraction`` of the budget (a difference there is not a sampler's)."""
    if "tpe+asha" not in report.searches or "random+asha" not in report.searches:
        return None
    rand = {s.replay_seed: s for s in report.searches["random+asha"]}
    same = sum(s.incumbent(fraction * report.grid_epochs) == rand[s.replay_seed].incumbent(fraction * report.grid_epochs)
               for s in report.searches["tpe+asha"] if s.replay_seed in rand)
    n = len(report.searches["tpe+asha"])
    return (f"TPE + ASHA proposes its first {STARTUP_TRIALS} trials as random draws with the same sampler seed as "
            f"random + ASHA, so at {fraction:.0%} of the budget their incumbents coincide in {same} of {n} replay "
            "seeds: a difference there is not TPE's doing.")


def markdown(report: Report) -> str:
    """The summary table in Markdown, held-out scores first."""
    rows = summary_rows(report)
    pct = [f"{f:.0%}" for f in FRACTIONS]
    head = ("| method | held-out regret @" + " | @".join(pct) + " | − grid's full choice (paired) @"
            + " | @".join(pct) + " | HV / grid's @50 % | epochs on cells < 0.5 @25 % |")
    lines = [head, "|" + " --- |" * (2 + 2 * len(FRACTIONS) + 1)]
    for r in rows:
        diffs = [f"{r[f'vs_grid@{f:g}']} {separable(r[f'vs_grid@{f:g}'])}" if f"vs_grid@{f:g}" in r else "-"
                 for f in FRACTIONS]
        bad = r["bad@0.25"]
        lines.append(f"| {r['method']} | " + " | ".join(str(r[f"regret@{f:g}"]) for f in FRACTIONS) + " | "
                     + " | ".join(diffs) + f" | {r['hv@0.5']} | {bad} |")
    note = identity_note(report)
    n = len(next(iter(report.searches.values())))
    seeds = sorted({s.train_seed for runs in report.searches.values() for s in runs})
    held = len(next(iter(report.searches.values()))[0].heldout)
    lines += ["", f"{n} replay seeds per method; held out: {held} training seeds per replay seed; intervals: 95 %, "
              f"bootstrap over the {len(seeds)} training seeds the searches saw ({BOOTSTRAP_DRAWS} draws). Regret: "
              "the leave-one-seed-out oracle on the held-out seeds less the choice's held-out mean."]
    if note:
        lines.append(note)
    return "\n".join(lines)


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
    """``python -m sweep.bench.replay run``: replay every method, write table, CSV and picture.
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
