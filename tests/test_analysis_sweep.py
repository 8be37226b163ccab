"""The analysis on a real finished tiny sweep (the session's ``tiny_sweep``, an MLflow server).

The sweep calls ``analysis.report_sweep`` at its end: its files must be in the parent run.
"""

from __future__ import annotations

import pandas as pd
from mlflow import MlflowClient
from test_analysis_table2 import assert_png

from analysis.runs import load


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
