"""The replay benchmark on a tiny table of curves: the live sweep's searcher, budget and ASHA
replayed against known curves, fast."""

from __future__ import annotations

import math

import pytest

from sweep.replay import bench
from sweep.replay.table import Table, read_table, write_table
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

    from sweep import tune as sweep_tune

    table = _tiny_table()
    cfg = bench.sweep_config(table, "tpe+asha", 10 * EPOCHS, 3)
    scheduler = sweep_tune._scheduler(cfg)
    scheduler.set_search_properties(keys.OBJECTIVE, "max")
    searcher = sweep_tune._optuna(cfg, optuna.storages.InMemoryStorage())
    run = bench.drive(table, 0, searcher.suggest, cfg.objective, searcher, scheduler)
    states = [t.state for t in searcher._ot_study.trials]
    stopped = sum(t["status"] == "running" for t in run.trials)
    assert stopped and states.count(optuna.trial.TrialState.PRUNED) == stopped
    pruned = [t for t in searcher._ot_study.trials if t.state == optuna.trial.TrialState.PRUNED]
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
    table = _tiny_table()
    report = bench.run_all(table, seeds=3)
    rows = {r["method"]: r for r in bench.summary_rows(report)}
    assert set(rows) == set(bench.METHODS)
    # The grid spends all its epochs and ends at its own best: gap 0, hypervolume share 1.
    assert rows["grid"]["gap@1"].value == pytest.approx(0.0)
    assert rows["grid"]["hv@1"].value == pytest.approx(1.0)
    assert rows["grid"]["heldout@1"].value == pytest.approx(0.0) and rows["grid"]["heldout_ns@1"] == 1.0
    for r in rows.values():
        assert 0 <= r["best_exact"] <= r["best_not_separable"] <= 1 and r["idle"] == 0
        assert r["hv@1"].value <= 1 + 1e-9
    bench.plot(report, tmp_path / "p.png")
    bench.write_csv(report, tmp_path / "c.csv")
    assert (tmp_path / "p.png").stat().st_size > 0
    assert len((tmp_path / "c.csv").read_text().splitlines()) == 1 + len(bench.METHODS) * 3 * 5
    assert "tpe+asha" in bench.markdown(report)


def test_heldout_scores_the_choice_on_the_other_seeds_against_a_hand_computation():
    from trainer.stats import wilson

    table = _tiny_table()
    for seed in (0, 1):  # (1e-6, 1e-5) ends at 0.88 on seed 0, near the best cell's 0.9
        row = table.cells[(1e-6, 1e-5)][seed]
        if seed == 0:
            row["acc"][-1], row["gan"][EPOCHS] = 0.88, 0.88
    cfg = bench.sweep_config(table, "tpe+asha", 100, 0).objective
    truth = {s: bench.grid_truth(table, s, cfg) for s in (0, 1)}
    assert truth[0]["cell"] == truth[1]["cell"] == (1e-4, 1e-3)

    def trial(cell, spent):
        return {"cell": cell, "status": "finished", "epoch": EPOCHS, "objective": 0.99, "spent": spent}

    # Seed 0 chose the slow starter (0.8 on seed 1) by epoch 5; seed 1 chose (1e-6, 1e-5) by epoch 10.
    s0 = bench.Search("m", 0, 0, trials=[trial((1e-6, 1e-3), 5)])
    s1 = bench.Search("m", 1, 1, trials=[trial((1e-6, 1e-5), 10)])
    report = bench.Report(table, {"m": [s0, s1]}, truth, grid_epochs=24, seconds=0.0)

    def by_hand(q: float) -> tuple[float, float]:  # weighted objective 0.5·acc + 0.5·GAN-test, Wilson parts
        a, g = wilson(round(q * 144), 144), wilson(round(q * 256), 256)
        return 0.5 * a.value + 0.5 * g.value, math.hypot(a.half_width / 2, g.half_width / 2)

    best, best_hw = by_hand(0.9)
    slow, slow_hw = by_hand(0.8)
    near, near_hw = by_hand(0.88)
    iv = bench.heldout(table, (1e-6, 1e-3), [1], cfg)
    assert iv.value == pytest.approx(slow) and iv.half_width == pytest.approx(slow_hw, rel=1e-6)
    assert slow + slow_hw < best - best_hw and near + near_hw > best - best_hw  # separable / not

    gaps, not_separable = report.heldout_gaps("m", 0.25)  # 6 epochs: seed 1 has chosen nothing yet
    assert gaps == pytest.approx([slow - best, 0.0 - best]) and not_separable == 0
    gaps, not_separable = report.heldout_gaps("m", 0.5)
    assert gaps == pytest.approx([slow - best, near - best]) and not_separable == 1
    row = bench.summary_rows(report)[0]
    d1, d2 = slow - best, near - best
    assert row["heldout@0.5"].value == pytest.approx((d1 + d2) / 2)
    assert row["heldout@0.5"].half_width == pytest.approx(12.706205 * abs(d1 - d2) / 2)  # t, 1 df
    assert row["heldout_ns@0.5"] == 0.5
    # The oracle (best on the mean over both seeds) is the grid's choice on both: gap 0, not separable.
    assert bench.oracle_cell(table, cfg) == (1e-4, 1e-3)
    assert report.oracle_gaps() == ([0.0, 0.0], 2)
    # A cell that diverged on the held-out seed scores the worst value there, with no width.
    dead = bench.heldout(table, (1e-2, 1e-3), [1], cfg)
    assert (dead.value, dead.lo, dead.hi) == (0.0, 0.0, 0.0)
    none = bench.heldout(table, (1e-4, 1e-3), [], cfg)  # a one-seed table holds nothing out
    assert math.isnan(none.value) and none.overlaps(bench.heldout(table, (1e-6, 1e-3), [1], cfg))
    two = bench.heldout(table, (1e-4, 1e-3), [0, 1], cfg)  # the mean of two equal seeds: width / √2
    assert two.value == pytest.approx(best) and two.half_width == pytest.approx(best_hw / math.sqrt(2), rel=1e-6)


def test_objective_interval_is_the_weighted_wilson_interval():
    from trainer.stats import wilson

    table = _tiny_table()
    cfg = bench.sweep_config(table, "tpe+asha", 100, 0).objective
    m = table.metrics(1e-4, 1e-3, 0, EPOCHS)
    iv = bench.objective_interval(table, (1e-4, 1e-3), 0, cfg)
    a, g = wilson(round(m[keys.VAL_ACC] * 144), 144), wilson(round(m[keys.GAN_TEST] * 256), 256)
    assert iv.value == pytest.approx(0.5 * a.value + 0.5 * g.value)  # at whole counts of images and samples
    # Independent parts: the half-widths add in quadrature (weights 1/2).
    assert iv.half_width == pytest.approx(math.hypot(a.half_width / 2, g.half_width / 2), rel=0.15)


def test_a_failed_cell_ends_its_trial_as_failed():
    import optuna

    from sweep import tune as sweep_tune

    table = _tiny_table()
    for seed in (0, 1):
        table.cells[(1e-4, 1e-5)][seed] = {"status": "failed", "acc": [0.5], "gan": {}}
    assert table.metrics(1e-4, 1e-5, 0, 2)[keys.STATUS] == "failed"
    cfg = bench.sweep_config(table, "tpe+asha", 10 * EPOCHS, 0)
    scheduler = sweep_tune._scheduler(cfg)
    scheduler.set_search_properties(keys.OBJECTIVE, "max")
    searcher = sweep_tune._optuna(cfg, optuna.storages.InMemoryStorage())
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
    assert [t.state for t in searcher._ot_study.trials] == [optuna.trial.TrialState.FAIL]


def test_the_shipped_table_is_whole_and_says_how_it_was_recorded():
    from sweep.replay.__main__ import TABLE

    table = read_table(TABLE)
    assert table.meta["command"].startswith("python -m sweep.replay record")
    assert len(table.lams) == len(table.mus) == 6 and table.seeds == [0, 1, 2]
    assert all(set(by_seed) == {0, 1, 2} for by_seed in table.cells.values())  # every cell on every seed
    cfg = bench.sweep_config(table, "tpe+asha", 216, 0).objective
    for seed in table.seeds:
        truth = bench.grid_truth(table, seed, cfg)
        assert 0 < truth["best"] <= 1 and truth["hv"] > 0


def test_run_takes_a_seed_base_and_overrides_and_refuses_a_bad_one(tmp_path, capsys):
    from sweep import tune as sweep_tune
    from sweep.replay.__main__ import main

    table = _tiny_table()
    write_table(table, tmp_path / "t.json.gz")
    cfg = bench.sweep_config(table, "tpe+asha", 24, 0, ("scheduler.reduction_factor=2", "search.startup_trials=4"))
    assert sweep_tune._scheduler(cfg)._reduction_factor == 2 and cfg.search.startup_trials == 4
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
    from sweep.replay import pick
    from trainer.config import ConfigError

    table = _tiny_table()
    default = pick.current_default(table)
    rival = bench.Method("random grace=2 rf=2", "random+asha", pick.asha_sets(2, 2))
    result = pick.pick(table, (10, 3), (20, 3), methods=[default, rival])
    rows = bench.summary_rows(result.tuning)

    def rule(r):  # the documented order: the goal's weaker share, both shares, the held-out gap
        return min(r["best_exact"], r["hv"]), r["best_exact"] + r["hv"], r["heldout@0.25"].value

    assert result.picked.label == max(rows, key=rule)["method"]
    assert {s.replay_seed for runs in result.tuning.searches.values() for s in runs} == {10, 11, 12}
    assert {s.replay_seed for runs in result.fresh.searches.values() for s in runs} == {20, 21, 22}
    fresh = set(result.fresh.searches)
    assert {"grid", default.label, "random grace=2 rf=3"} <= fresh and result.picked.label in fresh
    with pytest.raises(ConfigError, match="overlap"):
        pick.pick(table, (10, 3), (12, 3), methods=[default])
    assert len(pick.candidates(table)) == 2 * 3 * (3 + 3 + 2)  # grace x rf x (tpe, nsga2 sizes, random, qmc)
    assert any(pick.same_setting(c, default) for c in pick.candidates(table))


def test_verdict_needs_a_separable_reading_or_the_goal():
    from sweep.replay import pick
    from trainer.stats import Interval

    def row(name, exact, hv, gap, half):
        return {"method": name, "seeds": 40, "best_exact": exact, "hv": hv,
                "heldout@0.25": Interval(gap, gap - half, gap + half), "heldout@0.5": Interval(gap, gap - half, gap + half)}

    default = row("d", 0.45, 0.70, -0.010, 0.01)
    assert "stays" in pick.verdict(row("p", 0.55, 0.75, -0.005, 0.01), default)  # all overlap
    assert "beats" in pick.verdict(row("p", 0.50, 0.72, 0.010, 0.005), default)  # held-out separable
    assert "beats" in pick.verdict(row("p", 0.85, 0.85, -0.010, 0.01), default)  # Wilson 34/40 vs 18/40
    assert "worse" in pick.verdict(row("p", 0.05, 0.70, -0.010, 0.01), default)  # 2/40 vs 18/40
    assert "is the current default" in pick.verdict(default, default)


def test_pick_refuses_overlapping_seeds_from_the_command_line(tmp_path, capsys):
    from sweep.replay.__main__ import main

    write_table(_tiny_table(), tmp_path / "t.json.gz")
    out = tmp_path / "out"
    argv = ["pick", "--table", str(tmp_path / "t.json.gz"), "--out", str(out), "--tuning-seeds", "0", "5"]
    assert main([*argv, "--fresh-seeds", "4", "5"]) == 2
    assert "overlap" in capsys.readouterr().err and not out.exists()
