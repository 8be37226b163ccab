"""The replay benchmark on a tiny table of curves: the live sweep's searcher, budget and ASHA
replayed against known curves, fast."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweep.bench.replay import searches as bench
from sweep.bench.replay.table import Table, read_table, write_table
from trainer import keys

LAMS = [1e-6, 1e-4, 1e-2]
MUS = [1e-5, 1e-3]
EPOCHS, EVERY = 4, 2


def _tiny_table() -> Table:
    """Accuracy and GAN-test rise with the epoch; the best cell is (1e-4, 1e-3) on every seed; a
    slow starter (1e-6, 1e-3) ends second; (1e-2, 1e-3) diverges at epoch 2."""
    rows = []
    for seed in (0, 1):
        for i, lam in enumerate(LAMS):
            for j, mu in enumerate(MUS):
                quality = {(1, 1): 0.9, (0, 1): 0.8}.get((i, j), 0.5 + 0.05 * (i + j) + 0.01 * seed)
                slow = (i, j) == (0, 1)
                acc = [quality * (0.3 if slow and e < 3 else 0.7 + 0.1 * e) / 1.1 for e in range(1, EPOCHS + 1)]
                gan = {e: quality * (0.2 if slow and e < 3 else 0.6 + 0.1 * e) / 1.0 for e in (2, 4)}
                diverged = (i, j) == (2, 1)
                rows.append({"lam": lam, "mu": mu, "seed": seed, "status": "diverged" if diverged else "finished",
                             "acc": acc[:1] if diverged else acc, "gan": {} if diverged else gan})
    meta = {"command": "test", "accuracy": keys.VAL_ACC, "samples": 256, "classes": 10, "val_images": 144}
    return Table.from_rows(rows, EPOCHS, EVERY, meta)


def test_table_reports_what_the_trainer_did(tmp_path):
    table = _tiny_table()
    write_table(table, tmp_path / "t.json.gz")
    table = read_table(tmp_path / "t.json.gz")
    m = table.metrics(1e-4, 1e-3, 0, 2)
    assert m[keys.STATUS] == "running" and keys.GAN_TEST in m and m[keys.EPOCH] == 2
    assert keys.GAN_TEST not in table.metrics(1e-4, 1e-3, 0, 1)
    assert table.metrics(1e-4, 1e-3, 0, 4)[keys.STATUS] == "finished"
    assert table.metrics(1e-2, 1e-3, 0, 2)[keys.STATUS] == "diverged"
    assert table.last_epoch(1e-2, 1e-3, 0) == 2


def test_nearest_cell_in_log_space():
    table = _tiny_table()
    assert bench.nearest(table, {"loss.lam": 2e-5, "loss.mu": 5e-4}) == (1e-4, 1e-3)  # log10: -4.7 -> -4
    assert bench.nearest(table, {"loss.lam": 5e-6, "loss.mu": 2e-5}) == (1e-6, 1e-5)


def test_grid_replay_runs_every_cell_and_finds_the_best():
    table = _tiny_table()
    grid_epochs = len(LAMS) * len(MUS) * EPOCHS
    run = bench.replay(table, "grid", 0, grid_epochs)
    assert len(run.trials) == 6 and run.spent[-1] == 5 * EPOCHS + 2  # the diverged cell stops at 2
    assert run.best[-1] == pytest.approx(bench.grid_truth(table, run.train_seed, bench.sweep_config(
        table, "grid", grid_epochs, 0).objective)["best"])
    assert run.at(run.spent[-1])[1] > 0


@pytest.mark.parametrize("method", ["grid+asha", "random+asha", "tpe+asha", "tpe+asha warm"])
def test_searches_stay_within_the_budget_and_asha_stops_trials(method):
    table = _tiny_table()
    budget = 3 * EPOCHS + 1
    run = bench.replay(table, method, 1, budget if method != "grid+asha" else 10**6)
    if method != "grid+asha":
        assert run.spent[-1] <= budget  # the real EpochBudget held
        assert run.spent[-1] + EPOCHS > budget or not run.idle  # it stopped when no trial fit
    assert not run.idle
    statuses = {t["status"] for t in run.trials}
    assert "running" in statuses or method != "grid+asha"  # ASHA stopped some at its rung (epoch 2)
    assert all(t["epoch"] in (EVERY, EPOCHS) or t["status"] == "diverged" for t in run.trials)


def test_stopped_trials_reach_the_study_as_pruned():
    import optuna

    from sweep import search
    from sweep.engine import tuner as sweep_tune

    table = _tiny_table()
    cfg = bench.sweep_config(table, "tpe+asha", 10 * EPOCHS, 3)
    scheduler = sweep_tune.scheduler(cfg)
    scheduler.set_search_properties(keys.OBJECTIVE, "max")
    searcher = search.searcher(cfg, optuna.storages.InMemoryStorage())
    run = bench.drive(table, 0, searcher.suggest, cfg.objective, searcher, scheduler)
    states = [t.state for t in searcher.study.trials]
    stopped = sum(t["status"] == "running" for t in run.trials)
    assert stopped and states.count(optuna.trial.TrialState.PRUNED) == stopped
    pruned = [t for t in searcher.study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all(set(t.intermediate_values) == {1, 2} for t in pruned)  # each epoch, keyed by epoch


def test_warm_start_source_enters_as_complete_and_pruned():
    import optuna

    table = _tiny_table()
    source = bench.replay_source(table, 5, 1, 6 * EPOCHS)
    assert {t.status for t in source} >= {"finished", "stopped"}
    cfg = bench.sweep_config(table, "tpe+asha warm", 10, 0)
    storage = optuna.storages.InMemoryStorage()
    from sweep import warmstart

    assert warmstart.seed_study(cfg, cfg.name, storage, source) == len(source)
    study = optuna.load_study(study_name=cfg.name, storage=storage)
    states = {t.state for t in study.trials}
    assert states == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}


def test_report_scores_against_the_grid(tmp_path):
    # The replicating methods retrain on one more seed: two seeds for the search, two held out
    # (a leave-one-seed-out oracle), the same two for every method of a replay seed.
    table = _three_seed_table(seeds=4)
    report = bench.run_all(table, seeds=3)
    rows = {r["method"]: r for r in bench.summary_rows(report)}
    assert set(rows) == {m.label for m in bench.METHODS}
    # The grid spends all its epochs and ends at its own full choice: difference 0, hypervolume share 1.
    assert rows["grid"]["vs_grid@1"].value == pytest.approx(0.0)
    assert rows["grid"]["hv@1"].value == pytest.approx(1.0)
    for r in rows.values():
        assert r["idle"] == 0 and r["hv@1"].value <= 1 + 1e-9
        assert r["regret@1"].lo <= r["regret@1"].value <= r["regret@1"].hi
    for runs in report.searches.values():  # every method of a replay seed is scored on the same held-out seeds
        assert all(len(s.heldout) == 2 and s.train_seed not in s.heldout for s in runs)
    by_seed = {}
    for runs in report.searches.values():
        for s in runs:
            by_seed.setdefault(s.replay_seed, set()).add(s.heldout)
    assert all(len(held) == 1 for held in by_seed.values())
    bench.plot(report, tmp_path / "p.png")
    bench.write_csv(report, tmp_path / "c.csv")
    assert (tmp_path / "p.png").stat().st_size > 0
    assert len((tmp_path / "c.csv").read_text().splitlines()) == 1 + len(bench.METHODS) * 3 * 5
    # A table of two seeds holds out one: no seed to choose an oracle on, so no regret (NaN), said so.
    two = bench.run_all(_tiny_table(), seeds=1, methods=["grid"])
    assert math.isnan(bench.summary_rows(two)[0]["regret@1"].value)
    text = bench.markdown(report)
    assert "tpe+asha" in text and "bootstrap over the" in text and "coincide in" in text
    assert "tpe+asha+rep − tpe+asha" in text and "Bonferroni over 9" in text and "Goal, tpe+asha " in text
    # The anytime curves and hypervolume are on the answering seed: a replicate's seed adds nothing.
    assert all(r["hv@1"].value <= 1 + 1e-9 for r in rows.values())


def _three_seed_table(seeds: int = 3) -> Table:
    """3 λ × 3 μ cells, 3 training seeds (or more: seed 3 has no deviation, seed 4 one of +0.03 at
    (1, 2)); the final accuracy and GAN-test of cell (i, j) on seed s is q = 0.5 + 0.1·i + 0.02·j +
    d[s][i][j]; cell (2, 2) diverges on seed 2."""
    d = {0: [[0, 0, 0], [0, 0.05, 0], [0, 0, 0.02]], 1: [[0, 0, 0], [0, 0, 0], [0, 0, -0.1]],
         2: [[0.01, 0, 0], [0, 0, 0], [0, 0, 0]], 3: [[0, 0, 0], [0, 0, 0], [0, 0, 0]],
         4: [[0, 0, 0], [0, 0, 0.03], [0, 0, 0]]}
    rows = []
    for seed in range(seeds):
        for i, lam in enumerate(LAMS):
            for j, mu in enumerate([1e-5, 1e-4, 1e-3]):
                q = 0.5 + 0.1 * i + 0.02 * j + d[seed][i][j]
                dead = (i, j) == (2, 2) and seed == 2
                rows.append({"lam": lam, "mu": mu, "seed": seed, "status": "diverged" if dead else "finished",
                             "acc": [q] if dead else [q] * EPOCHS, "gan": {} if dead else {2: q, 4: q}})
    meta = {"command": "test", "accuracy": keys.VAL_ACC, "samples": 256, "classes": 10, "val_images": 144}
    return Table.from_rows(rows, EPOCHS, EVERY, meta)


def test_heldout_value_oracle_and_regret_against_a_hand_computation():
    table = _three_seed_table()
    cfg = bench.sweep_config(table, "tpe+asha", 100, 0).objective
    q = lambda s, i, j: 0.5 + 0.1 * i + 0.02 * j + {0: {(1, 1): 0.05, (2, 2): 0.02}, 1: {(2, 2): -0.1},  # noqa: E731
                                                     2: {(0, 0): 0.01}}[s].get((i, j), 0.0)
    cell = lambda i, j: (LAMS[i], [1e-5, 1e-4, 1e-3][j])  # noqa: E731
    # The weighted objective of equal accuracy and GAN-test is that number; a diverged seed scores 0.
    assert bench.final_value(table, cell(1, 1), 0, cfg) == pytest.approx(q(0, 1, 1))
    assert bench.final_value(table, cell(2, 2), 2, cfg) == 0.0
    assert bench.heldout_mean(table, cell(2, 2), [1, 2], cfg) == pytest.approx((q(1, 2, 2) + 0.0) / 2)
    # Leave-one-seed-out over held-out seeds (1, 2): choose on seed 2, read on 1; choose on 1, read on 2.
    best_on_2 = cell(2, 1)  # (2, 2) diverged on seed 2; next best 0.72
    best_on_1 = cell(2, 1)  # (2, 2) is 0.64 on seed 1
    by_hand = (q(1, 2, 1) + q(2, 2, 1)) / 2
    assert bench.oracle(table, [1, 2], cfg) == pytest.approx(by_hand) and best_on_1 == best_on_2
    # A search that saw seed 0 and chose (2, 2) there (0.76, best on seed 0): held out, (0.64 + 0) / 2.
    search = bench.Search("m", 0, 0, trials=[{"cell": cell(2, 2), "status": "finished", "epoch": EPOCHS,
                                                "objective": q(0, 2, 2), "spent": 4}], heldout=(1, 2))
    report = bench.Report(table, {"m": [search]}, {}, grid_epochs=36, seconds=0.0)
    assert report.value(search, 1.0) == pytest.approx(q(1, 2, 2) / 2)
    assert report.regret(search, 1.0) == pytest.approx(by_hand - q(1, 2, 2) / 2)
    assert report.value(search, 0.1) == 0.0  # 3.6 epochs: nothing chosen yet, the worst value


def test_cluster_bootstrap_against_a_hand_computation():
    # Clusters A = (1, 1) and B = (3): a resample of two clusters is AA, AB, BA or BB, with means
    # 1, 5/3, 5/3, 3: the 2.5 and 97.5 percentiles of that distribution are 1 and 3.
    iv = bench.cluster_bootstrap([1.0, 1.0, 3.0], [7, 7, 9], draws=4000)
    assert iv.value == pytest.approx(5 / 3) and (iv.lo, iv.hi) == (1.0, 3.0)
    # Replay seeds that drew the same training seed are one cluster: with one cluster there is no
    # spread between clusters to measure, however many values.
    one = bench.cluster_bootstrap([0.1, 0.2, 0.3], [4, 4, 4])
    assert one.value == pytest.approx(0.2) and (one.lo, one.hi) == (-math.inf, math.inf)
    # Coverage: cluster means normal around 0, eight clusters of five correlated values each.
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(300):
        effects = rng.normal(0, 1, 8)
        values = np.repeat(effects, 5) + rng.normal(0, 0.1, 40)
        iv = bench.cluster_bootstrap(values, np.repeat(np.arange(8), 5), draws=500)
        hits += iv.lo <= 0 <= iv.hi
    assert hits / 300 >= 0.85  # percentile intervals of 8 clusters undercover a little; far above an iid bootstrap's


def test_a_failed_cell_ends_its_trial_as_failed():
    import optuna

    from sweep import search
    from sweep.engine import tuner as sweep_tune

    table = _tiny_table()
    for seed in (0, 1):
        table.cells[(1e-4, 1e-5)][seed] = {"status": "failed", "acc": [0.5], "gan": {}}
    assert table.metrics(1e-4, 1e-5, 0, 2)[keys.STATUS] == "failed"
    cfg = bench.sweep_config(table, "tpe+asha", 10 * EPOCHS, 0)
    scheduler = sweep_tune.scheduler(cfg)
    scheduler.set_search_properties(keys.OBJECTIVE, "max")
    searcher = search.searcher(cfg, optuna.storages.InMemoryStorage())
    asked = []

    def propose(tid: str):  # one trial, at the failing cell
        if asked:
            return "FINISHED"
        asked.append(searcher.suggest(tid))
        return {"loss.lam": 1e-4, "loss.mu": 1e-5}

    run = bench.drive(table, 0, propose, cfg.objective, searcher, scheduler)
    assert [t["status"] for t in run.trials] == ["failed"] and run.spent[-1] == 2
    # The ledger counts the epoch reported; the epoch that raised reported nothing.
    assert searcher.budget.spent == 1 and not searcher.budget.running
    assert [t.state for t in searcher.study.trials] == [optuna.trial.TrialState.FAIL]


def test_the_shipped_table_is_whole_and_says_how_it_was_recorded():
    from sweep.bench.replay.__main__ import TABLE

    table = read_table(TABLE)
    assert table.meta["command"].startswith("python -m sweep.bench.replay record")
    assert "--seeds 0 1 2 3 4 5 6 7" in table.meta["command"]
    assert len(table.lams) == len(table.mus) == 6 and table.seeds == list(range(8))
    assert all(set(by_seed) == set(range(8)) for by_seed in table.cells.values())  # every cell on every seed
    cfg = bench.sweep_config(table, "tpe+asha", 216, 0).objective
    for seed in table.seeds:
        truth = bench.grid_truth(table, seed, cfg)
        assert 0 < truth["best"] <= 1 and truth["hv"] > 0


def test_run_takes_a_seed_base_and_overrides_and_refuses_a_bad_one(tmp_path, capsys):
    from sweep.engine import tuner as sweep_tune
    from sweep.bench.replay.__main__ import main

    table = _three_seed_table(seeds=4)  # the replicating methods keep two seeds and hold out two
    write_table(table, tmp_path / "t.json.gz")
    cfg = bench.sweep_config(table, "tpe+asha", 24, 0, ("scheduler.reduction_factor=2", "search.startup_trials=4"))
    assert sweep_tune.scheduler(cfg)._reduction_factor == 2 and cfg.search.startup_trials == 4
    out = tmp_path / "out"
    args = ["run", "--table", str(tmp_path / "t.json.gz"), "--seeds", "2", "--out", str(out)]
    assert main([*args, "--seed-base", "7", "--set", "scheduler.reduction_factor=2"]) == 0
    rows = (out / "replay.csv").read_text().splitlines()[1:]
    assert {int(r.split(",")[1]) for r in rows} == {7, 8}
    assert "scheduler.reduction_factor=2" in (out / "replay.md").read_text()
    bad = tmp_path / "bad"
    assert main(["run", "--table", str(tmp_path / "t.json.gz"), "--out", str(bad), "--set", "scheduler.reduction_factor=1"]) == 2
    assert "reduction_factor" in capsys.readouterr().err and not bad.exists()  # refused before writing
    assert main(["run", "--table", str(tmp_path / "t.json.gz"), "--out", str(bad), "--seeds", "0"]) == 2


def test_pick_chooses_on_tuning_seeds_and_reports_on_fresh_ones():
    from sweep.bench.replay import pick
    from trainer.config import ConfigError

    table = _three_seed_table(seeds=4)  # the default replicates on one more seed: two kept, two held out
    default = pick.current_default(table)
    rival = bench.Method("random grace=2 rf=2", "random+asha", pick.asha_sets(2, 2))
    result = pick.pick(table, (10, 3), (20, 3), methods=[default, rival])
    rows = bench.summary_rows(result.tuning)

    def rule(r):  # the documented order: the process condition met, then the lower held-out regret
        return r["bad@0.25"].value <= 0.10, -r["regret@1"].value, -r["regret@0.5"].value  # with all epochs, then half

    assert result.picked.label == max(rows, key=rule)["method"]
    assert {s.replay_seed for runs in result.tuning.searches.values() for s in runs} == {10, 11, 12}
    assert {s.replay_seed for runs in result.fresh.searches.values() for s in runs} == {20, 21, 22}
    fresh = set(result.fresh.searches)
    assert {"grid", default.label, "random"} <= fresh and result.picked.label in fresh
    with pytest.raises(ConfigError, match="overlap"):
        pick.pick(table, (10, 3), (12, 3), methods=[default])
    # tpe, random and the grid, each without replication and with 2 x 2 x 2 x 2 settings of it
    assert len(pick.candidates(table)) == 3 * (1 + 2 * 2 * 2 * 2)
    assert any(pick.same_setting(c, default) for c in pick.candidates(table))
    # The current default is the optuna preset's: TPE replicating with search.replicate's defaults.
    assert default.sets == pick.replicate_sets(3, 1, 0.5, "lower")
    replicating = bench.Method("tpe rep top_k=1 seeds=1 share=0.25 mean", "tpe+asha", pick.replicate_sets(1, 1, 0.25, "mean"))
    methods, _, _ = pick.fresh_methods(table, replicating)
    assert [m.label for m in methods] == ["grid", replicating.label, default.label, "random", "tpe (no replication)"]
    other = bench.Method("random rep top_k=1 seeds=1 share=0.25 mean", "random+asha", pick.replicate_sets(1, 1, 0.25, "mean"))
    methods, _, _ = pick.fresh_methods(table, other)
    assert [m.label for m in methods] == ["grid", other.label, default.label, "random"]  # random alone is there


def test_verdict_needs_a_separable_paired_difference():
    from sweep.bench.replay import pick

    table = _three_seed_table()
    cell = lambda i, j: (LAMS[i], [1e-5, 1e-4, 1e-3][j])  # noqa: E731

    def search(label, replay_seed, seen, choice):
        held = tuple(s for s in (0, 1, 2) if s != seen)
        return bench.Search(label, replay_seed, seen, heldout=held, trials=[
            {"cell": cell(*choice), "status": "finished", "epoch": EPOCHS, "objective": 1.0, "spent": 4}])

    def report(picked_choice, default_choice):
        runs = {"p": [search("p", r, r % 3, picked_choice) for r in range(6)],
                "d": [search("d", r, r % 3, default_choice) for r in range(6)]}
        return bench.Report(table, runs, {}, grid_epochs=36, seconds=0.0)

    # (2, 1) is 0.1 above (1, 1) on every seed: every paired difference, every bootstrap draw above 0.
    assert "beats" in pick.verdict(report((2, 1), (1, 1)), "p", "d")
    assert "worse" in pick.verdict(report((1, 1), (2, 1)), "p", "d")
    assert "Not separable" in pick.verdict(report((1, 1), (1, 1)), "p", "d")
    assert "is the current default" in pick.verdict(report((1, 1), (1, 1)), "d", "d")


def test_the_goals_parts_and_the_verdicts_goal_clause(monkeypatch):
    from sweep.bench.replay import pick
    from trainer.stats import Interval

    def readings(excess, full, half, bad):
        return {"excess": Interval(excess, excess - 0.01, excess + 0.01), "vs_grid@1": Interval(*full),
                "vs_grid@0.5": Interval(*half), "bad@0.25": Interval(bad, bad - 0.01, bad + 0.01)}

    # Regret at most half the grid's (excess ≤ 0) with the paired interval above 0; with half the
    # epochs an interval that reaches 0 or above; at most 10 % of epochs on bad cells.
    assert bench.goal_parts(readings(-0.01, (0.02, 0.01, 0.03), (0.0, -0.01, 0.01), 0.05)) == (True, True, True)
    assert bench.goal_parts(readings(0.001, (0.02, 0.01, 0.03), (-0.02, -0.03, -0.01), 0.11)) == (False, False, False)
    assert bench.goal_parts(readings(-0.01, (0.01, -0.001, 0.02), (0.0, -0.01, 0.01), 0.10))[0] is False
    # Not separable, but the picked setting meets the goal where the default does not: it replaces it.
    table = _three_seed_table()
    runs = {m: [bench.Search(m, r, r % 3, heldout=tuple(x for x in (0, 1, 2) if x != r % 3), trials=[
        {"cell": CELL(1, 1), "status": "finished", "epoch": EPOCHS, "objective": 1.0, "spent": 4}]) for r in range(6)]
        for m in ("p", "d", "grid")}
    report = bench.Report(table, runs, {}, grid_epochs=36, seconds=0.0)
    met, unmet = readings(-0.01, (0.02, 0.01, 0.03), (0.0, -0.01, 0.01), 0.05), readings(0.01, (0, 0, 0), (0, 0, 0), 0.2)
    monkeypatch.setattr(pick, "goal_rows", lambda rep, m: met if m == "p" else unmet)
    assert "meets the goal there and the default does not" in pick.verdict(report, "p", "d")
    monkeypatch.setattr(pick, "goal_rows", lambda rep, m: met)
    assert "Not separable" in pick.verdict(report, "p", "d") and "default stays" in pick.verdict(report, "p", "d")


def test_the_command_lines_seed_sets_are_the_protocols(monkeypatch):
    from sweep.bench.replay import pick
    from sweep.bench.replay.__main__ import main

    parsed = {}

    def fake(table, out, tuning, fresh):  # what main hands the protocol when no seeds are given
        parsed.update(tuning=tuning, fresh=fresh)
        return 0

    monkeypatch.setattr(pick, "main", fake)
    assert main(["pick"]) == 0
    assert parsed == {"tuning": pick.TUNING, "fresh": pick.FRESH}


def test_pick_refuses_overlapping_seeds_from_the_command_line(tmp_path, capsys):
    from sweep.bench.replay.__main__ import main

    write_table(_tiny_table(), tmp_path / "t.json.gz")
    out = tmp_path / "out"
    argv = ["pick", "--table", str(tmp_path / "t.json.gz"), "--out", str(out), "--tuning-seeds", "0", "5"]
    assert main([*argv, "--fresh-seeds", "4", "5"]) == 2
    assert "overlap" in capsys.readouterr().err and not out.exists()


# --- replication in the replay ------------------------------------------------------------------

CELL = lambda i, j: (LAMS[i], [1e-5, 1e-4, 1e-3][j])  # noqa: E731  (the three-seed table's cells)


@pytest.mark.parametrize("rule", ["mean", "lower"])
def test_a_replicating_search_answers_replicates_on_its_next_seed_and_chooses_by_the_live_rule(rule):
    import optuna

    from sweep import search
    from sweep.engine import tuner as sweep_tune
    from sweep.trial import POINT_SEED

    table = _three_seed_table(seeds=4)
    sets = (f"search.replicate={{top_k: 2, seeds: 1, share: 0.5, choose: {rule}}}",)
    cfg = bench.sweep_config(table, "tpe+asha", 9 * EPOCHS, 5, sets)
    scheduler = sweep_tune.scheduler(cfg)
    scheduler.set_search_properties(keys.OBJECTIVE, "max")
    searcher = search.searcher(cfg, optuna.storages.InMemoryStorage())
    seeds = {0: 3, cfg.replicate_seeds()[0]: 1}  # the sweep's seed answers with seed 3, the replicates' with 1
    out = bench.Search("m", 5, 3, heldout=(0, 2), rule=rule)
    bench.drive(table, 3, searcher.suggest, cfg.objective, searcher, scheduler, out=out,
                answer=lambda c: (bench.nearest(table, c), seeds[c.get(POINT_SEED, 0)]))
    replicates = [t for t in out.trials if t["replicate"]]
    assert replicates and all(t["seed"] == 1 for t in replicates)
    assert all(t["seed"] == 3 for t in out.trials if not t["replicate"])
    assert len(out.cells) == out.spent[-1] <= 9 * EPOCHS
    # The replay's choice, computed after the fact from the trials, is the live searcher's own.
    assert out.incumbent(math.inf) == bench.nearest(table, searcher.incumbent().point)


def test_a_replicating_grid_replays_through_the_live_grid_searcher():
    table = _three_seed_table(seeds=4)
    method = bench.Method("grid+rep", "grid", ("search.replicate={top_k: 2, seeds: 1, share: 0.4}",))
    run = bench.replay(table, method, 3, 9 * EPOCHS, reserve=2)
    firsts = [t["cell"] for t in run.trials if not t["replicate"]]
    assert sorted(firsts) == sorted(table.cells)  # every cell once (FIFO: to the end)
    replicates = [t for t in run.trials if t["replicate"]]
    assert replicates and {t["seed"] for t in replicates} == {random_order(3, table)[1]}
    assert {t["seed"] for t in run.trials if not t["replicate"]} == {run.train_seed}
    assert run.heldout == tuple(random_order(3, table)[2:]) and run.rule == "lower"  # the default rule
    assert run.spent[-1] <= math.ceil(9 * EPOCHS / 0.6)  # the grid's ledger
    with pytest.raises(bench.ConfigError, match="reserve >= 2"):
        bench.replay(table, method, 3, 9 * EPOCHS, reserve=1)


def random_order(replay_seed: int, table: Table) -> list[int]:
    """The replay seed's order of the training seeds (as :func:`bench.replay` draws it)."""
    import random

    return random.Random(replay_seed).sample(table.seeds, len(table.seeds))


def _replicating_search(rule: str) -> bench.Search:
    """A search that saw seeds 0 and 3 of the three-seed table: (1, 1) on seed 0 (0.67) and seed 3
    (0.62), and (2, 2) on seed 0 only (0.76); it holds out seeds 1 and 2."""
    q = {((1, 1), 0): 0.67, ((2, 2), 0): 0.76, ((1, 1), 3): 0.62}
    trials = []
    for n, ((ij, seed), value) in enumerate(q.items()):
        trials.append({"cell": CELL(*ij), "seed": seed, "point": ij, "replicate": seed == 3, "epoch": EPOCHS,
                       "objective": value, "status": "finished", "spent": 4 * (n + 1)})
    return bench.Search("m", 0, 0, trials=trials, heldout=(1, 2), rule=rule)


def test_a_replicating_searchs_choice_and_regret_against_a_hand_computation():
    table = _three_seed_table(seeds=4)
    cfg = bench.sweep_config(table, "tpe+asha", 100, 0).objective
    assert bench.final_value(table, CELL(1, 1), 3, cfg) == pytest.approx(0.62)  # seed 3: no deviation
    mean, lower = _replicating_search("mean"), _replicating_search("lower")
    # By the mean: (2, 2), 0.76 on one seed, against (1, 1)'s (0.67 + 0.62) / 2 = 0.645.
    assert mean.incumbent(math.inf) == CELL(2, 2)
    # By the lower bound: the pooled variance is (1, 1)'s, s² = 2 · 0.025² / 1 = 0.00125 on 1 d.f.,
    # t = 12.706: (2, 2) 0.76 − 12.706 · 0.03536 = 0.311; (1, 1) 0.645 − 12.706 · 0.03536 / √2 = 0.327.
    assert lower.incumbent(math.inf) == CELL(1, 1)
    # Before the replicate ended (8 epochs) no point had two seeds: both rules are the mean.
    assert lower.incumbent(8) == CELL(2, 2)
    # Held out on seeds 1 and 2: (2, 2) is 0.64 and diverged (0); (1, 1) is 0.62 on both. The oracle
    # (leave one of the two out) is 0.72, as in the test above.
    grid = bench.Search("grid", 0, 0, heldout=(1, 2), trials=[
        {"cell": CELL(2, 2), "seed": 0, "status": "finished", "epoch": EPOCHS, "objective": 0.76, "spent": 36}])
    report = bench.Report(table, {"grid": [grid], "mean": [mean], "lower": [lower]}, {}, grid_epochs=36, seconds=0.0)
    assert report.regret(mean, 1.0) == pytest.approx(0.72 - 0.32)
    assert report.regret(lower, 1.0) == pytest.approx(0.72 - 0.62)
    # The goal's readings: regret − ½ · the grid's (0.40): 0.10 − 0.20 = −0.10, a ratio of 0.25, and
    # a held-out value 0.30 above the grid's choice.
    goal = bench.goal_rows(report, "lower")
    assert goal["excess"].value == pytest.approx(-0.10) and goal["ratio"].value == pytest.approx(0.25)
    assert goal["vs_grid@1"].value == pytest.approx(0.30)
    assert bench.goal_rows(report, "mean")["excess"].value == pytest.approx(0.40 - 0.20)


def test_epochs_on_bad_cells_after_a_quarter_of_the_budget_against_a_hand_computation():
    table = _three_seed_table(seeds=4)
    # Held out on seeds 1 and 2, (2, 2) has mean (0.64 + 0) / 2 = 0.32 < 0.5; every other cell is above.
    s = bench.Search("m", 0, 0, heldout=(1, 2), cells=[CELL(0, 0)] * 9 + [CELL(2, 2)] * 3 + [CELL(1, 1)] * 9)
    report = bench.Report(table, {"m": [s]}, {}, grid_epochs=36, seconds=0.0)
    assert report.bad_share(s, 0.25) == pytest.approx(3 / 12)  # epochs 10..21: 3 of 12 on (2, 2)
    assert report.bad_share(s, 0.0, until=0.25) == 0.0  # the first 9 epochs: none
    assert math.isnan(report.bad_share(s, 0.75))  # nothing trained after 27 epochs


def test_cluster_ratio_and_the_family_wise_interval_against_a_hand_computation():
    # Clusters A (1 / 2) and B (3 / 2): a resample is AA, AB, BA or BB, ratios 0.5, 1, 1, 1.5.
    iv = bench.cluster_ratio([1.0, 3.0], [2.0, 2.0], [7, 9], draws=4000)
    assert iv.value == pytest.approx(1.0) and (iv.lo, iv.hi) == (0.5, 1.5)
    assert math.isinf(bench.cluster_ratio([1.0], [2.0], [7]).lo)
    # A Bonferroni level for m comparisons widens the interval: the 1 − 0.05/9 percentiles lie
    # outside the 95 % ones on the same draws.
    values = np.random.default_rng(1).normal(size=80)
    clusters = np.repeat(np.arange(16), 5)
    wide = bench.cluster_bootstrap(values, clusters, draws=20_000, level=1 - 0.05 / 9)
    narrow = bench.cluster_bootstrap(values, clusters, draws=20_000)
    assert wide.lo < narrow.lo < narrow.hi < wide.hi and wide.value == narrow.value


def test_asha_that_spares_replicates_stops_the_others_as_asha_does():
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from sweep.engine import tuner as sweep_tune
    from sweep.bench.replay.spare import spare_replicates
    from sweep.points import POINT_SEED

    cfg = bench.sweep_config(_three_seed_table(), "tpe+asha", 100, 0, ("search.replicate={}",))  # grace 2, rf 3

    def _result(epoch: int, value: float) -> dict:
        return {keys.OBJECTIVE: value, keys.EPOCH: epoch, keys.STATUS: "running", "training_iteration": epoch}

    spare, plain = spare_replicates(cfg), sweep_tune.scheduler(cfg)
    for scheduler in (spare, plain):
        scheduler.set_search_properties(keys.OBJECTIVE, "max")
    trials = {name: SimpleNamespace(trial_id=name, config={"loss.lam": 1e-3, **extra})
              for name, extra in (("a", {}), ("b", {}), ("c", {}), ("r", {POINT_SEED: 10000}))}
    decisions = {}
    for scheduler, label in ((spare, "spare"), (plain, "plain")):
        for name, value in (("a", 0.9), ("b", 0.8), ("c", 0.1), ("r", 0.05)):  # at the rung, epoch 2
            scheduler.on_trial_add(None, trials[name])
            decisions[label, name] = scheduler.on_trial_result(None, trials[name], _result(2, value))
        decisions[label, "r@4"] = scheduler.on_trial_result(None, trials["r"], _result(4, 0.6))
    stop, go = TrialScheduler.STOP, TrialScheduler.CONTINUE
    # Trials that are not replicates: the same decisions (a first at the rung goes on; b and c fall
    # below the cutoff of the top third and stop).
    assert [decisions["spare", n] for n in "abc"] == [decisions["plain", n] for n in "abc"] == [go, stop, stop]
    assert decisions["plain", "r"] == stop and decisions["spare", "r"] == go  # the replicate: only plain ASHA cuts it
    assert decisions["spare", "r@4"] == stop  # at max_t it ends, as any trial
