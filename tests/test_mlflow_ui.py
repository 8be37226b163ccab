"""The MLflow UI as a user meets it: the link the driver prints, opened in headless Chromium.

The tiny sweep's link must open the runs table (not MLflow 3's GenAI overview) in the sweep's
shared view: every trial listed by its point name, best objective first, the columns a reader
needs in the README's order and all on the first screen at 1600 px, the parent run told apart from
the trials by its name, and the diverged trial marked as no success. Needs Playwright's Python package and a
Chromium binary (Debian's ``/usr/bin/chromium``); skipped with the reason when either is missing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlflow
import pytest

from sweep.record import VIEW_STATE_KEY, VIEW_STATE_TAG
from sweep.tracking import parent_name

# The README's order of the runs table: objective, validation accuracy, GAN-test, test accuracy, λ, μ, status.
README_COLUMNS = ["eval/objective", "val/acc", "eval/gan_test", "test/acc", "loss.lam", "loss.mu", "trial.status"]

CHROMIUM = os.environ.get("SWEEP_TEST_CHROMIUM", "/usr/bin/chromium")


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt install chromium, or set SWEEP_TEST_CHROMIUM)")
    return sync_playwright


def _printed_link(uri: str, experiment_id: str) -> str:
    """The link in the driver's closing "Open the MLflow UI" lines."""
    from sweep.driver import _ui

    line = _ui(uri, experiment_id)
    assert line.startswith("open http://")
    return line.split()[1]


def test_the_experiment_carries_the_runs_table_view(tiny_sweep):
    mc = mlflow.MlflowClient(tiny_sweep.tracking_uri)
    exp = mc.get_experiment_by_name(tiny_sweep.experiment)
    state = json.loads(exp.tags[f"{VIEW_STATE_TAG}{VIEW_STATE_KEY}"])
    assert state["orderByKey"] == "metrics.`eval/objective`" and state["orderByAsc"] is False
    assert "tags.`trial.status`" in state["selectedColumns"]
    # The UI lists a group's columns alphabetically unless columnOrder says otherwise.
    ordered = [c.split("`")[1] for c in state["columnOrder"] if c.startswith(("metrics.", "params.", "tags."))]
    assert ordered == README_COLUMNS
    link = _printed_link(tiny_sweep.tracking_uri, exp.experiment_id)
    assert link == (f"{tiny_sweep.tracking_uri}/#/experiments/{exp.experiment_id}/runs"
                    f"?workflowType=machine_learning&viewStateShareKey={VIEW_STATE_KEY}")


def test_printed_link_shows_readable_runs_best_first_and_the_diverged_run_failed(tiny_sweep, tmp_path):
    sync_playwright = _playwright()
    mc = mlflow.MlflowClient(tiny_sweep.tracking_uri)
    exp = mc.get_experiment_by_name(tiny_sweep.experiment)
    link = _printed_link(tiny_sweep.tracking_uri, exp.experiment_id)
    names = ["sm λ1e-3 μ1e-4 s0", "sm λ1e-4 μ1e-4 s0", "base s0", "base optim.lr=1e12 s0"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(link)
            page.get_by_text("base optim.lr=1e12 s0", exact=True).wait_for(timeout=90_000)
            page.screenshot(path=str(tmp_path / "runs-table.png"))
            body = page.inner_text("body")
            assert "shared view" in body  # the sweep's view state was found and applied
            assert "Sort: eval/objective" in body.replace("\n", " ")
            # The columns in the README's order, all on the first screen: inside the table's
            # visible width at 1600 px, beside MLflow's assistant panel when it is open.
            visible = page.locator(".ag-center-cols-viewport").first.bounding_box()
            right = visible["x"] + visible["width"]
            boxes = [page.get_by_role("columnheader", name=h, exact=True).first.bounding_box() for h in README_COLUMNS]
            lefts = [b["x"] for b in boxes]
            assert lefts == sorted(lefts), list(zip(README_COLUMNS, lefts))
            assert all(b["x"] + b["width"] <= right + 1 for b in boxes), (right, list(zip(README_COLUMNS, boxes)))
            # Every trial is listed flat (no parent to expand), each name whole in the name column.
            shown = [page.get_by_text(n, exact=True) for n in names]
            assert all(s.count() == 1 and s.first.is_visible() for s in shown)
            tops = [s.first.bounding_box()["y"] for s in shown]
            objectives = {r.info.run_name: r.data.metrics.get("eval/objective", -1.0)
                          for r in mc.search_runs([exp.experiment_id], "tags.`sweep.role` = 'trial'")}
            assert [n for _, n in sorted(zip(tops, names))] == sorted(names, key=lambda n: -objectives[n])

            def row(name: str):
                row_id = page.locator('[role="row"]', has_text=name).first.get_attribute("row-id")
                return page.locator(f'[role="row"][row-id="{row_id}"]')

            def icon_colour(name: str) -> tuple[int, ...]:
                icon = row(name).locator('[col-id="runDateAndNestInfo"] [role="img"]').first
                rgb = icon.evaluate("e => getComputedStyle(e).color")
                return tuple(int(v) for v in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3])

            assert "diverged" in " ".join(row("base optim.lr=1e12 s0").all_inner_texts())
            # The parent run is the sweep, named so (trials are named by their points), below them.
            parent = page.get_by_text(parent_name(tiny_sweep.name), exact=True)
            assert parent.count() == 1 and parent.first.is_visible()
            assert parent.first.bounding_box()["y"] > max(tops)
            assert not any(n.startswith("sweep: ") for n in names)
            red, green = icon_colour("base optim.lr=1e12 s0"), icon_colour("base s0")
            assert red[0] > red[1] and green[1] > green[0], (red, green)  # failed icon red, finished green
        finally:
            browser.close()
