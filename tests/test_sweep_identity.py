"""Points are identified by their key, never by their display name: names carry as many
significant digits as make them unique within the sweep, and the grid Tune runs is over keys."""

from __future__ import annotations

import itertools

import pytest

from sweep.config_files import load_sweep_config
from sweep.points import Point, _fmt, grid_points, point_name, point_names
from sweep.trial import POINT_KEY, SweepContext

# The repro: λ = 1e-3 and 1.2e-3 printed alike in one significant digit.
ALIKE = ["search.grid.loss.lam=[1.0e-3, 1.2e-3]", "search.grid.loss.mu=[1.0e-3]", "search.points=[]"]


def _base_and_points(sets: list[str]) -> tuple[dict, list[Point]]:
    cfg = load_sweep_config("quickstart", sets)
    return cfg.trainer.model_dump(), grid_points(cfg.search)


def test_fmt_keeps_the_short_form_and_adds_only_needed_digits():
    assert _fmt(1e-3) == "1e-3" and _fmt(1.2e-3) == "1e-3"  # one digit: alike
    assert _fmt(1e-3, 2) == "1e-3" and _fmt(1.2e-3, 2) == "1.2e-3"  # trailing zeros dropped
    assert _fmt(1.2345e12, 3) == "1.23e12" and _fmt(0.0, 5) == "0" and _fmt(3, 4) == "3"
    # 17 significant digits tell any two distinct doubles apart
    x, y = 0.1 + 0.2, 0.3
    assert x != y and _fmt(x, 17) != _fmt(y, 17)


def test_points_that_print_alike_get_distinct_names_and_unique_ones_stay_short():
    base, points = _base_and_points(ALIKE + ["search.seeds=[0]"])
    assert len(points) == 2 and len({p.key for p in points}) == 2
    names = point_names(base, points)
    assert sorted(names.values()) == ["sm λ1.2e-3 μ1e-3 s0", "sm λ1e-3 μ1e-3 s0"]
    # a point no other point prints alike keeps its one-digit name
    base, points = _base_and_points(["search.grid.loss.lam=[1.0e-3, 1.0e-4]", "search.grid.loss.mu=[1.0e-3]",
                                     "search.points=[{loss.preset: baseline}]"])  # fmt: skip
    names = point_names(base, points)
    assert sorted(names.values()) == ["base s0", "sm λ1e-3 μ1e-3 s0", "sm λ1e-4 μ1e-3 s0"]


def test_names_are_unique_against_a_brute_force_check_on_crowded_grids():
    # Values 1e-3 .. 1.0999e-3 collide up to the 4th significant digit; every name must differ,
    # and each uses no more digits than its own value needs to stand apart (checked by brute force).
    lams = [1e-3, 1.1e-3, 1.0001e-3, 1.00011e-3, 2e-3]
    sets = [f"search.grid.loss.lam={lams}", "search.grid.loss.mu=[1.0e-3, 1.000001e-3]", "search.points=[]",
            "search.seeds=[0, 1]"]  # fmt: skip
    base, points = _base_and_points(sets)
    names = point_names(base, points)
    assert len(names) == len(points) == len(lams) * 2 * 2
    assert len(set(names.values())) == len(names)
    from sweep.points import apply_point

    for p in points:
        cfg = apply_point(base, p)
        # the fewest digits at which this point's name differs from every other's name at that precision
        need = next(d for d in range(1, 18) if all(
            point_name(cfg, p, d) != point_name(apply_point(base, q), q, d) for q in points if q is not p))
        assert names[p.key] == point_name(cfg, p, need), (names[p.key], need)


def test_points_differing_in_no_shown_value_get_their_key_appended():
    # ce shows no loss weights, so two ce points with different λ print alike at any precision
    base, points = _base_and_points(["search.grid={}", "search.points=[{loss.kind: ce, loss.lam: 0.1},"
                                     " {loss.kind: ce, loss.lam: 0.2}]"])  # fmt: skip
    names = point_names(base, points)
    assert len(set(names.values())) == 2
    for p in points:
        assert names[p.key].endswith(f"#{p.key[:6]}")


def test_the_grid_tune_runs_is_over_keys_and_every_point_is_found_by_its_key():
    pytest.importorskip("ray")
    from sweep.engine.progress import trial_name
    from sweep.engine.tuner import search_setup

    cfg = load_sweep_config("quickstart", ALIKE)
    points = grid_points(cfg.search)
    base = cfg.trainer.model_dump()
    names = point_names(base, points)
    ctx = SweepContext("s", "sqlite://", "1", "p", base, cfg.objective, None, 1,
                       points={p.key: p for p in points}, names=names)  # fmt: skip
    setup = search_setup(cfg, list(ctx.points), "")
    grid = setup.param_space[POINT_KEY]["grid_search"]
    assert sorted(grid) == sorted(p.key for p in points)  # every point runs, none merged
    for key in grid:
        config = {POINT_KEY: key}
        assert ctx.point_of(config) == ctx.points[key]
        assert trial_name(ctx, config) == names[key]


def test_optuna_points_are_named_with_three_significant_digits():
    cfg = load_sweep_config("quickstart", [])
    ctx = SweepContext("s", "sqlite://", "1", "p", cfg.trainer.model_dump(), cfg.objective, None, 1)
    a = ctx.point_of({"loss.lam": 1.23e-3, "loss.mu": 1e-4})
    b = ctx.point_of({"loss.lam": 1.27e-3, "loss.mu": 1e-4})
    assert ctx.name_of(a) == "sm λ1.23e-3 μ1e-4 s0" and ctx.name_of(b) == "sm λ1.27e-3 μ1e-4 s0"


@pytest.mark.parametrize("lams", list(itertools.combinations([1e-3, 1.2e-3, 1.25e-3, 5e-4], 2)))
def test_every_pair_of_grid_values_yields_two_names(lams):
    base, points = _base_and_points([f"search.grid.loss.lam={list(lams)}", "search.grid.loss.mu=[1.0e-3]",
                                     "search.points=[]"])  # fmt: skip
    assert len(set(point_names(base, points).values())) == 2


@pytest.mark.slow  # a tiny two-trial sweep on CPU (about a minute on an idle 2-core machine)
@pytest.mark.timeout(600)
def test_points_that_print_alike_both_run_under_distinct_names_and_a_quoted_value_finishes(ray_cluster, tmp_path, monkeypatch):
    """The issue's repro, with a quote in a string value of the grid: two trials, two runs with
    the right λ each, exit 0, the parent FINISHED with its best run tagged."""
    from mlflow import MlflowClient

    from helpers import TINY, child_runs, run_sweep
    from sweep import tracking
    from sweep.record import Tag

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    data_dir = str(tmp_path / "it's")
    sets = [*TINY, *ALIKE, f"tracking.uri={uri}", f"storage_path={tmp_path / 'ray'}", "experiment=alike",
            "trainer.epochs=1", "judge=null", "trainer.eval.enabled=false", "objective.name=accuracy",
            "analysis=false", f'search.grid.data.data_dir=["{data_dir}"]']  # fmt: skip
    assert run_sweep(["--name", "alike", *sum((["--set", s] for s in sets), [])]) == 0
    mc = MlflowClient(uri)
    parent = tracking.find_parent(mc, "alike", "alike")
    runs = child_runs(uri, "alike", parent)
    assert sorted(float(r.data.params["loss.lam"]) for r in runs) == [1e-3, 1.2e-3]
    by_lam = {float(r.data.params["loss.lam"]): r.info.run_name for r in runs}
    assert by_lam[1e-3].startswith("sm λ1e-3 μ1e-3 ") and by_lam[1.2e-3].startswith("sm λ1.2e-3 μ1e-3 ")
    assert all(data_dir in name for name in by_lam.values())
    tags = mc.get_run(parent).data.tags
    assert mc.get_run(parent).info.status == "FINISHED" and tags[str(Tag.BEST_RUN)] in {r.info.run_id for r in runs}
