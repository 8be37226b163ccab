"""The analysis on a real finished tiny sweep (the session's ``tiny_sweep``, an MLflow server).

The sweep calls ``analysis.report_sweep`` at its end: its files must be in the parent run.
"""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow import MlflowClient
from helpers import assert_png

from analysis.runs import AnalysisError, load


def test_load_reads_the_tiny_sweep(tiny_sweep):
    frame = load(tiny_sweep.experiment, tiny_sweep.tracking_uri, tiny_sweep.parent_run_id)
    assert len(frame) == tiny_sweep.points and set(frame["parent_run_id"]) == {tiny_sweep.parent_run_id}
    assert sorted(frame["status"]) == ["diverged", "finished", "finished", "finished"]
    sm = frame[frame["loss"] == "score_matching"]
    assert sorted(zip(sm["lam"], sm["mu"])) == [(1e-4, 1e-4), (1e-3, 1e-4)]  # floats, not strings
    done = frame[frame["status"] == "finished"]
    assert done["epochs_done"].eq(2).all() and done["epochs"].eq(2).all()
    assert done["test_acc"].between(0, 1).all() and done["gan_test"].between(0, 1).all()
    assert done["checkpoint_uri"].str.endswith("checkpoints/best.pt").all()
    # Every finished trial logged each number's 95 % interval beside it, at the same step.
    for col in ("val_acc", "test_acc", "gan_test", "objective"):
        lo, value, hi = done[f"{col}_lo"], done[col], done[f"{col}_hi"]
        shown = done[[f"{col}_lo", col, f"{col}_hi"]]
        assert (lo <= value).all() and (value <= hi).all() and (lo < hi).all(), (col, shown)
    diverged = frame[frame["status"] == "diverged"].iloc[0]  # its worst value, exact: lo = hi = value
    assert diverged["objective"] == diverged["objective_lo"] == diverged["objective_hi"] == 0.0


def test_the_sweep_logged_table2_and_front_to_its_parent(tiny_sweep, tmp_path):
    mc = MlflowClient(tiny_sweep.tracking_uri)
    logged = {f.path for f in mc.list_artifacts(tiny_sweep.parent_run_id, "analysis")}
    expected = {"table2.png", "table2.md", "table2.csv", "front.parquet", "front.csv", "pareto.png"}
    assert {f"analysis/{name}" for name in expected} <= logged
    local = mc.download_artifacts(tiny_sweep.parent_run_id, "analysis", str(tmp_path))
    assert_png(f"{local}/table2.png")
    assert_png(f"{local}/pareto.png")
    assert "- baseline: " in open(f"{local}/table2.md").read()
    front = pd.read_parquet(f"{local}/front.parquet")
    assert len(front) >= 1 and (front["status"] == "finished").all()


def test_fig3b_ranks_the_baselines_pixels_by_each_models_gradients(tiny_sweep, tmp_path, monkeypatch):
    import mlflow
    import numpy as np
    import torch

    from analysis.figures import fig3b_pixel_perturbation
    from trainer import evaluation
    from trainer.evaluate import model_from_checkpoint
    from trainer.evaluation import pixel_perturbation

    calls = []

    def recorded(model, images, labels, explainer=None, **kwargs):
        calls.append((model, explainer))
        return pixel_perturbation(model, images, labels, explainer=explainer, **kwargs)

    monkeypatch.setattr(evaluation, "pixel_perturbation", recorded)
    frame = load(tiny_sweep.experiment, tiny_sweep.tracking_uri, tiny_sweep.parent_run_id)
    paths = fig3b_pixel_perturbation(frame, tmp_path, tracking_uri=tiny_sweep.tracking_uri, images=32, points=4)
    assert set(paths) == {"fig3b_pixel_perturbation.png", "fig3b.csv"}
    assert_png(paths["fig3b_pixel_perturbation.png"])
    table = pd.read_csv(paths["fig3b.csv"], index_col="fraction")
    # One curve per finished trial: the baseline and the two score-matching points.
    assert list(table.columns) == ["Baseline ResNet", "with Score-Matching λ=1e-03 μ=1e-04",
                                   "with Score-Matching λ=1e-04 μ=1e-04"]
    assert table.to_numpy().min() >= 0 and table.to_numpy().max() <= 1

    # The baseline as its own explainer is Fig. 3a's curve of the baseline, computed directly.
    baseline = frame[(frame["loss"] == "ce") & (frame["status"] == "finished")].iloc[0]
    path = mlflow.artifacts.download_artifacts(artifact_uri=baseline["checkpoint_uri"], dst_path=str(tmp_path / "ckpt"),
                                               tracking_uri=tiny_sweep.tracking_uri)
    model, _, data = model_from_checkpoint(path, "cpu")
    fractions = np.logspace(-2, 0, 4)
    direct = pixel_perturbation(model, data.test_x[:32], data.test_y[:32], fractions=fractions)
    np.testing.assert_allclose(table.index, fractions)
    np.testing.assert_allclose(table["Baseline ResNet"], list(direct.values()), rtol=0, atol=1e-12)
    # Every curve scores the baseline's weights; the explainers are the three trials' own models.
    assert len(calls) == 3 and all(m is calls[0][0] for m, _ in calls) and calls[0][1] is calls[0][0]
    head = next(iter(model.state_dict()))  # the first layer's weights tell the models apart
    assert torch.equal(calls[0][0].state_dict()[head], model.state_dict()[head])
    assert not any(torch.equal(e.state_dict()[head], model.state_dict()[head]) for _, e in calls[1:])


def test_fig3b_rejects_a_selection_without_baseline_or_checkpoints(tiny_sweep, tmp_path):
    from analysis.figures import fig3b_pixel_perturbation

    frame = load(tiny_sweep.experiment, tiny_sweep.tracking_uri, tiny_sweep.parent_run_id)
    with pytest.raises(AnalysisError, match="Fig. 3b needs a baseline"):
        fig3b_pixel_perturbation(frame[frame["loss"] != "ce"], tmp_path, tracking_uri=tiny_sweep.tracking_uri)
    with pytest.raises(AnalysisError, match="no finished trial with run id or name 'nope'"):
        fig3b_pixel_perturbation(frame, tmp_path, baseline_run_id="nope", tracking_uri=tiny_sweep.tracking_uri)
    without = frame.assign(checkpoint_uri=None)
    with pytest.raises(AnalysisError, match="has no checkpoint artifact"):
        fig3b_pixel_perturbation(without, tmp_path, tracking_uri=tiny_sweep.tracking_uri)
    assert not list(tmp_path.iterdir())  # nothing written


def test_figures_cli_writes_and_logs_fig3b_on_request(tiny_sweep, tmp_path, capsys):
    from analysis.__main__ import main

    out = tmp_path / "out"
    main(["figures", "--experiment", tiny_sweep.experiment, "--tracking-uri", tiny_sweep.tracking_uri,
          "--parent-run-id", tiny_sweep.parent_run_id, "--out", str(out), "--fig3b", "--fig3b-images", "16"])
    written = {p.name for p in out.iterdir()}
    assert {"fig3b_pixel_perturbation.png", "fig3b.csv", "fig3_pixel_perturbation.png", "table1.md"} <= written
    assert str(out / "fig3b.csv") in capsys.readouterr().out
    logged = {f.path for f in MlflowClient(tiny_sweep.tracking_uri).list_artifacts(tiny_sweep.parent_run_id, "analysis")}
    assert {"analysis/fig3b_pixel_perturbation.png", "analysis/fig3b.csv"} <= logged
