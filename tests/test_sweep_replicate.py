"""Replication (search.replicate): its config, the choice over a point's seeds against a hand
computation, and its bookkeeping through the live searcher (budget and share, keys, Optuna's
view, the grid, resume by pickling), driven as Tune drives it."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import optuna
import pytest

from sweep import choice, search
from sweep.budget import EpochBudget
from sweep.config_files import load_sweep_config
from sweep.points import POINT_KEY, POINT_SEED, Point, grid_points, point_names
from sweep.trial import SweepContext
from trainer import keys
from trainer.config import ConfigError
from trainer.stats import t_quantile

OPTUNA = ["search.method=optuna", "search.grid={}", "search.points=[]", "search.n_trials=40",
          "search.space.loss.lam={low: 1.0e-6, high: 1.0e-1}", "search.space.loss.mu={low: 1.0e-6, high: 1.0e-1}",
          "trainer.epochs=4", "trainer.eval.every=1"]  # fmt: skip
GRID = ["search.grid.loss.lam=[1.0e-2, 1.0e-3, 1.0e-4]", "search.grid.loss.mu=[1.0e-3, 1.0e-4]",
        "search.points=[]", "trainer.epochs=4", "trainer.eval.every=1"]  # fmt: skip


# --- config ------------------------------------------------------------------------------------


def test_replicate_is_off_by_default_and_its_seeds_are_nobody_elses():
    cfg = load_sweep_config("quickstart", [])
    assert cfg.search.replicate is None and cfg.replicate_seeds() == []
    cfg = load_sweep_config("quickstart", ["search.replicate={seeds: 2}"])
    rep = cfg.search.replicate
    assert (rep.top_k, rep.seeds, rep.share, rep.choose) == (3, 2, 0.5, "lower")  # the replay's pick
    assert cfg.replicate_seeds() == [10000, 10001]
    # Whatever the sweep's own seeds, the confirmation's retrain seeds and its sample seed take is skipped.
    cfg = load_sweep_config("quickstart", ["search.replicate={seeds: 3}", "search.seeds=[10000]",
                                           "confirm.sample_seed=10002", "confirm.train_seeds=2"])
    assert cfg.replicate_seeds() == [10001, 10003, 10004]
    assert not set(cfg.replicate_seeds()) & {*cfg.search.seeds, *cfg.confirm_train_seeds(), cfg.confirm_sample_seed}


@pytest.mark.parametrize("sets, message", [
    (["search.replicate={share: 1.0}"], "less than 1"),
    (["search.replicate={share: 0}"], "greater than 0"),
    (["search.replicate={top_k: 0}"], "greater than or equal to 1"),
    (["search.replicate={choose: median}"], "'mean' or 'lower'"),
    (["search.replicate={seeds: 1}", "search.seeds=[0, 1]"], "already trains every point with several"),
    ([*OPTUNA, "search.replicate={}", "scheduler.kind=fifo", "search.objectives=[val/acc, eval/gan_test]"],
     "multi-objective"),
    ([*OPTUNA, "search.replicate={share: 0.1}", "search.max_epochs_total=20"], "cannot pay for one replicate"),
    (["search.replicate={}", "search.max_epochs_total=40"], "is for search.method=optuna"),
])  # fmt: skip
def test_replicate_config_errors(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep_config("quickstart", sets)


# --- the choice over a point's seeds -----------------------------------------------------------

# A: one seed at 0.90. B: two finished seeds, 0.85 and 0.80. C: 0.88 and a diverged seed (0).
POINTS = {"A": [(0.90, False)], "B": [(0.85, False), (0.80, False)], "C": [(0.88, False), (0.0, True)]}


def test_choice_by_the_mean_and_by_its_lower_bound_against_a_hand_computation():
    # Means: A 0.90, B 0.825, C 0.44 (the diverged seed counts at 0).
    assert choice.ranked(POINTS) == ["A", "B", "C"]
    # The pooled variance: only B has two finished seeds (C's diverged one is not in it):
    # s² = ((0.85 − 0.825)² + (0.80 − 0.825)²) / 1 = 0.00125, 1 d.f.
    pool = choice.pooled_of(POINTS)
    assert pool.variance == pytest.approx(0.00125) and pool.df == 1 and pool.cells == 1
    by_mean = choice.choose(POINTS, "mean")
    assert by_mean.point == "A" and by_mean.seeds == 1 and by_mean.estimate.value == pytest.approx(0.90)
    # Lower bounds x̄ − t(1 d.f.)·s/√n with t = 12.706: A 0.90 − 12.706·0.035355 = 0.4508,
    # B 0.825 − 12.706·0.035355/√2 = 0.5074, C 0.44 − 0.3176 = 0.1224: B, the point measured twice.
    t, s = 12.7062047, math.sqrt(0.00125)
    lower = choice.choose(POINTS, "lower")
    assert lower.point == "B" and lower.seeds == 2
    assert lower.estimate.lo == pytest.approx(0.825 - t * s / math.sqrt(2), abs=1e-6)
    assert lower.estimate.hi == pytest.approx(0.825 + t * s / math.sqrt(2), abs=1e-6)
    # Without a point of two finished seeds there is no pooled variance: both rules are the mean.
    one = {"A": [(0.9, False)], "B": [(0.95, False)]}
    assert choice.choose(one, "lower").point == "B" and math.isnan(choice.choose(one, "lower").estimate.lo)
    assert choice.choose({}, "mean") is None
    with pytest.raises(ValueError, match="neither"):
        choice.choose(POINTS, "max")


# --- the live searcher, driven as Tune drives it --------------------------------------------------


def _result(epoch: int, value: float, status: str = "running") -> dict:
    return {keys.OBJECTIVE: value, keys.EPOCH: epoch, keys.STATUS: status, "training_iteration": epoch}


class Loop:
    """Tune's calls to a searcher: up to ``concurrency`` trials, each training one epoch per step
    in turn; ``value(config, seed)`` is a trial's objective, ``stop_at(config)`` an epoch at which
    the scheduler stops it (None: it finishes). Checks the share at every start."""

    def __init__(self, searcher, epochs: int, value, stop_at=lambda config: None, concurrency: int = 3) -> None:
        self.s, self.epochs, self.value, self.stop_at, self.concurrency = searcher, epochs, value, stop_at, concurrency
        self.running: dict[str, list] = {}  # trial id -> [config, epoch]
        self.configs: dict[str, dict] = {}
        self.n, self.trained, self.finished = 0, 0, False

    def step(self) -> bool:
        """Start what the searcher proposes, train one epoch of each running trial; False once done."""
        while not self.finished and len(self.running) < self.concurrency:
            self.n += 1
            tid = f"t{self.n:03d}"
            config = self.s.suggest(tid)
            if config is None:
                break
            if config == search.Searcher.FINISHED:
                self.finished = True
                break
            self.running[tid], self.configs[tid] = [config, 0], config
            rep, budget = self.s.replication, self.s.budget
            if rep is not None and POINT_SEED in config:  # a replicate started: the share held
                assert budget.committed_by(self.s.replicates) <= rep.share * budget.committed() + 1e-9
        if not self.running:
            assert self.finished, "the searcher waits with nothing running"
            return False
        for tid in list(self.running):
            config, epoch = self.running[tid]
            epoch += 1
            self.trained += 1
            self.running[tid][1] = epoch
            settings = {k: v for k, v in config.items() if k != POINT_SEED}
            value = self.value(settings, config.get(POINT_SEED, self.s.seed)) * epoch / self.epochs
            if epoch == self.epochs:
                del self.running[tid]
                self.s.on_trial_complete(tid, _result(epoch, value, "finished"))
            elif epoch == self.stop_at(config):
                del self.running[tid]
                self.s.on_trial_complete(tid, _result(epoch, value))  # ASHA's stop: the stopping result
            else:
                self.s.on_trial_result(tid, _result(epoch, value))
        return True

    def run(self) -> Loop:
        while self.step():
            pass
        return self


def _noisy(config: dict, seed: int) -> float:
    """A point's objective on a seed: a smooth landscape plus a seeded noise of sd 0.05."""
    lam = config.get("loss.lam", 1e-4)
    base = 0.9 - 0.05 * abs(math.log10(lam) + 4)
    return base + random.Random(f"{sorted(config.items())}-{seed}").gauss(0, 0.05)


def _optuna_searcher(sets: list[str], storage=None) -> tuple:
    cfg = load_sweep_config("quickstart", [*OPTUNA, *sets])
    return cfg, search.searcher(cfg, storage or optuna.storages.InMemoryStorage())


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_replicates_keep_the_budget_the_share_and_their_keys(sampler):
    cfg, s = _optuna_searcher([f"search.sampler={sampler}", "search.max_epochs_total=120",
                               "search.replicate={top_k: 2, seeds: 2, share: 0.3}", "search.startup_trials=4"])
    loop = Loop(s, 4, _noisy).run()
    assert loop.trained <= 120 and loop.trained + 4 > 120  # the budget held, and was used
    replicates = {t: c for t, c in loop.configs.items() if POINT_SEED in c}
    assert replicates and set(s.replicates) == set(replicates)
    # The share: replicates' epochs at most 0.3 of all (each start was checked against it too).
    assert s.budget.committed_by(s.replicates) <= 0.3 * s.budget.spent + 1e-9
    # Keys: a replicate is the same settings with a replicate seed, so its own point key.
    ctx = SweepContext("s", "", "", "", cfg.trainer.model_dump(), cfg.objective, None, 1, seed=0)
    firsts = {tuple(sorted(c.items())) for t, c in loop.configs.items() if t not in replicates}
    by_key: dict[str, str] = {}
    for tid, config in loop.configs.items():
        point = ctx.point_of(config)
        assert point.key not in by_key  # no two trials share a key: no two share an MLflow run
        by_key[point.key] = tid
        if tid in replicates:
            assert point.seed in cfg.replicate_seeds() and point.overrides in firsts
            assert point == Point(tuple(sorted((k, v) for k, v in config.items() if k != POINT_SEED)), point.seed)
            assert ctx.name_of(point).endswith(f" s{point.seed}")
    # Each replicated point got each replicate seed at most once, and only points that had ended.
    seen = [(tuple(sorted((k, v) for k, v in c.items() if k != POINT_SEED)), c[POINT_SEED]) for c in replicates.values()]
    assert len(seen) == len(set(seen))


def test_optuna_is_told_each_replicate_as_a_seed_of_its_point():
    cfg, s = _optuna_searcher(["search.max_epochs_total=100", "search.replicate={top_k: 2, seeds: 1, share: 0.3, choose: mean}",
                               "search.sampler=random"])
    loop = Loop(s, 4, _noisy, stop_at=lambda c: 2 if c["loss.lam"] > 1e-2 else None).run()
    trials = s.study.get_trials(deepcopy=False)
    assert len(trials) == len(loop.configs)  # every Tune trial is one Optuna trial, once
    by_number = {t.number: t for t in trials}
    replicates = [t for t in trials if search.REPLICATE_ATTR in t.user_attrs]
    assert len(replicates) == len(s.replicates) > 0
    for t in replicates:
        original = by_number[t.user_attrs[search.REPLICATE_ATTR]]
        # the same point (params), another seed; the original is the point's first, sweep-seed trial
        assert t.params == original.params and t.user_attrs[search.SEED_ATTR] == cfg.replicate_seeds()[0]
        assert original.user_attrs[search.SEED_ATTR] == 0 and search.REPLICATE_ATTR not in original.user_attrs
        assert t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        if t.state == optuna.trial.TrialState.COMPLETE:  # its final value is the seed's, not the point's mean
            assert t.value == pytest.approx(_noisy(t.params, t.user_attrs[search.SEED_ATTR]))
            assert set(t.intermediate_values) == {1, 2, 3, 4}
    # The searcher's points hold every ended seed of each point; the study holds the same values.
    for pid, by_seed in s.finals.items():
        values = sorted(v for t in trials if t.params == dict(pid) and t.state == optuna.trial.TrialState.COMPLETE
                        for v in [t.value])
        assert sorted(v for v, _ in by_seed.values()) == pytest.approx(values)
    # The incumbent is the best mean over a point's seeds, not the study's best single value.
    picked = s.incumbent()
    means = {pid: sum(v for v, _ in by.values()) / len(by) for pid, by in s.finals.items()}
    assert picked.point == dict(max(means, key=means.get)) and picked.seeds == len(s.finals[choice.point_id(picked.point)])


def test_only_incumbents_are_replicated_fewest_seeds_first():
    cfg, s = _optuna_searcher(["search.max_epochs_total=400", "search.replicate={top_k: 2, seeds: 2, share: 0.9, choose: mean}",
                               "search.sampler=random"])
    for tid in ("a", "b", "c"):
        s.suggest(tid)
    s.on_trial_complete("a", _result(4, 0.7, "finished"))
    s.on_trial_complete("b", _result(4, 0.8, "finished"))
    s.on_trial_complete("c", _result(4, 0.6, "finished"))  # third: outside the top 2, never replicated
    # b ranks first: its first replicate seed; then a, which has none started yet, before b's second.
    assert s.suggest("r1") == {**s.points["b"], POINT_SEED: 10000}
    assert s.suggest("r2") == {**s.points["a"], POINT_SEED: 10000}
    s.on_trial_complete("r1", _result(4, 0.5, "finished"))  # b's mean falls to 0.65, below a's 0.7
    # a and b have one replicate seed started each: the tie goes by rank, a first now.
    assert s.suggest("r3") == {**s.points["a"], POINT_SEED: 10001}
    assert s.suggest("r4") == {**s.points["b"], POINT_SEED: 10001}
    assert POINT_SEED not in s.suggest("d")  # every incumbent has its seeds started: a new point
    assert s.points["c"] not in [s.points[t] for t in s.replicates]
    assert s.incumbent().point == s.points["a"] and s.incumbent().seeds == 1  # a's 0.7 beats b's 0.65


def test_a_diverged_or_stopped_replicate_counts_as_the_objective_counts_it():
    cfg, s = _optuna_searcher(["search.max_epochs_total=400", "search.replicate={top_k: 1, seeds: 2, share: 0.9}",
                               "search.sampler=random"])
    s.suggest("a")
    s.on_trial_complete("a", _result(4, 0.9, "finished"))
    assert s.suggest("r1")[POINT_SEED] == 10000 and s.suggest("r2")[POINT_SEED] == 10001
    s.on_trial_complete("r1", _result(2, 0.0, "diverged"))  # counts at the worst value: mean 0.45
    s.on_trial_complete("r2", _result(2, 0.6))  # stopped by the scheduler: no final value, left out
    pid = choice.point_id(s.points["a"])
    assert s.finals[pid] == {0: (0.9, False), 10000: (0.0, True)}
    states = {t.user_attrs.get(search.SEED_ATTR): t.state for t in s.study.get_trials(deepcopy=False)}
    assert states == {0: optuna.trial.TrialState.COMPLETE, 10000: optuna.trial.TrialState.COMPLETE,
                      10001: optuna.trial.TrialState.PRUNED}
    assert s.budget.spent == 8 and s.budget.committed_by(s.replicates) == 4


def test_a_failed_replicate_releases_its_epochs_and_enters_as_failed():
    cfg, s = _optuna_searcher(["search.max_epochs_total=400", "search.replicate={top_k: 1, seeds: 1, share: 0.5}"])
    s.suggest("a")
    s.on_trial_complete("a", _result(4, 0.9, "finished"))
    assert POINT_SEED in s.suggest("r")
    s.on_trial_result("r", _result(1, 0.3))
    s.on_trial_complete("r", None, error=True)
    assert s.budget.spent == 5 and not s.budget.running
    failed = [t for t in s.study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs[search.SEED_ATTR] == 10000
    assert s.suggest("next") is not None and POINT_SEED not in s.suggest("next2")  # not replicated again


def test_a_resumed_replicating_search_continues_where_it_stopped(tmp_path):
    """Tune pickles the searcher with its state: the restored one holds the same ledger, points and
    seeds started, proposes what the killed one would have, and a replicate that was running when
    the driver died enters the study once, when it ends."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    sets = ["search.max_epochs_total=80", "search.replicate={top_k: 2, seeds: 1, share: 0.4}", "search.startup_trials=3"]
    cfg, s = _optuna_searcher(sets, url)
    loop = Loop(s, 4, _noisy)
    while not any(t in s.replicates for t in loop.running):  # until a replicate is mid-training
        assert loop.step()
    s.save(str(tmp_path / "searcher.pkl"))
    running = dict(loop.running)
    assert search.fail_stale_trials(cfg.name, url) == sum(t not in s.replicates for t in running)  # --resume's first step
    restored = search.searcher(cfg, url)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.budget.committed() == s.budget.committed() and restored.replicates == s.replicates
    assert restored.finals == s.finals and restored.started == s.started and restored.replication == s.replication
    loop.s = restored  # Tune continues the running trials under the restored searcher
    loop.running = running
    loop.run()
    assert loop.trained <= 80
    trials = restored.study.get_trials(deepcopy=False)
    replicate_trials = [t for t in trials if search.REPLICATE_ATTR in t.user_attrs]
    assert len(replicate_trials) == len(restored.replicates)  # each replicate once, the resumed one too
    seen = [(tuple(sorted(t.params.items())), t.user_attrs[search.SEED_ATTR]) for t in replicate_trials]
    assert len(seen) == len(set(seen))
    # The first-seed trials the killed driver left running were failed by the resume and entered
    # again when they ended: one ended Optuna trial per first-seed Tune trial, each with its seed.
    firsts = [t for t in trials if search.REPLICATE_ATTR not in t.user_attrs]
    assert all(t.user_attrs.get(search.SEED_ATTR) == 0 for t in firsts)
    ended = [t for t in firsts if t.state != optuna.trial.TrialState.FAIL]
    assert len(ended) == sum(POINT_SEED not in c for c in loop.configs.values())


# --- the grid ----------------------------------------------------------------------------------


def test_a_replicating_grid_runs_every_point_then_replicates_within_its_ledger():
    cfg = load_sweep_config("quickstart", [*GRID, "search.replicate={top_k: 2, seeds: 2, share: 0.25}",
                                           "search.sampler_seed=3"])
    points = {p.key: p for p in grid_points(cfg.search)}
    grid = search.grid_searcher(cfg, list(points))
    assert grid.budget.total == math.ceil(6 * 4 / 0.75) == 32
    ctx = SweepContext("s", "", "", "", cfg.trainer.model_dump(), cfg.objective, None, 1, points=points,
                       names=point_names(cfg.trainer.model_dump(), list(points.values())))

    def value(config, seed):
        return _noisy(dict(points[config[POINT_KEY]].overrides), seed)

    loop = Loop(grid, 4, value, concurrency=2).run()
    firsts = [c[POINT_KEY] for t, c in loop.configs.items() if POINT_SEED not in c]
    assert sorted(firsts) == sorted(points) and firsts == search.grid_order(cfg, list(points))  # each once, shuffled
    assert firsts != list(points)  # not in config order (seed 3)
    assert loop.finished and loop.trained <= 32
    replicates = [c for c in loop.configs.values() if POINT_SEED in c]
    assert replicates and all(c[POINT_SEED] in (10000, 10001) for c in replicates)
    names = {ctx.name_of(ctx.point_of(c)) for c in replicates}
    for c in replicates:  # the grid point's name with the replicate's seed; its own key
        point = ctx.point_of(c)
        assert point.overrides == points[c[POINT_KEY]].overrides and point.key not in points
        assert ctx.name_of(point) == ctx.names[c[POINT_KEY]].replace(" s0", f" s{c[POINT_SEED]}")
    assert len(names) == len(replicates)
    # The grid's ledger, with every first trial finished: replicates at most share / (1 − share) of the grid.
    assert grid.budget.committed_by(grid.replicates) <= 0.25 / 0.75 * 24


def test_search_setup_keeps_tunes_grid_without_replication_and_uses_the_grid_searcher_with_it():
    from sweep.engine.tuner import search_setup

    plain = load_sweep_config("quickstart", GRID)
    keys_ = [p.key for p in grid_points(plain.search)]
    setup = search_setup(plain, keys_, "")
    assert setup.search_alg is None and setup.param_space[POINT_KEY] == {"grid_search": keys_} and setup.num_samples == 1
    rep = load_sweep_config("quickstart", [*GRID, "search.replicate={seeds: 2}"])
    setup = search_setup(rep, keys_, "")
    assert isinstance(setup.search_alg, search.OptunaSearcher) and not setup.search_alg.explore
    assert setup.param_space == {} and setup.num_samples == 6 * 3 and setup.metric == keys.OBJECTIVE



def test_the_progress_lines_count_the_trials_a_search_runs_replicates_included():
    """The N of "[k/N trials done]" (SearchSetup.trials, what fit gives TrialProgress): Tune's grid
    runs num_samples (1) per point; a replicating grid's searcher bounds its trials itself, 6
    points × (1 + 2 seeds) = 18 (the grid's size times that bound gave 108); Optuna's n_trials,
    which its replicates count toward."""
    from sweep.engine.tuner import search_setup

    plain = load_sweep_config("quickstart", GRID)
    keys_ = [p.key for p in grid_points(plain.search)]
    assert len(keys_) == 6 and search_setup(plain, keys_, "").trials() == 6
    rep = load_sweep_config("quickstart", [*GRID, "search.replicate={seeds: 2}"])
    assert search_setup(rep, keys_, "").trials() == 18
    cfg = load_sweep_config("quickstart", [*OPTUNA, "search.replicate={}"])
    assert search_setup(cfg, [], optuna.storages.InMemoryStorage()).trials() == 40

def test_budget_settles_each_trials_epochs():
    b = EpochBudget(total=20, per_trial=4)
    b.start("a")
    b.start("r")
    b.result("r", 2)
    assert b.committed_by(["r"]) == 4 and b.committed_by(["a", "r"]) == 8 and b.committed_by(["x"]) == 0
    b.end("r", 2)  # stopped at epoch 2: 2 trained, the rest returns
    assert b.settled == {"r": 2} and b.committed_by(["r"]) == 2 and b.committed() == 6



# --- the report and the confirmation read the choice over seeds --------------------------------


def _row(trial_id: str, point: str, config: dict, objective: float, status: str = "finished",
         acc: float = 0.9, gan: float = 0.6) -> dict:
    """One of Tune's rows as the trials stage leaves it (sweep.engine.tuner.fit, status set)."""
    m = {"point": point, keys.EPOCH: 4, keys.OBJECTIVE: objective}
    if status == "finished":
        m.update({keys.VAL_ACC: acc, keys.GAN_TEST: gan})
    return {"trial_id": trial_id, "config": config, "metrics": m, "status": status, "error": None}


# a: 0.80 and 0.60 on seeds 0 and 10000 (mean 0.70); b: 0.72 on one seed; c: 0.78, and its replicate
# diverged (counted at the objective's worst, 0: mean 0.39). a's replicate is listed first.
REPLICATED = [
    _row("t-ar", "sm a s10000", {POINT_KEY: "ka", POINT_SEED: 10000}, 0.60, acc=0.80, gan=0.40),
    _row("t-a", "sm a s0", {POINT_KEY: "ka"}, 0.80, acc=0.90, gan=0.70),
    _row("t-b", "sm b s0", {POINT_KEY: "kb"}, 0.72),
    _row("t-c", "sm c s0", {POINT_KEY: "kc"}, 0.78),
    _row("t-cr", "sm c s10000", {POINT_KEY: "kc", POINT_SEED: 10000}, 0.0, status="diverged"),
]
# The pooled run-to-run variance: a alone has two finished seeds, s² = (0.1² + 0.1²) / 1 = 0.02 on
# 1 d.f., s = 0.14142, t = 12.706. Lower bounds: a 0.70 − 12.706 · 0.14142 / √2 = −0.5706;
# b 0.72 − 12.706 · 0.14142 = −1.0769; c 0.39 − 1.2706 = −0.8806.
S, T1 = math.sqrt(0.02), 12.706204736174707


def test_the_best_row_is_the_best_point_over_its_seeds_by_the_replication_rule():
    from sweep.rows import best_choice, best_row

    assert T1 == pytest.approx(t_quantile(1))
    # Without replicates the best single trial: a's 0.80 on seed 0.
    plain = [r for r in REPLICATED if POINT_SEED not in r["config"]]
    assert best_row(plain)["trial_id"] == "t-a" and best_choice(plain) is None
    # By the mean over seeds b's 0.72 beats a's 0.70 (its single best run, 0.80, no longer counts).
    assert best_row(REPLICATED, "mean")["trial_id"] == "t-b"
    # By the lower bound a (two seeds) wins, and its run on the search's seed stands for it.
    row, chosen = best_choice(REPLICATED, "lower")
    assert row["trial_id"] == "t-a" and best_row(REPLICATED, "lower") is row
    assert chosen.seeds == 2 and chosen.pool.df == 1 and chosen.pool.sd == pytest.approx(S)
    half = T1 * S / math.sqrt(2)
    assert (chosen.estimate.value, chosen.estimate.lo, chosen.estimate.hi) == pytest.approx((0.70, 0.70 - half, 0.70 + half))


def test_the_summary_names_the_best_point_with_its_mean_over_seeds(capsys):
    from sweep.report import Outcome, note, print_summary

    print_summary(Outcome(REPLICATED, rule="lower"))
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Best point:"))
    # 0.70 ± 1.2706 (the hand computation above)
    assert line == ("Best point: sm a, selection objective 0.700 over 2 seed(s) ([-0.571, 1.971], pooled run-to-run "
                    "sd 0.141 on 1 d.f.; by the best lower 95 % bound of the mean); not confirmed on fresh draws")
    outcome = Outcome(REPLICATED, rule="mean")
    assert outcome.best_trial() == "t-b" and "**sm b**, selection objective 0.720 over 1 seed(s) (" in note("s", outcome)


def test_the_confirmations_candidates_are_one_per_point_with_its_means_over_seeds():
    from types import SimpleNamespace

    from sweep import finalists
    from sweep.config import ObjectiveConfig
    from sweep.record import Role, Tag
    from sweep.rows import best_row

    def run(trial_id: str) -> SimpleNamespace:
        tags = {Tag.TRIAL_ID: trial_id, Tag.ROLE: Role.TRIAL, Tag.KEY: "k" + trial_id, Tag.CHECKPOINT: "best.pt"}
        return SimpleNamespace(info=SimpleNamespace(run_id="r" + trial_id), data=SimpleNamespace(tags=tags))

    runs = [run(r["trial_id"]) for r in REPLICATED]
    pool = finalists.candidates(REPLICATED, runs, ObjectiveConfig())
    assert list(pool) == ["t-a", "t-b", "t-c"]  # no replicate is a candidate of its own
    a, b, c = pool.values()
    assert (a.run_id, a.point, a.objective) == ("rt-a", "sm a s0", pytest.approx(0.70))
    assert (a.accuracy, a.gan_test) == (pytest.approx(0.85), pytest.approx(0.55))  # (0.9 + 0.8) / 2, (0.7 + 0.4) / 2
    assert (b.objective, c.objective) == (0.72, pytest.approx(0.39))  # c: (0.78 + 0) / 2
    assert (c.accuracy, c.gan_test) == (0.9, 0.6)  # its diverged seed has neither
    assert (a.seeds, b.seeds, c.seeds) == (2, 1, 2)
    # The confirmed line says what the selection number is: a's mean over its two seeds.
    from trainer.stats import Interval

    confirmed = finalists.Confirmed(a, Interval(0.81, 0.77, 0.85), None, Interval(0.81, 0.77, 0.85), samples=1024,
                                    test_images=360, sample_seed=100_000)  # fmt: skip
    assert finalists.describe(confirmed).endswith("; selection objective 0.700 (mean over 2 seeds)")
    assert finalists.describe(replace(confirmed, finalist=b)).endswith("; selection objective 0.720")
    chosen = finalists.finalists(pool, best_row(REPLICATED, "lower")["trial_id"], top_k=2)
    assert [f.trial_id for f in chosen] == ["t-a", "t-b"]  # the choice first, then by mean (b on the front)
    # Without replicates, one candidate per finished trial with its own numbers, as before.
    plain = finalists.candidates([r for r in REPLICATED if POINT_SEED not in r["config"]], runs, ObjectiveConfig())
    assert {t: (f.objective, f.accuracy) for t, f in plain.items()} == {"t-a": (0.80, 0.90), "t-b": (0.72, 0.9),
                                                                         "t-c": (0.78, 0.9)}


def test_resume_reads_a_replicates_point_key_from_tunes_state_as_its_run_has_it():
    """--resume compares the point keys of Tune's ended trials with the MLflow runs' (sweep.state):
    a replicate's key is its point's settings with its own seed, as SweepContext.point_of makes it
    (with the seed among the sampled values, an ended Optuna replicate had no run and was refused)."""
    from sweep.state import _key

    cfg = load_sweep_config("quickstart", [*GRID, "search.replicate={}"])
    points = {p.key: p for p in grid_points(cfg.search)}
    ctx = SweepContext("s", "", "", "", cfg.trainer.model_dump(), cfg.objective, None, 1, points=points)
    first = next(iter(points.values()))
    for config in ({POINT_KEY: first.key}, {POINT_KEY: first.key, POINT_SEED: 10000}):
        assert _key(cfg, config) == ctx.point_of(config).key
    assert _key(cfg, {POINT_KEY: first.key, POINT_SEED: 10000}) == Point(first.overrides, 10000).key != first.key
    cfg = load_sweep_config("quickstart", [*OPTUNA, "search.replicate={}"])
    ctx = SweepContext("s", "", "", "", cfg.trainer.model_dump(), cfg.objective, None, 1, seed=0)
    sampled = {"loss.lam": 1e-3, "loss.mu": 1e-4}
    for config in (sampled, {**sampled, POINT_SEED: 10000}):
        assert _key(cfg, config) == ctx.point_of(config).key
    assert _key(cfg, {**sampled, POINT_SEED: 10000}) == Point(tuple(sorted(sampled.items())), 10000).key

# --- a whole sweep (slow) ----------------------------------------------------------------------


@pytest.mark.slow  # a grid sweep with replication end to end (a Ray cluster, a judge, 3-4 trials)
def test_a_grid_sweep_replicates_its_incumbent_in_runs_of_their_own(ray_cluster, mlflow_server, tmp_path):
    """The tiny grid (two points, two epochs) with its top point replicated on one new seed: each
    replicate is one more MLflow child run keyed by its point and seed, named with that seed, one
    point with its grid run in the analysis, and its seeds measure the run-to-run variance."""
    import mlflow

    from analysis.runs import load
    from helpers import TINY, child_runs, run_sweep
    from sweep import tracking
    from sweep.record import POOLED_PREFIX, Tag

    uri, name, exp = mlflow_server.uri, "replicate", "replicate-test"
    sets = [*TINY, f"tracking.uri={uri}", f"storage_path={tmp_path}", f"experiment={exp}",
            "search.points=[]", "search.replicate={top_k: 1, seeds: 1, share: 0.5}", "confirm.enabled=false",
            "analysis=false"]  # fmt: skip
    assert run_sweep(["--name", name, *sum((["--set", s] for s in sets), [])]) == 0
    parent = tracking.find_parent(mlflow.MlflowClient(uri), exp, name)
    runs = child_runs(uri, exp, parent)
    firsts = [r for r in runs if r.data.params["seed"] == "0"]
    replicates = [r for r in runs if r.data.params["seed"] == "10000"]
    assert sorted(r.info.run_name for r in firsts) == ["sm λ1e-3 μ1e-4 s0", "sm λ1e-4 μ1e-4 s0"]
    assert 1 <= len(replicates) <= 2 and len(runs) == len(firsts) + len(replicates)  # nothing else, nothing twice
    assert len({r.data.tags[Tag.KEY] for r in runs}) == len(runs)
    lam_mu = {(r.data.params["loss.lam"], r.data.params["loss.mu"]): r for r in firsts}
    for r in replicates:
        first = lam_mu[(r.data.params["loss.lam"], r.data.params["loss.mu"])]  # a grid point, another seed
        assert r.info.run_name == first.info.run_name.replace(" s0", " s10000")
        assert r.data.tags[Tag.STATUS] in ("finished", "diverged")
    frame = load(exp, uri, parent)
    by_run = dict(zip(frame["run_id"], frame["config_key"]))
    for r in replicates:  # the analysis sees one point with two seeds
        first = lam_mu[(r.data.params["loss.lam"], r.data.params["loss.mu"])]
        assert by_run[r.info.run_id] == by_run[first.info.run_id]
    finished = [r for r in replicates if r.data.tags[Tag.STATUS] == "finished"]
    metrics = mlflow.MlflowClient(uri).get_run(parent).data.metrics
    if finished:  # a point with two finished seeds: the driver pools the training seed's noise
        assert metrics[f"{POOLED_PREFIX}objective_df"] >= 1


def test_the_searcher_says_when_its_choice_changes_and_the_report_can_choose_from_tunes_rows(capsys):
    from sweep.choice import point_values
    from sweep.record import Status

    cfg = load_sweep_config("quickstart", [*GRID, "search.replicate={top_k: 1, seeds: 1, share: 0.5, choose: mean}"])
    points = {p.key: p for p in grid_points(cfg.search)}
    grid = search.grid_searcher(cfg, list(points))
    a, b = grid.suggest("a"), grid.suggest("b")
    grid.on_trial_complete("a", _result(4, 0.8, "finished"))
    grid.on_trial_complete("b", _result(4, 0.7, "finished"))
    r = grid.suggest("r")
    assert r == {**a, POINT_SEED: 10000}  # the incumbent, a, replicated
    grid.on_trial_complete("r", _result(4, 0.5, "finished"))  # a: 0.65 over two seeds, below b's 0.7
    names = point_names(cfg.trainer.model_dump(), list(points.values()))
    out = capsys.readouterr().out.splitlines()
    short = lambda key: names[key].removesuffix(" s0")  # noqa: E731
    assert out[0] == (f"  search: its choice is now {short(a[POINT_KEY])}, objective 0.800 over 1 seed(s) (no point "
                      "has two finished seeds yet; by the best mean)")
    # a's two seeds give s² = 2 · 0.15² / 1 = 0.045 on 1 d.f. (s = 0.2121): b's 0.7 ± 12.706 · 0.2121 = ± 2.695.
    assert out[1] == (f"  search: its choice is now {short(b[POINT_KEY])}, objective 0.700 over 1 seed(s) "
                      "([-1.995, 3.395], pooled run-to-run sd 0.212 on 1 d.f.; by the best mean)")
    assert len(out) == 2
    # The same choice from Tune's rows (what the driver's report would read): config and status; a
    # stopped trial has no final value. By the lower bound, a (two seeds) stays: 0.65 − 12.706 ·
    # 0.2121 / √2 = −1.256 is above b's 0.7 − 2.695 = −1.995.
    rows = [{"config": a, "status": Status.FINISHED, "objective": 0.8},
            {"config": b, "status": Status.FINISHED, "objective": 0.7},
            {"config": r, "status": Status.FINISHED, "objective": 0.5},
            {"config": {POINT_KEY: "x"}, "status": Status.STOPPED, "objective": 0.9}]
    values = point_values(rows, lambda row: row["objective"])
    assert values == {choice.point_id(a): [(0.8, False), (0.5, False)], choice.point_id(b): [(0.7, False)]}
    assert choice.choose(values, "mean").point == choice.point_id(b)
    assert choice.choose(values, "lower").point == choice.point_id(a)
