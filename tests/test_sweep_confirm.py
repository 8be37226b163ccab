"""The confirmation stage (sweep.confirm): finalists, the confirmed objective's interval, the
report with "not separable from it", the finalists of the session's tiny sweep, and a driver
killed during the stage then resumed."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import time

import mlflow
import numpy as np
import psutil
import pytest

from helpers import TINY, child_runs
from sweep import confirm, finalists, kill_points
from sweep.finalists import CONFIRM_KEYS, SEEDS_KEYS
from sweep.objective import OBJECTIVES
from sweep.points import Point
from sweep.config import ObjectiveConfig, SweepConfig
from sweep.record import RETRAIN_TRIAL_PREFIX, Status, Tag, items_tag
from trainer import items
from trainer import keys
from trainer.compare import Difference
from trainer.stats import Z95, Interval, proportion, t_quantile


def _cand(run_id: str, objective: float, acc: float, gan: float, point: str | None = None) -> finalists.Candidate:
    return finalists.Candidate(run_id, "t-" + run_id, "k-" + run_id, point or run_id, "checkpoints/best.pt",
                             objective, acc, gan)  # fmt: skip


def test_finalists_are_the_best_then_the_front_then_the_runners_up_by_run_id_at_most_top_k():
    pool = {
        "t-a": _cand("a", 0.70, 0.90, 0.50, point="same"),  # best objective, on the front
        "t-b": _cand("b", 0.60, 0.50, 0.70, point="same"),  # on the front; shares a's display name
        "t-c": _cand("c", 0.50, 0.40, 0.40),  # dominated by a and b
        "t-d": _cand("d", 0.40, 0.20, 0.90),  # on the front
        "t-e": _cand("e", 0.65, 0.60, 0.60),  # on the front (neither a nor b dominates it)
    }
    chosen = finalists.finalists(pool, "t-a", top_k=5)
    assert [c.run_id for c in chosen] == ["a", "e", "b", "d", "c"]  # best, the front by objective, the rest
    assert [c.run_id for c in finalists.finalists(pool, "t-a", top_k=4)] == ["a", "e", "b", "d"]
    assert [c.run_id for c in finalists.finalists(pool, "t-a", top_k=2)] == ["a", "e"]
    # The best point is a finalist even when it is not on the front (selection chose it).
    assert [c.run_id for c in finalists.finalists(pool, "t-c", top_k=2)] == ["c", "a"]
    assert finalists.finalists({}, None, top_k=5) == []


def _wilson_half(p: float, n: int) -> float:
    z = Z95
    return z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)


def test_confirmed_objective_interval_by_hand():
    acc, gan = proportion(0.8, 1000), proportion(0.6, 500)
    se_a, se_g = _wilson_half(0.8, 1000) / Z95, _wilson_half(0.6, 500) / Z95
    weighted = finalists.objective_interval(ObjectiveConfig(name="weighted", weight=0.25), acc, gan)
    half = Z95 * math.sqrt((0.25 * se_a) ** 2 + (0.75 * se_g) ** 2)  # exact for a weighted mean
    assert weighted.value == pytest.approx(0.25 * 0.8 + 0.75 * 0.6)
    assert (weighted.lo, weighted.hi) == pytest.approx((weighted.value - half, weighted.value + half), abs=1e-6)
    harmonic = finalists.objective_interval(ObjectiveConfig(name="harmonic"), acc, gan)
    da, dg = 2 * 0.6**2 / 1.4**2, 2 * 0.8**2 / 1.4**2  # ∂(2ag/(a+g))/∂a, ∂/∂g at (0.8, 0.6)
    half = Z95 * math.sqrt((da * se_a) ** 2 + (dg * se_g) ** 2)  # the delta method
    assert harmonic.value == pytest.approx(2 * 0.8 * 0.6 / 1.4)
    assert (harmonic.lo, harmonic.hi) == pytest.approx((harmonic.value - half, harmonic.value + half), abs=1e-6)
    assert finalists.objective_interval(ObjectiveConfig(name="accuracy"), acc, None) == acc
    assert finalists.objective_interval(ObjectiveConfig(name="gan_test"), acc, gan) == gan
    assert finalists.objective_interval(ObjectiveConfig(name="weighted"), acc, None) is None


@pytest.mark.parametrize("name", ["weighted", "harmonic"])
def test_confirmed_objective_interval_covers_the_true_objective_95_percent_of_the_time(name):
    cfg, rng, draws = ObjectiveConfig(name=name, weight=0.5), np.random.default_rng(18), 3000
    for p_acc, n_acc, p_gan, n_gan in ((0.9, 360, 0.3, 360), (0.6, 1000, 0.8, 1024), (0.75, 200, 0.5, 128)):
        truth = OBJECTIVES[name](p_acc, p_gan, cfg.weight)
        hits = 0
        for a, g in zip(rng.binomial(n_acc, p_acc, draws), rng.binomial(n_gan, p_gan, draws)):
            iv = finalists.objective_interval(cfg, proportion(a / n_acc, n_acc), proportion(g / n_gan, n_gan))
            hits += iv.lo <= truth <= iv.hi
        assert abs(hits / draws - 0.95) <= 0.015, (name, p_acc, n_acc, p_gan, n_gan, hits / draws)


def _confirmed(run_id: str, point: str, objective: tuple[float, float, float], **kw) -> finalists.Confirmed:
    return finalists.Confirmed(
        _cand(run_id, objective[0] + 0.02, 0.8, 0.7, point), Interval(0.81, 0.77, 0.85), Interval(0.7, 0.67, 0.73),
        Interval(*objective), samples=1024, test_images=360, sample_seed=100_000, **kw,
    )  # fmt: skip


def _rows(*points: tuple[str, str, float]) -> list[dict]:
    def row(trial_id, point, objective):
        m = {"point": point, keys.EPOCH: 4, keys.OBJECTIVE: objective, keys.VAL_ACC: 0.8, keys.GAN_TEST: 0.7,
             keys.lo_key(keys.VAL_ACC): 0.75, keys.hi_key(keys.VAL_ACC): 0.85, keys.TEST_ACC: 0.9,
             keys.lo_key(keys.TEST_ACC): 0.875, keys.hi_key(keys.TEST_ACC): 0.925}
        return {"trial_id": trial_id, "metrics": m, "status": Status.FINISHED, "error": None}

    return [row(*p) for p in points]


def test_without_retrains_the_selections_best_is_compared_paired_over_the_shared_items(capsys):
    from trainer import items
    from sweep.report import Outcome, note, print_summary

    rng = np.random.default_rng(0)
    test_a, gan_a = rng.random(360) < 0.81, rng.random(1024) < 0.7
    # b: the same images right but 2 of a's (a paired difference of 2/360, z ≈ 1.4); c: far below.
    test_b, gan_b = test_a.copy(), gan_a.copy()
    test_b[np.flatnonzero(test_a)[:2]] = False
    test_c, gan_c = rng.random(360) < 0.5, rng.random(1024) < 0.4

    def finalist(run_id, point, test, gan):
        acc, g = proportion(test.mean(), 360), proportion(gan.mean(), 1024)
        codes = {keys.CONFIRM_TEST_ACC: items.encode(test), keys.CONFIRM_GAN_TEST: items.encode(gan)}
        return finalists.Confirmed(_cand(run_id, 0.8, 0.8, 0.7, point), acc, g,
                                 finalists.objective_interval(ObjectiveConfig(), acc, g), samples=1024, test_images=360,
                                 sample_seed=100_000, items=codes)  # fmt: skip

    confirmed = [finalist("a", "sm a", test_a, gan_a), finalist("b", "sm b", test_b, gan_b),
                 finalist("c", "base c", test_c, gan_c)]
    result = finalists.decide(confirmed, ObjectiveConfig(), retrained=False)
    assert result.best is confirmed[0] and not result.verdict.picked_here and result.verdict.family == 2
    diff_b = result.verdict.differences["b"]
    by_hand = 0.5 * (test_a.astype(float) - test_b)  # the GAN-test parts are identical
    assert diff_b.how == "paired over 360 items" and diff_b.estimate == pytest.approx(by_hand.mean())
    assert diff_b.se == pytest.approx(math.sqrt(by_hand.var(ddof=1) / 360), rel=1e-4)
    assert [c.finalist.point for c in result.not_separable()] == ["sm b"] and result.verdict.separable["c"]
    outcome = Outcome(_rows(("t-a", "sm a", 0.82), ("t-b", "sm b", 0.80), ("t-c", "base c", 0.78)), result)
    print_summary(outcome)
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("Best point:"))
    assert line.startswith(f"Best point: sm a, objective {confirmed[0].objective}")
    assert "confirmed on 1024 new samples, seed 100000, and 360 test images; evaluation noise only" in line
    assert "selection objective 0.800" in line  # what selected, labelled
    assert line.endswith("not separable from it: sm b")
    assert "Holm over the 2 comparisons with it" in out
    b_line = next(line for line in out.splitlines() if line.strip().startswith("sm b") and "separable" in line)
    assert str(diff_b.interval()) in b_line and "not separable (paired over 360 items" in b_line
    # every trial's reported accuracies carry their intervals too
    trial_line = next(line for line in out.splitlines() if line.startswith("  sm a ") and "finished" in line)
    assert "0.800 [0.750, 0.850]" in trial_line and "0.900 [0.875, 0.925]" in trial_line
    text = note("s", outcome)
    assert f"**sm a**, objective {confirmed[0].objective}" in text and "not separable from it: sm b." in text
    assert "As selection measured it: objective 0.820" in text


def test_retrained_finalists_are_ranked_by_their_new_seeds_alone_with_the_pooled_variance(capsys):
    from sweep.report import Outcome, print_summary

    def seeds(run_id, point, own, new):
        """A finalist whose own run confirmed at ``own`` and whose retrains at ``new``."""
        retrains = tuple(_confirmed(f"{run_id}{i}", f"{point} s{1000 + i}", (v, v - 0.03, v + 0.03))
                         for i, v in enumerate(new))
        base = _confirmed(run_id, f"{point} s0", (own, own - 0.03, own + 0.03))
        return base, retrains

    # a won the selection by luck (its own 0.90); on new seeds b is better.
    parts = [seeds("a", "sm a", 0.90, [0.70, 0.72]), seeds("b", "sm b", 0.80, [0.80, 0.78]),
             seeds("c", "sm c", 0.60, [0.50, 0.52])]
    pools = finalists.pooled_over([dataclasses.replace(b, own=b, retrains=r) for b, r in parts])
    # by hand: each finalist's own run and retrains, pooled: (0.90, 0.70, 0.72), (0.80, 0.80, 0.78),
    # (0.60, 0.50, 0.52): within-cell sums of squares over 6 d.f.
    groups = [[0.90, 0.70, 0.72], [0.80, 0.80, 0.78], [0.60, 0.50, 0.52]]
    ss = sum(sum((v - sum(g) / 3) ** 2 for v in g) for g in groups)
    pool = pools[keys.CONFIRM_OBJECTIVE]
    assert pool.df == 6 and pool.variance == pytest.approx(ss / 6)
    finalists_ = [finalists.over_retrains(b, r, [1000, 1001], pools) for b, r in parts]
    a = finalists_[0]
    assert a.objective.value == pytest.approx(0.71)  # the new seeds' mean: its own 0.90 is not in it
    half = t_quantile(6) * pool.sd / math.sqrt(2)
    assert (a.objective.lo, a.objective.hi) == pytest.approx((0.71 - half, 0.71 + half))
    assert a.own.objective.value == 0.90 and a.train_seeds == (1000, 1001)
    result = finalists.decide(finalists_, ObjectiveConfig(), retrained=True)
    assert result.best.finalist.run_id == "b"  # decided on the new seeds, not on the selection
    assert result.verdict.picked_here and result.verdict.family == 3  # every pair
    d = result.verdict.differences["a"]
    assert d.estimate == pytest.approx(0.79 - 0.71) and d.se == pytest.approx(pool.sd) and d.df == 6
    logged = finalists.seeds_metrics_of(a)
    assert logged[keys.CONFIRM_OBJECTIVE_SEEDS] == a.objective.value
    assert not any(k in logged for k in CONFIRM_KEYS)
    assert "mean of 2 new training seed(s) (1000, 1001), pooled sd" in finalists.describe(a)
    rows = _rows(("t-a", "sm a s0", 0.85), ("t-b", "sm b s0", 0.80), ("t-c", "sm c s0", 0.70))
    print_summary(Outcome(rows, result))
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Best point:"))
    assert line.startswith(f"Best point: sm b, objective {result.best.objective}")
    assert "its own selected run s0: 0.800" in line


def test_the_tiny_sweeps_finalists_carry_confirmed_numbers_from_a_fresh_sample_seed(tiny_sweep):
    mc = mlflow.MlflowClient(tiny_sweep.tracking_uri)
    runs = child_runs(tiny_sweep.tracking_uri, tiny_sweep.experiment, tiny_sweep.parent_run_id)
    finalists = [r for r in runs if keys.CONFIRM_OBJECTIVE in r.data.metrics]
    parent = mc.get_run(tiny_sweep.parent_run_id)
    assert parent.data.tags[Tag.BEST_RUN] in {r.info.run_id for r in finalists}  # the best is confirmed
    assert 1 <= len(finalists) <= SweepConfig().confirm.top_k
    for run in finalists:
        assert run.data.tags[Tag.STATUS] == Status.FINISHED
        m = run.data.metrics
        for key in CONFIRM_KEYS:
            assert m[keys.lo_key(key)] <= m[key] <= m[keys.hi_key(key)], (run.info.run_name, key)
            assert len(mc.get_metric_history(run.info.run_id, key)) == 1
        # The trial's own evaluation drew its samples with its trainer seed; confirmation did not.
        assert run.data.tags[Tag.CONFIRM_SAMPLE_SEED] != run.data.params["seed"]
        # confirm.samples whatever the test set's size (targets cycle over the 96 test labels)
        assert (int(run.data.tags[Tag.CONFIRM_SAMPLES]), int(run.data.tags[Tag.CONFIRM_TEST_IMAGES])) == (128, 96)
        # and every finalist keeps its per-item outcomes, for paired comparisons
        assert len(items.decode(run.data.tags[items_tag(keys.CONFIRM_GAN_TEST)])) == 128
        assert len(items.decode(run.data.tags[items_tag(keys.CONFIRM_TEST_ACC)])) == 96
        # 96 test images: the interval is as wide as Wilson's over 96, not over the selection's 16
        acc = proportion(m[keys.CONFIRM_TEST_ACC], 96)
        assert (m[keys.lo_key(keys.CONFIRM_TEST_ACC)], m[keys.hi_key(keys.CONFIRM_TEST_ACC)]) == pytest.approx(
            (acc.lo, acc.hi))
    for run in runs:
        if run.data.tags[Tag.STATUS] != Status.FINISHED:
            assert not any(k.startswith("confirm/") for k in run.data.metrics), run.info.run_name
    note = parent.data.tags[Tag.NOTE]
    assert "Best point: **" in note and "(95 % interval; confirmed on " in note


def _drive(tmp_path: Path, resume: bool, kill_at: str | None, log: Path, extra: tuple[str, ...] = (),
           kill_when=None) -> int:  # fmt: skip
    """Run the driver to its end (or its kill), then end what it left behind (its local Ray).
    ``kill_when()``: polled while it runs; true kills the driver's process group (SIGKILL)."""
    sets = [*TINY, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "max_concurrent_trials=1", "analysis=false",
            "search.points=[{loss.preset: baseline}]", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop(kill_points.ENV_KILL_AT, None)
    if kill_at:
        env[kill_points.ENV_KILL_AT] = kill_at
    argv = [sys.executable, "-m", "sweep.run", "--name", "conf", *sum((["--set", s] for s in sets), [])]
    proc = subprocess.Popen(argv + (["--resume"] if resume else []), cwd=tmp_path, env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    family: set[psutil.Process] = set()
    while proc.poll() is None:
        try:
            family.update(psutil.Process(proc.pid).children(recursive=True))
        except psutil.Error:  # a child ended while being listed
            pass
        if kill_when is not None and kill_when():
            break
        time.sleep(0.3)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    for p in family:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(family), timeout=30)
    return proc.returncode


@pytest.mark.slow  # two driver starts of a 3-trial sweep (each starts a local Ray)
@pytest.mark.timeout(1300)
def test_a_driver_killed_during_confirmation_resumes_and_confirms_each_finalist_once(ray_cluster, tmp_path):
    first = tmp_path / "killed.log"
    assert _drive(tmp_path, resume=False, kill_at="confirm", log=first) == -signal.SIGKILL, first.read_text()[-3000:]
    mc = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mc.get_experiment_by_name("conf")
    confirmed_before = mc.search_runs([exp.experiment_id], f"metrics.`{keys.CONFIRM_OBJECTIVE}` >= 0")
    assert len(confirmed_before) == 1  # killed right after its first finalist
    again = tmp_path / "resumed.log"
    assert _drive(tmp_path, resume=True, kill_at=None, log=again) == 0, again.read_text()[-3000:]
    out = again.read_text()
    assert f"{confirmed_before[0].info.run_name}: objective " in out and "(confirmed earlier)" in out
    trials = mc.search_runs([exp.experiment_id], f"tags.`{Tag.ROLE}` = 'trial'")
    finalists = [r for r in trials if keys.CONFIRM_OBJECTIVE in r.data.metrics]
    assert confirmed_before[0].info.run_id in {r.info.run_id for r in finalists}
    printed = [line for line in out.splitlines() if line.startswith("confirm: ") and ": objective " in line]
    assert len(printed) == len(finalists)  # every finalist the resumed stage chose is confirmed
    for run in finalists:
        for key in CONFIRM_KEYS:
            for name in (key, keys.lo_key(key), keys.hi_key(key)):
                assert len(mc.get_metric_history(run.info.run_id, name)) == 1, (run.info.run_name, name)
    parent = mc.search_runs([exp.experiment_id], f"tags.`{Tag.ROLE}` = 'parent'")[0]
    assert parent.info.status == "FINISHED" and "best/objective_lo" in parent.data.metrics
    assert any(" done in " in line and ", confirm " in line for line in out.splitlines())  # its phase


def test_the_stage_interrupted_after_one_finalist_confirms_only_the_rest_when_run_again(tmp_path):
    """run_stage on a real MLflow store with stand-in measurements: a Ctrl-C during the second
    finalist, then the stage again, measures each finalist once and logs one point per metric."""
    from sweep import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mc = tracking.client(uri)
    exp = mc.create_experiment("e")
    parent = mc.create_run(exp, tags={Tag.ROLE: "parent"}).info.run_id
    rows, results = [], {}
    # (trial, validation accuracy, GAN-test): a front of three points, and one dominated point
    for i, (acc, gan) in enumerate(((0.9, 0.5), (0.7, 0.7), (0.5, 0.9), (0.4, 0.4))):
        run = mc.create_run(exp, tags={Tag.PARENT: parent, Tag.ROLE: "trial", Tag.TRIAL_ID: f"t{i}", Tag.KEY: f"k{i}",
                                       Tag.CHECKPOINT: "checkpoints/best.pt", Tag.POINT: f"p{i}"})  # fmt: skip
        metrics = {"point": f"p{i}", keys.VAL_ACC: acc, keys.GAN_TEST: gan, keys.OBJECTIVE: (acc + gan) / 2}
        rows.append({"trial_id": f"t{i}", "status": Status.FINISHED, "error": None, "metrics": metrics})
        results[run.info.run_id] = {"test_acc": acc, "test_images": 400, "gan_test": gan - 0.05, "samples": 1024}
    cfg = SweepConfig(name="e")
    calls: list[str] = []

    def remote(work, stop_at: int | None = None):
        calls.append(work.args[1])  # the finalist's run id
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return json.dumps(results[work.args[1]])

    def stage(stop_at=None):
        sweep = confirm.ConfirmInput(cfg, uri, exp, parent, "judge-run")
        return confirm.run_stage(sweep, rows, confirm.Where(one=lambda w: remote(w, stop_at)))

    with pytest.raises(KeyboardInterrupt):
        stage(stop_at=2)
    first = calls[0]
    done = stage().finalists
    assert [c.finalist.point for c in done] == ["p0", "p1", "p2", "p3"]  # the best, the front, then dominated p3
    assert calls.count(first) == 1 and len(calls) == 2 + 3  # interrupted: 2 calls; again: the other three
    assert [c.reused for c in done] == [c.finalist.run_id == first for c in done]
    for c in done:
        assert c.gan_test.value == pytest.approx(results[c.finalist.run_id]["gan_test"], abs=1 / 1024)  # a count
        for key in CONFIRM_KEYS:
            for name in (key, keys.lo_key(key), keys.hi_key(key)):
                assert len(mc.get_metric_history(c.finalist.run_id, name)) == 1, (c.finalist.point, name)
        assert mc.get_run(c.finalist.run_id).data.tags[Tag.CONFIRM_SAMPLE_SEED] == str(cfg.confirm_sample_seed)


def test_new_training_seeds_are_fixed_and_never_a_seed_the_sweep_already_used():
    cfg = SweepConfig.model_validate({"name": "s", "search": {"seeds": [0, 1000, 1002]},
                                      "confirm": {"train_seeds": 3, "sample_seed": 1003}})  # fmt: skip
    assert cfg.confirm_train_seeds() == [1001, 1004, 1005]
    assert SweepConfig(name="s").confirm_train_seeds() == []
    point = Point((("loss.lam", 1e-3),), 0)
    assert finalists.retrain_name("sm λ1e-3 μ1e-4 s0", point, 1000) == "sm λ1e-3 μ1e-4 s1000"
    assert finalists.retrain_name("sm λ1e-3 μ1e-4 s0 #abc123", point, 1000) == "sm λ1e-3 μ1e-4 s1000 #abc123"


def _retrain_sweep(uri: str, storage: Path, name: str, resume: bool = False) -> int:
    from helpers import run_sweep

    sets = [*TINY, f"tracking.uri={uri}", f"storage_path={storage}", "experiment=retrain-test", "analysis=false",
            "confirm.top_k=2", "confirm.train_seeds=1"]  # fmt: skip
    return run_sweep(["--name", name, *sum((["--set", s] for s in sets), []), *(["--resume"] if resume else [])])


@pytest.mark.slow  # three trials, two retrains and two resumes: over a minute on 2 shared cores
@pytest.mark.timeout(900)
def test_retrained_finalists_are_reported_by_their_new_seeds_and_a_resume_retrains_only_the_unfinished(
    ray_cluster, mlflow_server, tmp_path, capsys
):
    from sweep.config_files import load_sweep_config
    from sweep.points import Point, grid_points

    uri, name = mlflow_server.uri, "retrain"
    assert _retrain_sweep(uri, tmp_path, name) == 0
    out = capsys.readouterr().out
    mc = mlflow.MlflowClient(uri)
    from sweep import tracking

    parent = mc.get_run(tracking.find_parent(mc, "retrain-test", name))
    runs = child_runs(uri, "retrain-test", parent.info.run_id)
    grid = grid_points(load_sweep_config("quickstart", TINY).search)
    assert len(runs) == len(grid) + 2  # the grid's trials and one retrain per finalist
    finalists_ = [r for r in runs if keys.CONFIRM_OBJECTIVE_SEEDS in r.data.metrics]
    assert len(finalists_) == 2
    by_key = {r.data.tags[Tag.KEY]: r for r in runs}
    twins = {}  # finalist run id -> its retrain's run, found by the point's key with the new seed
    for f in finalists_:
        own = next(p for p in grid if p.key == f.data.tags[Tag.KEY])
        twin = by_key[Point(own.overrides, 1000).key]  # the same point with the first new seed: its own identity
        assert twin.info.run_id != f.info.run_id and twin.data.params["seed"] == "1000"
        assert twin.data.tags[Tag.STATUS] == Status.FINISHED and twin.info.run_name.endswith(" s1000")
        assert twin.data.tags[Tag.CONFIRM_SAMPLE_SEED] == f.data.tags[Tag.CONFIRM_SAMPLE_SEED]  # confirmed alike
        assert f.data.tags[Tag.CONFIRM_TRAIN_SEEDS] == "1000"  # the new seed only: the selected run is not in the mean
        twins[f.info.run_id] = twin
    best = next(r for r in runs if r.info.run_id == parent.data.tags[Tag.BEST_RUN])
    other = next(f for f in finalists_ if f.info.run_id != best.info.run_id)
    retrained = twins[best.info.run_id]
    for key, seeds_key in SEEDS_KEYS.items():
        # pooled by hand over (own, retrain) of both finalists: (a − b)²/2 each, on 2 d.f.
        var = sum((f.data.metrics[key] - twins[f.info.run_id].data.metrics[key]) ** 2 / 2 for f in finalists_) / 2
        for f in finalists_:
            new_value = twins[f.info.run_id].data.metrics[key]
            half = t_quantile(2) * math.sqrt(var)  # the mean of one new seed: s/√1
            expected = (new_value, max(new_value - half, 0.0), min(new_value + half, 1.0))
            got = tuple(f.data.metrics[k] for k in (seeds_key, keys.lo_key(seeds_key), keys.hi_key(seeds_key)))
            assert got == pytest.approx(expected), (seeds_key, f.info.run_name)
        if key == keys.CONFIRM_OBJECTIVE:
            assert parent.data.metrics["pooled/confirm_objective_sd"] == pytest.approx(math.sqrt(var))
            pooled_sd = math.sqrt(var)
    assert parent.data.metrics["pooled/confirm_objective_df"] == 2.0
    # The best is the better mean over the new seeds, and the printed verdict is the difference test
    # recomputed from the logged numbers: (new_best − new_other) ± t(2)·s·√(1/1 + 1/1).
    new_best = retrained.data.metrics[keys.CONFIRM_OBJECTIVE]
    new_other = twins[other.info.run_id].data.metrics[keys.CONFIRM_OBJECTIVE]
    assert new_best >= new_other
    diff = Difference(new_best - new_other, pooled_sd * math.sqrt(2), 2)
    verdict = next(line for line in out.splitlines() if line.strip().startswith(other.info.run_name)
                   and "separable (" in line)  # fmt: skip
    assert str(diff.interval()) in verdict
    assert verdict.split(str(diff.interval()))[1].strip().startswith(
        "separable" if diff.p_value < 0.05 else "not separable")  # one pair: Holm is the plain test
    from analysis.runs import load

    frame = load("retrain-test", uri, parent.info.run_id).set_index("run_id")
    for col in ("confirm_objective_seeds", "confirm_objective_seeds_lo", "confirm_test_acc_seeds_hi"):
        assert frame.loc[best.info.run_id, col] == pytest.approx(best.data.metrics[col.replace("confirm_", "confirm/")])
    # What the sweep reports is the mean over the new seeds, said so.
    assert parent.data.metrics["best/objective"] == pytest.approx(best.data.metrics[keys.CONFIRM_OBJECTIVE_SEEDS])
    assert "mean of 1 new training seed(s) (1000)" in parent.data.tags[Tag.NOTE]
    line = next(line for line in out.splitlines() if line.startswith("Best point:"))
    assert "mean of 1 new training seed(s) (1000), pooled sd" in line and "its own selected run" in line

    # A retrain that did not end (as after a kill mid-training) is trained again on --resume, in
    # a run that replaces its old one; a finished one is not. Identity by key, never by name.
    mc.set_tag(retrained.info.run_id, Tag.STATUS, Status.RUNNING)
    assert _retrain_sweep(uri, tmp_path, name, resume=True) == 0
    out = capsys.readouterr().out
    assert "1 trial(s) to train" in out
    after = child_runs(uri, "retrain-test", parent.info.run_id)
    assert len(after) == len(runs) and [r.data.tags[Tag.KEY] for r in after].count(retrained.data.tags[Tag.KEY]) == 1
    logged = {k: len(mc.get_metric_history(best.info.run_id, k)) for k in finalists.seeds_metrics_of(
        finalists.over_retrains(_confirmed("a", "a", (0.5, 0.4, 0.6)), [_confirmed("b", "b", (0.6, 0.5, 0.7))], [1],
                              {}))}  # fmt: skip
    assert _retrain_sweep(uri, tmp_path, name, resume=True) == 0
    out = capsys.readouterr().out
    assert "0 trial(s) to train, 2 trained before" in out and "(confirmed earlier)" in out
    assert len(child_runs(uri, "retrain-test", parent.info.run_id)) == len(runs)
    # Nothing new measured: no second point for any confirm/*_seeds metric.
    assert {k: len(mc.get_metric_history(best.info.run_id, k)) for k in logged} == logged


@pytest.mark.slow  # starts a local Ray
def test_run_tasks_keeps_order_runs_at_most_max_concurrent_at_once_and_returns_a_failure_in_its_place(
    ray_cluster, tmp_path
):
    from sweep.engine import session as tune

    def stamp(i: int) -> str:  # nested: Ray pickles it by value (the tests folder is not on a worker's path)
        import time as clock

        start = clock.time()
        clock.sleep(0.5)
        return json.dumps([i, start, clock.time()])

    def fail() -> str:
        raise RuntimeError("retrain broke")

    cfg = SweepConfig.model_validate({"name": "t", "max_concurrent_trials": 1, "failure": {"max_failures": 0}})
    tune.start(None)
    try:
        results = tune.run_tasks([lambda: stamp(0), fail, lambda: stamp(2), lambda: stamp(3)], cfg)
    finally:
        tune.stop()
    assert isinstance(results[1], Exception) and "retrain broke" in str(results[1])
    spans = [json.loads(r) for r in results if not isinstance(r, Exception)]
    assert [s[0] for s in spans] == [0, 2, 3]  # in the order given
    spans.sort(key=lambda s: s[1])
    assert all(a[2] <= b[1] for a, b in zip(spans, spans[1:])), spans  # one at a time: no overlap


@pytest.mark.slow  # two driver starts (each starts a local Ray), trials and a retrain
@pytest.mark.timeout(1300)
def test_a_driver_killed_while_a_finalist_retrains_resumes_and_retrains_it_once(ray_cluster, tmp_path):
    extra = ("confirm.top_k=1", "confirm.train_seeds=1", "trainer.epochs=4")  # 4 epochs: time to catch it
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    retrains = f"tags.`{Tag.TRIAL_ID}` LIKE '{RETRAIN_TRIAL_PREFIX}%'"

    first = tmp_path / "killed.log"

    def retraining() -> bool:
        if "confirm: retraining" not in first.read_text():  # before it, the driver may still be creating the store
            return False
        exp = mlflow.MlflowClient(uri).get_experiment_by_name("conf")
        found = mlflow.MlflowClient(uri).search_runs([exp.experiment_id], retrains)
        return any(r.data.tags.get(Tag.STATUS) == Status.RUNNING and keys.EPOCH in r.data.metrics for r in found)

    code = _drive(tmp_path, False, None, first, extra, kill_when=retraining)
    assert code == -signal.SIGKILL, first.read_text()[-3000:]
    mc = mlflow.MlflowClient(uri)
    exp = mc.get_experiment_by_name("conf")
    killed = mc.search_runs([exp.experiment_id], retrains)
    assert len(killed) == 1 and killed[0].data.tags[Tag.STATUS] != Status.FINISHED  # killed mid-training
    again = tmp_path / "resumed.log"
    assert _drive(tmp_path, True, None, again, extra) == 0, again.read_text()[-3000:]
    out = again.read_text()
    assert "1 trial(s) to train" in out  # the unfinished retrain, and nothing else
    trials = mc.search_runs([exp.experiment_id], f"tags.`{Tag.ROLE}` = 'trial'")
    retrained = [r for r in trials if r.data.tags[Tag.KEY] == killed[0].data.tags[Tag.KEY]]
    assert len(retrained) == 1 and retrained[0].data.tags[Tag.STATUS] == Status.FINISHED  # no duplicate run
    assert len(trials) == 3 + 1  # two grid points and the baseline, and the retrain
    history = mc.get_metric_history(retrained[0].info.run_id, keys.EPOCH)
    assert sorted(m.step for m in history) == list(range(1, 5))  # each epoch once
    best = next(r for r in trials if keys.CONFIRM_OBJECTIVE_SEEDS in r.data.metrics)
    assert len(mc.get_metric_history(best.info.run_id, keys.CONFIRM_OBJECTIVE_SEEDS)) == 1
