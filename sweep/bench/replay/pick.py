"""Choose the default search settings by the replay, without scoring the choice on the seeds that chose it.

Protocol (``python -m sweep.bench.replay pick``): every candidate of :func:`candidates` (TPE + ASHA,
random + ASHA and the one-seed grid, each without replication and with every ``search.replicate``
setting of :data:`TOP_K` × :data:`SEEDS` × :data:`SHARES` × :data:`CHOOSE`, each through the live
sweep config) is replayed on the TUNING replay seeds; :func:`score` ranks them by held-out regret
and the best is picked. Picking the best of many candidates on the same seeds that score it
overrates it (a winner's curse across candidates), so the picked setting, the current default, the
grid, random + ASHA and the picked setting without replication are then replayed on FRESH replay
seeds, disjoint from the tuning ones, and only those figures are the result.

:func:`verdict` says whether the picked setting replaces the current default: on the fresh seeds the
paired difference of their held-out values (the same replay seeds, so the same held-out training
seeds) at 50 % or 100 % of the grid's epochs has an interval (bootstrap over training seeds, at
1 − 0.05/2 for the two readings) above 0 and neither is below 0; or, with neither separable, the
picked setting meets the goal on the fresh seeds (:func:`sweep.bench.replay.searches.goal_parts`)
and the default does not.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.bench.replay.searches import (
    DEFAULT,
    PROCESS_MAX,
    Method,
    Report,
    check_methods,
    cluster_bootstrap,
    goal_markdown,
    goal_parts,
    goal_rows,
    load,
    markdown,
    plot,
    reserve_for,
    run_all,
    summary_rows,
    write_csv,
)
from sweep.bench.replay.table import Table
from trainer.config import ConfigError

TUNING = (1000, 20)  # replay seeds that pick: first, how many
# Replay seeds that report the pick: first, how many. 2000-2039 reported the first run of this
# protocol, before its process condition (score) was added; they are spent (docs/results.md).
FRESH = (3000, 40)
# search.replicate settings tried. Seeds: at most 2, so that with the recorded table's 8 training
# seeds each replay seed keeps 1 + 2 for the searches and holds out 5.
TOP_K = (1, 3)
SEEDS = (1, 2)
SHARES = (0.25, 0.5)
CHOOSE = ("mean", "lower")
SEARCHES = (("tpe", "tpe+asha"), ("random", "random+asha"), ("grid", "grid"))  # label, replay kind


def asha_sets(grace: int, reduction: int) -> tuple[str, ...]:
    return (f"scheduler.grace_period={grace}", f"scheduler.reduction_factor={reduction}")


def replicate_sets(top_k: int, seeds: int, share: float, choose: str) -> tuple[str, ...]:
    return (f"search.replicate.top_k={top_k}", f"search.replicate.seeds={seeds}",
            f"search.replicate.share={share}", f"search.replicate.choose={choose}")


def candidates(table: Table) -> list[Method]:
    """Every setting tried: TPE + ASHA, random + ASHA and the grid (the replay's ASHA: grace one
    evaluation, reduction factor 3), each without replication and with every replication setting.
    The current default (TPE + ASHA without replication) is among them."""
    out = []
    for name, kind in SEARCHES:
        out.append(Method(name, kind))
        for k, n, share, rule in itertools.product(TOP_K, SEEDS, SHARES, CHOOSE):
            out.append(Method(f"{name} rep top_k={k} seeds={n} share={share} {rule}", kind,
                              replicate_sets(k, n, share, rule)))
    return out


def current_default(table: Table) -> Method:
    """The default search (the ``optuna`` preset's: TPE + ASHA replicating with ``search.replicate``'s
    defaults, the pick of 2026-12-07) as the replay runs it, spelled as a candidate. Before that pick
    it was TPE + ASHA without replication, candidate ``tpe``."""
    from sweep.config import ReplicateConfig

    rep = ReplicateConfig()
    sets = replicate_sets(rep.top_k, rep.seeds, rep.share, rep.choose)
    return Method(f"current default: tpe rep top_k={rep.top_k} seeds={rep.seeds} share={rep.share} {rep.choose}",
                  DEFAULT, sets)


def without_replication(method: Method) -> Method:
    """The same search with ``search.replicate`` left out."""
    sets = tuple(x for x in method.sets if not x.startswith("search.replicate"))
    return Method(method.label.split(" rep ")[0] + " (no replication)", method.kind, sets)


def score(row: dict[str, Any]) -> tuple[bool, float, float]:
    """How a candidate ranks on the tuning seeds: first those that meet the goal's process
    condition (at most :data:`PROCESS_MAX` of the epochs after 25 % on cells below 0.5), then the
    lower held-out regret with all of the grid's epochs, then with half of them."""
    return (row["bad@0.25"].value <= PROCESS_MAX, -row["regret@1"].value, -row["regret@0.5"].value)


def same_setting(a: Method, b: Method) -> bool:
    return a.kind == b.kind and set(a.sets) == set(b.sets)


@dataclass
class Pick:
    """The tuning replay, the picked candidate, and the fresh replay that reports it."""

    tuning: Report
    picked: Method
    fresh: Report
    default: Method
    random: Method
    verdict: str


def fresh_methods(table: Table, picked: Method) -> tuple[list[Method], Method, Method]:
    """What the fresh seeds replay: the one-seed grid, the picked setting, the current default,
    random + ASHA, and the picked search without replication where that differs from them all."""
    default = current_default(table)
    random = Method("random", "random+asha")
    grid = Method("grid", "grid")
    if same_setting(picked, default):
        picked = default
    methods = [grid, picked]
    for m in (default, random, without_replication(picked)):
        if not any(same_setting(m, x) for x in methods):
            methods.append(m)
    return methods, default, random


def verdict(report: Report, picked: str, default: str) -> str:
    """Whether ``picked`` beats ``default`` on the replay seeds of ``report`` (the fresh ones), in one
    sentence: by the paired difference of their held-out values at 50 % and 100 % of the budget."""
    if picked == default:
        return "The picked setting is the current default: the default stays."
    base = {s.replay_seed: s for s in report.searches[default]}
    readings = {}
    for f in (0.5, 1.0):
        runs = report.searches[picked]
        diffs = [report.value(s, f) - report.value(base[s.replay_seed], f) for s in runs]
        readings[f"held-out value @{f:.0%}"] = cluster_bootstrap(diffs, [s.train_seed for s in runs],
                                                                 draws=20_000, level=1 - 0.05 / 2)
    better = [k for k, iv in readings.items() if iv.lo > 0]
    worse = [k for k, iv in readings.items() if iv.hi < 0]
    shown = "; ".join(f"{k}: {iv}" for k, iv in readings.items())
    shown = f"picked − default, intervals at 1 − 0.05/2 over the two readings: {shown}"
    goal = {m: all(goal_parts(goal_rows(report, m))) for m in (picked, default)} if "grid" in report.searches else {}
    if better and not worse:
        return f"The picked setting beats the current default ({shown}): make it the default."
    if worse:
        return f"The picked setting is worse than the current default on the fresh seeds ({shown}): the default stays."
    if goal.get(picked) and not goal.get(default):
        return (f"Not separable from the current default on the fresh seeds ({shown}), but it meets the goal there "
                "and the default does not: make it the default.")
    return f"Not separable from the current default on the fresh seeds ({shown}): the default stays."


def pick(table: Table, tuning: tuple[int, int] = TUNING, fresh: tuple[int, int] = FRESH,
         methods: list[Method] | None = None) -> Pick:
    """Replay ``methods`` (default: :func:`candidates`) on the tuning seeds, pick by :func:`score`,
    and replay the pick beside the default and random + ASHA on the fresh seeds."""
    tune_seeds = set(range(tuning[0], tuning[0] + tuning[1]))
    fresh_seeds = set(range(fresh[0], fresh[0] + fresh[1]))
    if tune_seeds & fresh_seeds:
        raise ConfigError(f"replay pick: the fresh seeds {fresh[0]}..{fresh[0] + fresh[1] - 1} overlap the "
                          f"tuning seeds {tuning[0]}..{tuning[0] + tuning[1] - 1}; they must be disjoint")
    methods = methods or candidates(table)
    check_methods(table, methods)
    # One reserve for both seed sets and every candidate, so all are scored on as many held-out
    # seeds (a method's regret depends on how many the oracle is chosen from).
    reserve = reserve_for(table, methods)
    tuning_report = run_all(table, tuning[1], methods, tuning[0], reserve)
    rows = summary_rows(tuning_report)
    best = max(rows, key=score)
    picked = next(m for m in methods if m.label == best["method"])
    fresh_list, default, random = fresh_methods(table, picked)
    check_methods(table, fresh_list)
    fresh_report = run_all(table, fresh[1], fresh_list, fresh[0], reserve)
    chosen = fresh_list[1]  # the picked setting, labelled as the default where it is the default
    return Pick(tuning_report, chosen, fresh_report, default, random,
                verdict(fresh_report, chosen.label, default.label))


def tuning_markdown(report: Report) -> str:
    """The tuning seeds' table, one row per candidate in rank order (not a result: these seeds picked)."""
    rows = sorted(summary_rows(report), key=score, reverse=True)
    lines = ["| candidate | held-out regret @100 % | @50 % | @25 % | epochs on cells < 0.5 after 25 % |",
             "|" + " --- |" * 5]
    for r in rows:
        lines.append(f"| {r['method']} | {r['regret@1']} | {r['regret@0.5']} | {r['regret@0.25']} | {r['bad@0.25']} |")
    return "\n".join(lines)


def main(table_path: Path, out: Path, tuning: tuple[int, int] = TUNING, fresh: tuple[int, int] = FRESH) -> int:
    """``python -m sweep.bench.replay pick``: the protocol above; writes pick.md, fresh.csv and fresh.png."""
    table = load(table_path)
    result = pick(table, tuning, fresh)
    seconds = result.tuning.seconds + result.fresh.seconds
    n_tuned, n_fresh = len(result.tuning.searches), len(result.fresh.searches)
    text = "\n\n".join([
        f"Tuning seeds {tuning[0]}..{sum(tuning) - 1} ({n_tuned} candidates; these seeds picked, so their figures are no result):",
        tuning_markdown(result.tuning),
        f"Picked: {result.picked.label} ({' '.join(result.picked.sets)}).",
        f"Fresh seeds {fresh[0]}..{sum(fresh) - 1} (the result):",
        markdown(result.fresh),
        goal_markdown(result.fresh, result.picked.label),
        goal_markdown(result.fresh, result.default.label) if result.default.label != result.picked.label else "",
        result.verdict,
        f"{n_tuned} candidates x {tuning[1]} seeds and {n_fresh} methods x {fresh[1]} seeds in {seconds:.0f} s.",
    ])
    out.mkdir(parents=True, exist_ok=True)
    (out / "pick.md").write_text(text + "\n")
    write_csv(result.fresh, out / "fresh.csv")
    plot(result.fresh, out / "fresh.png")
    print(text)
    return 0
