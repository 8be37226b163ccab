"""Reading MLflow: a real sqlite store written in the sweep's layout, the CLI and report_sweep.

The store is written with the MLflow client exactly as the sweep does (parent + child runs,
params as strings from ``trainer.config.flatten``, metrics per epoch, tags, checkpoint files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from helpers import assert_png

from analysis import report_sweep
from analysis.__main__ import main
from analysis.runs import AnalysisError, load, select_parent, sweeps
from trainer import keys
from trainer.config import flatten, load_config
from trainer.stats import t_quantile

SIGMAS = (1e-4, 1e-3, 1e-2)
FRACTIONS = (0.01, 0.1, 1.0)
T0 = 1_700_000_000_000  # ms; explicit start times make "most recent sweep" deterministic


@dataclass
class Store:
    uri: str
    root: Path
    old: str  # parent run ids
    grid: str


def _parent(mc: MlflowClient, exp: str, sweep: str, start: int) -> str:
    run = mc.create_run(exp, start_time=start, run_name=sweep,
                        tags={"sweep.name": sweep, "sweep.role": "parent", "git.commit": "abc"})
    return run.info.run_id


def _trial(mc: MlflowClient, exp: str, parent: str, sweep: str, start: int, overrides: list[str],
           status: str, accs: list[float], gan: float | None, checkpoints: tuple[str, ...] = ("best.pt", "last.pt"),
           params: dict | None = None, curves: bool = False, extra: dict[str, float] | None = None,
           tags: dict[str, str] | None = None) -> str:
    cfg = load_config(None, ["epochs=2", *overrides])
    name = f"{cfg.loss.kind} λ={cfg.loss.lam:.0e} μ={cfg.loss.mu:.0e} s{cfg.seed}"
    run = mc.create_run(exp, start_time=start, run_name=name, tags={
        "mlflow.parentRunId": parent, "sweep.name": sweep, "sweep.role": "trial", "trial.point": name,
        "trial.status": status, "trial.id": f"t{start}", **(tags or {})})
    values = flatten(cfg) if params is None else params
    rid = run.info.run_id
    mc.log_batch(rid, params=[Param(k, str(v)) for k, v in values.items()])  # strings, as the sweep
    metrics = []
    for epoch, acc in enumerate(accs, start=1):
        metrics += [Metric(keys.TEST_ACC, acc, T0, epoch), Metric(keys.EPOCH, epoch, T0, epoch)]
    last = len(accs)
    if gan is not None:
        metrics += [Metric(keys.GAN_TEST, gan, T0, last), Metric(keys.OBJECTIVE, (accs[-1] + gan) / 2, T0, last)]
    if curves:
        metrics += [Metric(keys.density_ratio_key(s), 1 + 10 * s + accs[-1], T0, last) for s in SIGMAS]
        metrics += [Metric(keys.pixel_perturbation_key(f), accs[-1] * (1 - f / 2), T0, last) for f in FRACTIONS]
    metrics += [Metric(key, value, T0, last) for key, value in (extra or {}).items()]
    mc.log_batch(rid, metrics=metrics)
    for name in checkpoints:
        path = Path(mc.tracking_uri.removeprefix("sqlite:///")).parent / "ckpt" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"weights")
        mc.log_artifact(rid, str(path), "checkpoints")
    if checkpoints:  # the sweep tags the checkpoint to use: best.pt once there is one, else last.pt
        mc.set_tag(rid, "trial.checkpoint", f"checkpoints/{checkpoints[0]}")
    mc.set_terminated(rid, "FAILED" if status == "failed" else "FINISHED")
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mc = MlflowClient(tracking_uri=uri)
    art = (root / "artifacts").as_uri()
    exp = mc.create_experiment("quick", artifact_location=f"{art}/quick")
    old = _parent(mc, exp, "old", T0)
    # A known-density dataset's ground-truth metrics, as the groundtruth preset logs them.
    truth = {keys.SCORE_ALIGNMENT: 0.5, keys.FISHER_DIVERGENCE_REL: 0.2}
    _trial(mc, exp, old, "old", T0 + 1, ["loss.preset=score_matching"], "finished", [0.1, 0.2], 0.3, extra=truth)
    _trial(mc, exp, old, "old", T0 + 2, ["loss.preset=baseline"], "finished", [0.1, 0.3], 0.1,
           extra={keys.SCORE_ALIGNMENT: 0.1, keys.FISHER_DIVERGENCE_REL: 0.9})
    grid = _parent(mc, exp, "grid", T0 + 100)
    t = T0 + 101
    sm = ["loss.preset=score_matching"]
    _trial(mc, exp, grid, "grid", t, [*sm, "loss.lam=1e-3", "loss.mu=1e-3"], "finished", [0.5, 0.6], 0.7,
           checkpoints=("last.pt",), curves=True)
    _trial(mc, exp, grid, "grid", t + 1, [*sm, "loss.lam=1e-3", "loss.mu=1e-4"], "finished", [0.5, 0.8], 0.4)
    _trial(mc, exp, grid, "grid", t + 2, [*sm, "loss.lam=1e-3", "loss.mu=1e-4", "seed=1"], "finished",
           [0.5, 0.7], 0.5)
    _trial(mc, exp, grid, "grid", t + 3, [*sm, "loss.lam=1e-4", "loss.mu=1e-3"], "diverged", [0.3], None,
           checkpoints=())
    _trial(mc, exp, grid, "grid", t + 4, [*sm, "loss.lam=1e-4", "loss.mu=1e-4"], "stopped", [0.9], 0.9)
    _trial(mc, exp, grid, "grid", t + 5, ["loss.preset=baseline"], "finished", [0.4, 0.75], 0.6, curves=True)
    _trial(mc, exp, grid, "grid", t + 6, ["loss.preset=grad_norm"], "finished", [0.4, 0.7], 0.8, curves=True)
    mc.set_terminated(old)
    mc.set_terminated(grid)

    exp = mc.create_experiment("unfinished", artifact_location=f"{art}/unfinished")
    parent = _parent(mc, exp, "s", T0)
    _trial(mc, exp, parent, "s", T0 + 1, [], "running", [0.1], None)
    _trial(mc, exp, parent, "s", T0 + 2, [], "diverged", [0.1], None)

    exp = mc.create_experiment("bogus", artifact_location=f"{art}/bogus")
    parent = _parent(mc, exp, "s", T0)
    _trial(mc, exp, parent, "s", T0 + 1, [], "finished", [0.1, 0.2], 0.3)
    _trial(mc, exp, parent, "s", T0 + 2, [], "exploded", [0.1], None)  # no status the sweep writes

    exp = mc.create_experiment("textual", artifact_location=f"{art}/textual")
    parent = _parent(mc, exp, "s", T0)
    _trial(mc, exp, parent, "s", T0 + 1, [], "finished", [0.1, 0.2], 0.3)
    params = {**flatten(load_config(None, ["epochs=2"])), "loss.lam": "1e-3 (edited)"}  # a run edited by hand
    _trial(mc, exp, parent, "s", T0 + 2, [], "finished", [0.1, 0.2], 0.3, params=params)

    exp = mc.create_experiment("foreign", artifact_location=f"{art}/foreign")
    parent = _parent(mc, exp, "s", T0)
    _trial(mc, exp, parent, "s", T0 + 1, [], "finished", [0.1, 0.2], 0.3, params={"lr": 0.1})
    return Store(uri, root, old, grid)


def test_load_types_columns_and_values(store):
    frame = load("quick", store.uri, store.grid)
    assert len(frame) == 7 and set(frame["sweep"]) == {"grid"} and set(frame["parent_run_id"]) == {store.grid}
    for col in ("lam", "mu", "sigma", "test_acc", "gan_test", "objective"):
        assert pd.api.types.is_float_dtype(frame[col]), col
    for col in ("seed", "epochs", "epochs_done"):
        assert pd.api.types.is_integer_dtype(frame[col]), col
    row = frame.set_index("run_name").loc["score_matching λ=1e-03 μ=1e-04 s1"]
    assert (row["loss"], row["lam"], row["mu"], row["sigma"], row["seed"]) == ("score_matching", 1e-3, 1e-4, 0.01, 1)
    assert (row["status"], row["epochs"], row["epochs_done"]) == ("finished", 2, 2)
    assert row["test_acc"] == pytest.approx(0.7)  # the last epoch's value, not the first
    assert row["objective"] == pytest.approx(0.6)
    assert row["checkpoint_uri"].endswith(f"{row['run_id']}/artifacts/checkpoints/best.pt")
    by_status = frame.set_index("status")
    assert pd.isna(by_status.loc["diverged", "checkpoint_uri"])
    assert np.isnan(by_status.loc["diverged", "gan_test"])
    assert by_status.loc["stopped", "epochs_done"] == 1
    curve = frame[frame["run_name"].str.contains("μ=1e-03") & (frame["status"] == "finished")].iloc[0]
    assert curve["checkpoint_uri"].endswith("checkpoints/last.pt")  # no best.pt: falls back
    assert curve[keys.density_ratio_key(1e-2)] == pytest.approx(1.1 + 0.6)
    for col in ("score_alignment", "fisher_divergence", "fisher_divergence_rel", "sample_loglik"):
        assert frame[col].isna().all()  # not a known-density dataset: present, empty


def test_selection_of_sweeps(store):
    assert sweeps("quick", store.uri)["sweep"].tolist() == ["grid", "old"]  # newest first
    assert select_parent("quick", store.uri) == store.grid
    assert select_parent("quick", store.uri, sweep="old") == store.old
    assert len(load("quick", store.uri)) == 9  # no parent: every trial of the experiment
    with pytest.raises(AnalysisError, match="no sweep named 'nope'"):
        select_parent("quick", store.uri, sweep="nope")


@pytest.mark.parametrize("experiment, message", [
    ("nope", "no MLflow experiment named 'nope'"),
    ("unfinished", r"no finished trials in .* \(1 running, 1 diverged\)"),
    ("foreign", "have no loss.lam/loss.mu params"),
    ("bogus", "is not a sweep trial record: status"),
])
def test_load_bad_input(store, experiment, message):
    with pytest.raises(AnalysisError, match=message):
        load(experiment, store.uri)


@pytest.mark.parametrize("argv, message", [
    (["table2", "--experiment", "nope"], "no MLflow experiment named 'nope'"),
    (["table2", "--experiment", "unfinished"], "no finished trials"),
    (["pareto", "--experiment", "foreign"], "no loss.lam/loss.mu params"),
    (["table2", "--experiment", "textual"], "1 trial(s) in sweep 's' of MLflow experiment 'textual' have a "
                                            "non-numeric loss.lam param (e.g. run 'ce λ=0e+00 μ=0e+00 s0', id "),
    (["table2", "--experiment", "quick", "--metric", "accuracy"], "unknown metric 'accuracy'"),
    (["table2", "--experiment", "quick", "--metric", "score_alignment"], "was not logged"),
    (["pareto", "--experiment", "quick", "--sweep", "nope"], "no sweep named 'nope'"),
    (["pareto", "--experiment", "quick", "--sweep", "old", "--sweep", "grid"], "compare several with `fronts`"),
    (["fronts", "--experiment", "quick", "--sweep", "old", "--sweep", "nope"], "no sweep named 'nope'"),
    (["figures", "--experiment", "quick", "--runs", "nope"], "no trial with run id or name 'nope'"),
    (["figures", "--experiment", "quick", "--sweep", "old"], "no selected trial logged eval/density_ratio/"),
])
def test_cli_bad_input_exits_2_with_one_line(store, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--tracking-uri", store.uri, "--out", str(out)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("analysis: error: ") and message in lines[0]
    assert not out.exists()  # nothing written


def test_cli_missing_store_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["table2", "--experiment", "quick"])  # default URI: sqlite:///mlflow.db here
    assert exit_info.value.code == 2
    assert "no MLflow store at sqlite:///mlflow.db" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def _logged(uri: str, run_id: str) -> set[str]:
    return {Path(f.path).name for f in MlflowClient(tracking_uri=uri).list_artifacts(run_id, "analysis")}


def test_cli_writes_and_logs_to_the_latest_sweep(store, tmp_path, capsys):
    out = tmp_path / "cli"
    main(["table2", "--experiment", "quick", "--tracking-uri", store.uri, "--out", str(out)])
    main(["pareto", "--experiment", "quick", "--tracking-uri", store.uri, "--out", str(out)])
    main(["figures", "--experiment", "quick", "--tracking-uri", store.uri, "--out", str(out)])
    text = capsys.readouterr().out
    printed = [line.strip() for line in text.splitlines() if line.startswith(f"  {out}")]  # under "Files:"
    names = {"table2.png", "table2.md", "table2.csv", "front.parquet", "front.csv", "pareto.png",
             "fig1_density_ratio.png", "fig3_pixel_perturbation.png", "table1.md", "table1.csv"}
    assert {Path(p).name for p in printed} == names and len(printed) == len(names)
    # Besides the paths, the table and the front as text.
    assert "Table 2 (the heatmap's colour: objective):" in text and "| λ ↓ / μ → |" in text
    # sm λ1e-3 μ1e-4 has two seeds, (0.8, 0.4) and (0.7, 0.5): as a point (0.75, 0.45), which the
    # baseline (0.75, 0.6) dominates. The front, (0.75, 0.6), (0.7, 0.8), dominates 0.75·0.6 + 0.7·0.2.
    # Their run-to-run sd, 0.071 on 1 d.f., separates no dominated point from its dominator: all four
    # points are on the candidate front.
    assert "Pareto front of test_acc and gan_test: 2 point(s) on the front of the point estimates, 4 not " \
           "separably dominated" in text
    line = next(line for line in text.splitlines() if line.startswith("hypervolume "))
    assert line.startswith("hypervolume 0.590 [") and "(reference point test_acc=0, gan_test=0; 95 % interval" in line
    logged = MlflowClient(tracking_uri=store.uri).get_run(store.grid).data.metrics
    assert logged["sweep/hypervolume"] == pytest.approx(0.59)
    assert logged["sweep/hypervolume_lo"] <= 0.59 <= logged["sweep/hypervolume_hi"]
    assert names <= _logged(store.uri, store.grid)
    for png in out.glob("*.png"):
        assert_png(png)
    front = pd.read_csv(out / "front.csv")
    # The stopped trial (0.9/0.9) would dominate everything; it is left out.
    on = front[front["on_front"]]
    assert set(on["test_acc"]) == {0.75, 0.7} and set(on["gan_test"]) == {0.6, 0.8}
    assert on["seeds"].tolist() == [1, 1] and front["candidate"].all() and len(front) == 4
    table1 = (out / "table1.md").read_text()
    assert table1.index("Baseline ResNet") < table1.index("Grad-Norm") < table1.index("Score-Matching")


def test_report_sweep_writes_and_logs(store, tmp_path):
    paths = report_sweep("quick", store.old, tmp_path / "report", tracking_uri=store.uri)
    assert {"table2.png", "table2.md", "table2.csv", "front.csv", "front.parquet", "pareto.png"} <= set(paths)
    assert "fig1_density_ratio.png" not in paths  # the old sweep logged no curves: skipped
    assert set(paths) <= _logged(store.uri, store.old)
    # Front of the old sweep: (0.2, 0.3) and (0.3, 0.1): 0.3·0.1 + 0.2·0.2 above (0, 0).
    assert MlflowClient(tracking_uri=store.uri).get_run(store.old).data.metrics["sweep/hypervolume"] == pytest.approx(0.07)
    md = paths["table2.md"].read_text()
    # one seed per point and no point with two: values alone (this store logged no intervals), n stated
    assert "| **1e-03** | 20.0% / 30.0% (n=1); objective 0.250 |" in md and "- baseline: 30.0% / 10.0% (n=1)" in md
    # Ground-truth metrics logged: a heatmap and a front against accuracy for each.
    for metric in ("score_alignment", "fisher_divergence_rel"):
        assert_png(paths[f"{metric}_table2.png"])
        front = pd.read_csv(paths[f"{metric}_front.csv"])
        assert front["test_acc"].tolist() == [0.3, 0.2] and front["on_front"].all()  # neither dominates the other


def test_cli_all_trials_default_out_and_no_logging(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = {run: _logged(store.uri, run) for run in (store.old, store.grid)}
    main(["table2", "--experiment", "quick", "--all", "--tracking-uri", store.uri])
    md = (tmp_path / "out" / "analysis" / "quick" / "all" / "table2.md").read_text()
    # The old sweep's λ=1e-3, μ=1e-4 seed joins the grid sweep's two: n=3; its baseline the grid's: n=2.
    # Pooled by hand: accuracy (0.8, 0.7, 0.2) and (0.75, 0.3): (0.20667 + 0.10125)/3 on 3 d.f.;
    # GAN-test (0.4, 0.5, 0.3) and (0.6, 0.1): (0.02 + 0.125)/3.
    sd_acc, sd_gan = np.sqrt(0.30792 / 3), np.sqrt(0.145 / 3)
    half = lambda sd, n: t_quantile(3) * sd / np.sqrt(n)  # noqa: E731
    cell = lambda m, h: f"[{max(m - h, 0) * 100:.1f}, {min(m + h, 1) * 100:.1f}]"  # noqa: E731
    one = f"60.0% {cell(0.6, half(sd_acc, 1))} / 70.0% {cell(0.7, half(sd_gan, 1))} (n=1)"
    three = f"56.7% {cell(0.5667, half(sd_acc, 3))} / 40.0% {cell(0.4, half(sd_gan, 3))} (n=3)"
    row = next(line for line in md.splitlines() if line.startswith("| **1e-03** |"))
    assert row.startswith(f"| **1e-03** | {one}; objective ") and f" | {three}; objective " in row
    assert {run: _logged(store.uri, run) for run in (store.old, store.grid)} == before  # --all logs nothing


# Sweeps that must not be compared: two judges (same split), two selection splits (same judge).
JUDGE_A = {"trial.judge": "judgeA", "judge.key": "ka", "judge.arch": "vgg11_released", "trial.selection_split": "val"}
JUDGE_B = {"trial.judge": "judgeB", "judge.key": "kb", "judge.arch": "vgg11", "trial.selection_split": "val"}
ON_TEST = {**JUDGE_A, "trial.selection_split": "test"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("mixed")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mc = MlflowClient(tracking_uri=uri)
    sm = ["loss.preset=score_matching", "loss.lam=1e-3"]
    for experiment, sweeps_ in (("judges", {"a": JUDGE_A, "b": JUDGE_B}), ("splits", {"a": JUDGE_A, "t": ON_TEST})):
        exp = mc.create_experiment(experiment, artifact_location=f"{(root / 'art').as_uri()}/{experiment}")
        for i, (sweep, tags) in enumerate(sweeps_.items()):
            parent = _parent(mc, exp, sweep, T0 + 100 * i)
            # Validation accuracy ranks the two trials one way, test accuracy the other.
            for j, (mu, val, test, gan) in enumerate(((1e-3, 0.9, 0.5, 0.4), (1e-4, 0.6, 0.8, 0.7))):
                extra = {keys.VAL_ACC: val, keys.FISHER_DIVERGENCE_REL: 0.95 - j / 10,
                         keys.FISHER_DIVERGENCE_REL_FLOOR: 0.9 - j / 10}
                _trial(mc, exp, parent, sweep, T0 + 100 * i + 1 + j, [*sm, f"loss.mu={mu}"], "finished",
                       [0.1, test], gan, extra=extra if tags["trial.selection_split"] == "val" else None, tags=tags)
            mc.set_terminated(parent)
    return uri


@pytest.mark.parametrize("argv,words", [
    (["table2", "--experiment", "judges", "--all"], ["different judges", "judgeA (vgg11_released)", "judgeB (vgg11)"]),
    (["pareto", "--experiment", "judges", "--all"], ["different judges", "'a'", "'b'"]),
    (["figures", "--experiment", "judges", "--all"], ["different judges"]),
    (["table2", "--experiment", "splits", "--all"], ["different splits", "test: 2 trial(s) of sweep 't'",
                                                     "val: 2 trial(s) of sweep 'a'"]),
    (["pareto", "--experiment", "splits", "--all", "--y", "objective"], ["different splits"]),
    (["pareto", "--experiment", "judges", "--sweep", "a", "--x", "test_acc"], ["test_acc is test-set data", "val_acc"]),
])  # fmt: skip
def test_cli_refuses_to_compare_across_judges_or_selection_splits(mixed, tmp_path, capsys, argv, words):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--tracking-uri", mixed, "--out", str(tmp_path), "--no-log"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not list(tmp_path.iterdir())  # refused before writing anything


def test_front_ranks_by_validation_accuracy_and_exports_test_accuracy_beside_it(mixed, tmp_path, capsys):
    main(["pareto", "--experiment", "judges", "--sweep", "a", "--tracking-uri", mixed, "--out", str(tmp_path)])
    front = pd.read_csv(tmp_path / "front.csv")
    # On (val_acc, gan_test) both trials are on the front, best validation accuracy first; the
    # test accuracies (which would rank them the other way) are only reported.
    assert front["val_acc"].tolist() == [0.9, 0.6] and front["test_acc"].tolist() == [0.5, 0.8]
    assert set(front["selection_split"]) == {"val"} and set(front["judge_arch"]) == {"vgg11_released"}
    assert "SELECTED ON THE TEST SET" not in capsys.readouterr().err


def test_trials_selected_on_test_are_said_so_loudly(mixed, tmp_path, capsys):
    main(["table2", "--experiment", "splits", "--sweep", "t", "--tracking-uri", mixed, "--out", str(tmp_path)])
    assert "analysis: SELECTED ON THE TEST SET" in capsys.readouterr().err
    assert "SELECTED ON THE TEST SET" in (tmp_path / "table2.md").read_text()
    main(["pareto", "--experiment", "splits", "--sweep", "t", "--tracking-uri", mixed, "--out", str(tmp_path)])
    assert "analysis: SELECTED ON THE TEST SET" in capsys.readouterr().err
    front = pd.read_csv(tmp_path / "front.csv")
    assert front.loc[front["on_front"], "test_acc"].tolist() == [0.8]  # ranked by test: it selected on it


def test_table2_shows_the_reachable_floor_beside_the_relative_fisher_divergence(mixed, tmp_path):
    main(["table2", "--experiment", "judges", "--sweep", "a", "--metric", "fisher_divergence_rel",
          "--tracking-uri", mixed, "--out", str(tmp_path)])
    md = (tmp_path / "fisher_divergence_rel_table2.md").read_text()  # a file per metric
    assert "fisher_divergence_rel 0.950 (floor 0.900)" in md and "fisher_divergence_rel 0.850 (floor 0.800)" in md
    assert_png(tmp_path / "fisher_divergence_rel_table2.png")


def test_cli_writes_one_file_per_metric(store, tmp_path):
    out = tmp_path / "cli"
    main(["table2", "--experiment", "quick", "--tracking-uri", store.uri, "--out", str(out), "--no-log"])
    before = (out / "table2.png").read_bytes()
    main(["table2", "--experiment", "quick", "--tracking-uri", store.uri, "--out", str(out), "--no-log",
          "--metric", "gan_test"])  # fmt: skip
    assert (out / "table2.png").read_bytes() == before  # the objective's heatmap is untouched
    assert_png(out / "gan_test_table2.png")
    assert (out / "gan_test_table2.md").is_file() and (out / "gan_test_table2.csv").is_file()


def test_cli_fronts_of_two_sweeps_in_one_plot(store, tmp_path, capsys):
    out = tmp_path / "fronts"
    before = _logged(store.uri, store.grid)
    main(["fronts", "--experiment", "quick", "--sweep", "old", "--sweep", "grid", "--tracking-uri", store.uri,
          "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert "hypervolume 0.0700 old (reference point test_acc=0, gan_test=0)" in lines
    assert "hypervolume 0.5900 grid (reference point test_acc=0, gan_test=0)" in lines
    assert_png(out / "fronts.png")
    table = pd.read_csv(out / "fronts.csv")
    assert table.groupby("sweep")["hypervolume"].first().to_dict() == pytest.approx({"old": 0.07, "grid": 0.59})
    assert table["sweep"].value_counts().to_dict() == {"grid": 2, "old": 2}
    assert _logged(store.uri, store.grid) == before  # several sweeps: nothing logged


def test_a_sweep_named_with_name_is_found_in_its_own_experiment_and_the_error_says_so(tmp_path, capsys):
    """``--name intr`` without ``experiment`` in the config makes experiment ``intr``: comparing it
    with the quickstart in experiment ``quickstart`` says where it is and how to put sweeps together."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mc = MlflowClient(tracking_uri=uri)
    for name in ("quickstart", "intr"):
        exp = mc.create_experiment(name, artifact_location=(tmp_path / name).as_uri())
        _trial(mc, exp, _parent(mc, exp, name, T0), name, T0 + 1, [], "finished", [0.5, 0.6], 0.7)
    with pytest.raises(AnalysisError) as err:
        select_parent("quickstart", uri, "intr")
    assert str(err.value) == (
        "no sweep named 'intr' in MLflow experiment 'quickstart'; it is in experiment 'intr' (a sweep's --name "
        "names its experiment unless the config sets experiment: run sweeps to compare with --set experiment=NAME, "
        "or pass --experiment intr)")
    with pytest.raises(AnalysisError) as err:
        select_parent("quickstart", uri, "nope")
    assert str(err.value) == "no sweep named 'nope' in MLflow experiment 'quickstart'"


def test_a_repeated_export_logs_the_hypervolume_once(store, tmp_path, capsys):
    # `pareto` twice (the sweep's own report logs the same way): one point per value, never two at one step.
    for _ in range(2):
        main(["pareto", "--experiment", "quick", "--sweep", "grid", "--tracking-uri", store.uri, "--out", str(tmp_path)])
    history = MlflowClient(tracking_uri=store.uri).get_metric_history(store.grid, "sweep/hypervolume")
    steps = [m.step for m in history]
    assert len(steps) == len(set(steps)) and [m.value for m in history].count(pytest.approx(0.59)) == 1, history


@pytest.mark.slow  # 5 s: SQLite's busy timeout runs out before the refusal
def test_a_store_locked_by_another_process_is_one_line_and_exit_2(store, tmp_path, capsys):
    # Another process holds an exclusive lock (a long write, a backup tool): a traceback after 20 s.
    import shutil
    import subprocess
    import sys

    db = tmp_path / "mlflow.db"
    shutil.copyfile(store.uri.removeprefix("sqlite:///"), db)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\ncon = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "con.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep(600)\n", str(db)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit) as exit_info:
            main(["table2", "--experiment", "quick", "--tracking-uri", f"sqlite:///{db}", "--out", str(tmp_path / "o")])
    finally:
        holder.kill()
        holder.wait()
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"analysis: error: the MLflow store sqlite:///{db} cannot be read (database is locked): another "
                     "process holds it; run this again once it is done"], lines
    assert not (tmp_path / "o").exists()
