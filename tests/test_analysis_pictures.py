"""Every picture the analysis writes, rendered from a small sweep in a real MLflow store: no text
leaves the canvas or runs into another (the per-run pictures' check, tests/helpers.py), the fronts
picture counts what its data holds, and Fig. 1 and Fig. 3a draw each point's interval and give n."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from analysis import figures, fronts, pareto, table2
from analysis.runs import completed, load, select_parent
from helpers import assert_png, text_problems
from trainer import keys
from trainer.config import flatten, load_config
from trainer.stats import seeds_interval

# One xdist worker renders the pictures once (a module fixture would run in each worker).
pytestmark = pytest.mark.xdist_group("analysis_pictures")
T0 = 1_700_000_000_000  # ms
SIGMAS = (1e-4, 1e-3, 1e-2, 1e-1)
FRACTIONS = (0.01, 0.1, 0.3, 1.0)
EXPERIMENT = "pictures"


def _with_interval(key: str, value: float, half: float, step: int) -> list[Metric]:
    return [Metric(key, value, T0, step), Metric(keys.lo_key(key), max(value - half, 0.0), T0, step),
            Metric(keys.hi_key(key), min(value + half, 1.0) if half < 0.5 else value + half, T0, step)]


def _trial(mc: MlflowClient, exp: str, parent: str, sweep: str, start: int, overrides: list[str], status: str,
           acc: float, gan: float | None, confirmed: float | None = None) -> None:
    """A trial run as the sweep writes it: params, tags, last-epoch metrics with their intervals,
    the curves of Fig. 1 and Fig. 3a with theirs, a finalist's confirm/* numbers."""
    cfg = load_config(None, ["epochs=4", *overrides])
    kind = {"ce": "base", "score_matching": "sm", "grad_norm": "gn"}[cfg.loss.kind]
    name = f"{kind} λ{cfg.loss.lam:.0e} μ{cfg.loss.mu:.0e} s{cfg.seed}" if kind == "sm" else f"{kind} s{cfg.seed}"
    run = mc.create_run(exp, start_time=start, run_name=name, tags={
        "mlflow.parentRunId": parent, "sweep.name": sweep, "sweep.role": "trial", "trial.point": name,
        "trial.status": status, "trial.id": f"t{start}", "trial.selection_split": "val", "judge.key": "j1",
        "trial.judge": "judge-run"})
    rid = run.info.run_id
    mc.log_batch(rid, params=[Param(k, str(v)) for k, v in flatten(cfg).items()])
    last = 4 if status == "finished" else 2
    metrics = [Metric(keys.EPOCH, last, T0, last)]
    metrics += _with_interval(keys.VAL_ACC, acc, 0.06, last) + _with_interval(keys.TEST_ACC, acc - 0.01, 0.03, last)
    if gan is not None:
        metrics += _with_interval(keys.GAN_TEST, gan, 0.08, last)
        metrics += _with_interval(keys.OBJECTIVE, (acc + gan) / 2, 0.045, last)
        for s in SIGMAS:
            metrics += _with_interval(keys.density_ratio_key(s), 1 - s * (1 + gan), 0.002 + s / 5, last)
        for f in FRACTIONS:
            metrics += _with_interval(keys.pixel_perturbation_key(f), acc * (1 - f * 0.8), 0.05, last)
    if confirmed is not None:
        metrics += _with_interval(keys.CONFIRM_OBJECTIVE, confirmed, 0.03, 0)
        metrics += _with_interval(keys.CONFIRM_TEST_ACC, acc - 0.02, 0.03, 0)
        metrics += _with_interval(keys.CONFIRM_GAN_TEST, gan - 0.03, 0.05, 0)
    mc.log_batch(rid, metrics=metrics)
    mc.set_terminated(rid, "FAILED" if status == "diverged" else "FINISHED")


def _sweep(mc: MlflowClient, exp: str, name: str, start: int, cells: list[tuple]) -> str:
    parent = mc.create_run(exp, start_time=start, run_name=f"sweep: {name}",
                           tags={"sweep.name": name, "sweep.role": "parent", "trial.selection_split": "val"}).info.run_id
    for i, (overrides, status, acc, gan, confirmed) in enumerate(cells, start=1):
        _trial(mc, exp, parent, name, start + i, overrides, status, acc, gan, confirmed)
    mc.set_terminated(parent)
    return parent


def sm(lam: str, mu: str, *more: str) -> list[str]:
    return ["loss.preset=score_matching", f"loss.lam={lam}", f"loss.mu={mu}", *more]


# A quickstart-like grid: 3 x 3 score-matching cells, one with two seeds, two diverged, the baseline.
GRID = [
    (sm("1e-2", "1e-2"), "diverged", 0.125, None, None),
    (sm("1e-2", "1e-3"), "diverged", 0.130, None, None),
    (sm("1e-2", "1e-4"), "finished", 0.208, 0.180, None),
    (sm("1e-3", "1e-2"), "finished", 0.236, 0.195, None),
    (sm("1e-3", "1e-3"), "finished", 0.854, 0.523, None),
    (sm("1e-3", "1e-4"), "finished", 0.889, 0.711, 0.782),
    (sm("1e-3", "1e-4", "seed=1"), "finished", 0.870, 0.690, None),
    (sm("1e-4", "1e-2"), "finished", 0.896, 0.336, None),
    (sm("1e-4", "1e-3"), "finished", 0.958, 0.641, 0.811),
    (sm("1e-4", "1e-4"), "finished", 0.958, 0.609, None),
    (["loss.preset=baseline"], "finished", 0.972, 0.633, 0.831),
]
SEARCH = [  # a second, smaller sweep of the same experiment, for the fronts of two sweeps
    (sm("3e-4", "3e-4"), "finished", 0.930, 0.660, None),
    (sm("3e-3", "3e-4"), "finished", 0.850, 0.700, None),
    (["loss.preset=baseline"], "finished", 0.972, 0.633, None),
]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    """Every analysis picture of the grid sweep (and the fronts of both sweeps): the Figure each
    was saved from, by name, with the frame and the output folder."""
    root = tmp_path_factory.mktemp("pictures")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mc = MlflowClient(tracking_uri=uri)
    exp = mc.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    _sweep(mc, exp, "grid", T0, GRID)
    _sweep(mc, exp, "search", T0 + 1000, SEARCH)
    frame = load(EXPERIMENT, uri, select_parent(EXPERIMENT, uri, "grid"))
    saved: dict[str, Figure] = {}
    real = Figure.savefig

    def record(self: Figure, fname, *args, **kwargs):
        saved[Path(fname).name] = self
        return real(self, fname, *args, **kwargs)

    out = root / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Figure, "savefig", record)
        table2.write_table2(frame, out)
        pareto.write_pareto(frame, out)
        figures.write_figures(frame, out)
        chosen = figures.select(frame)
        fig3b = pd.DataFrame({m: [0.9 - 0.5 * f for f in FRACTIONS] for m in chosen["model"].unique()},
                             index=list(FRACTIONS))
        figures.plot_fig3b(fig3b, out / "fig3b_pixel_perturbation.png", chosen, "Baseline ResNet", "base s0", 256)
        fronts.write_fronts(EXPERIMENT, ["grid"], out / "one", uri)
        saved["fronts-1.png"] = saved.pop("fronts.png")
        fronts.write_fronts(EXPERIMENT, [], out / "two", uri)
        saved["fronts-2.png"] = saved.pop("fronts.png")
    return {"figures": saved, "frame": frame, "out": out}


PICTURES = [
    "table2.png",
    "pareto.png",
    "fronts-1.png", "fronts-2.png", "fig1_density_ratio.png", "fig3_pixel_perturbation.png",
    "fig3b_pixel_perturbation.png",
]


def test_every_analysis_picture_is_rendered(rendered):
    assert {p if isinstance(p, str) else p.values[0] for p in PICTURES} == set(rendered["figures"])
    for path in rendered["out"].rglob("*.png"):
        assert_png(path)


@pytest.mark.parametrize("name", PICTURES)
def test_no_text_leaves_the_canvas_or_runs_into_another(rendered, name):
    fig = rendered["figures"][name]
    assert text_problems(fig) == [], name


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")) if t.get_text()]


def test_the_fronts_picture_counts_what_its_data_holds(rendered):
    frame = rendered["frame"]
    pool = int((completed(frame) & frame["val_acc"].notna() & frame["gan_test"].notna()).sum())
    assert pool == 9  # 11 trials, 2 diverged
    front = pareto.point_front(frame, "val_acc", "gan_test")
    one = _texts(rendered["figures"]["fronts-1.png"])
    assert any(t.startswith(f"Pareto fronts of 1 sweep in '{EXPERIMENT}'") for t in one), one
    assert any(t.endswith(f"({len(front)} points of {pool} finished trials on the front)") for t in one), one
    two = _texts(rendered["figures"]["fronts-2.png"])
    assert any(t.startswith(f"Pareto fronts of 2 sweeps in '{EXPERIMENT}'") for t in two), two
    assert any(t.startswith("search: ") and "trials of 3 finished trials on the front)" in t for t in two), two


@pytest.mark.parametrize("name", ["fig1_density_ratio.png", "fig3_pixel_perturbation.png"])
def test_fig1_and_fig3a_draw_each_points_interval_and_give_n(rendered, name):
    fig = rendered["figures"][name]
    (ax,) = fig.axes
    assert figures.BARS_NOTE in " ".join(ax.get_title().split())  # wrapped to the axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    # λ1e-3 μ1e-4 ran with two seeds: its curve is their mean, its bars Student's t over them.
    assert any(label.endswith("λ=1e-03 μ=1e-04 (n=2 seeds)") for label in labels), labels
    assert any(label == "Baseline ResNet (n=1 seed)" for label in labels), labels
    bars = [c for c in ax.containers if c.has_yerr]
    assert len(bars) == len(labels)
    for container in bars:
        (lines,) = container[2]
        heights = [abs(seg[1][1] - seg[0][1]) for seg in lines.get_segments()]
        assert len(heights) == len(SIGMAS if name.startswith("fig1") else FRACTIONS) and max(heights) > 0
    # The two-seed point's interval is Student's t over the seeds: wider than either seed's own.
    table, lo, hi, n = figures.curve_intervals(figures.select(rendered["frame"]), keys.PIXEL_PERTURBATION_PREFIX)
    model = next(m for m in table.columns if m.endswith("λ=1e-03 μ=1e-04"))
    assert n[model] == 2 and n["Baseline ResNet"] == 1
    seeds = figures.select(rendered["frame"]).query("model == @model")
    for fraction in FRACTIONS:
        expected = seeds_interval(seeds[keys.pixel_perturbation_key(fraction)].tolist())
        assert (lo.at[fraction, model], hi.at[fraction, model]) == pytest.approx((expected.lo, expected.hi))
    base = rendered["frame"].set_index("run_name").loc["base s0"]  # one seed: the run's own interval, as logged
    assert hi["Baseline ResNet"].tolist() == [base[keys.hi_key(keys.pixel_perturbation_key(f))] for f in FRACTIONS]
