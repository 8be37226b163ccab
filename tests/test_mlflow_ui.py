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
import re
import shutil
from pathlib import Path

import mlflow
import pytest

from sweep.record import VIEW_STATE_KEY, VIEW_STATE_TAG
from sweep.tracking import parent_name

# The README's order of the runs table: the objective and the confirmed one (each a value with its
# 95 % interval), λ, μ, status (these five on the first screen), then validation accuracy, GAN-test
# and test accuracy, each with its interval.
README_COLUMNS = ["objective", "confirmed objective", "λ", "μ", "trial.status", "val acc", "GAN-test", "test acc"]
FIRST_SCREEN = README_COLUMNS[:5]
# What a cell of the view may show: a number in three decimals with its interval, a weight as the
# trial names write it (1e-3, 3.16e-4), a status, or "-" for nothing.
CELL = re.compile(r"-|\d\.\d{3}( \[\d\.\d{3}, \d\.\d{3}\])?|\d(\.\d+)?e-?\d+|finished|diverged|stopped|failed|running")

CHROMIUM = os.environ.get("SWEEP_TEST_CHROMIUM", "/usr/bin/chromium")


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt install chromium, or set SWEEP_TEST_CHROMIUM)")
    return sync_playwright


def _interval_text(metrics: dict, key: str) -> str:
    """``0.803 [0.759, 0.846]``: the run's logged metric with its logged interval, as the README shows it."""
    value, lo, hi = metrics[key], metrics.get(f"{key}_lo"), metrics.get(f"{key}_hi")
    return f"{value:.3f}" if lo is None or hi is None else f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def _printed_link(uri: str, experiment_id: str) -> str:
    """The link in the driver's closing "Open the MLflow UI" lines."""
    from sweep.report import ui_command

    line = ui_command(uri, experiment_id)
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
    # No metric or param column: those show cut or raw-precision numbers without their interval.
    assert all(c.startswith("tags.") for c in state["selectedColumns"]), state["selectedColumns"]
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
            # MLflow's machine-learning layout, not its GenAI one (Evaluations, Judges, Prompts).
            nav = page.locator("nav, aside").first.inner_text() if page.locator("nav, aside").count() else body
            assert "Model registry" in body and "Evaluation runs" not in nav and "Judges" not in nav, nav
            # The columns in the README's order, the first five on the first screen: inside the
            # table's visible width at 1600 px, beside MLflow's assistant panel when it is open.
            visible = page.locator(".ag-center-cols-viewport").first.bounding_box()
            right = visible["x"] + visible["width"]
            boxes = [page.get_by_role("columnheader", name=h, exact=True).first.bounding_box() for h in FIRST_SCREEN]
            lefts = [b["x"] for b in boxes]
            assert lefts == sorted(lefts), list(zip(FIRST_SCREEN, lefts))
            assert all(b["x"] + b["width"] <= right + 1 for b in boxes), (right, list(zip(FIRST_SCREEN, boxes)))
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

            def cell(name: str, header: str):
                column = page.get_by_role("columnheader", name=header, exact=True).first.get_attribute("col-id")
                return row(name).locator(f'[col-id="{column}"]').first

            # Each trial's objective and, for the confirmed finalists, its confirmed objective: the
            # logged metric in three decimals with its logged 95 % interval; nothing cut, no float noise.
            runs = {r.info.run_name: r.data.metrics
                    for r in mc.search_runs([exp.experiment_id], "tags.`sweep.role` = 'trial'")}
            confirmed = [n for n in names if "confirm/objective" in runs[n]]
            assert confirmed, "the tiny sweep confirmed no finalist"
            def check_cells(headers: list[str]) -> None:
                for name in names:
                    for header in headers:
                        box = cell(name, header)
                        text = box.inner_text().strip()
                        assert CELL.fullmatch(text), (name, header, text)
                        width, room = box.evaluate("e => [e.scrollWidth, e.clientWidth]")
                        assert width <= room, (name, header, text, width, room)  # whole, not cut

            for name in names:
                m = runs[name]
                objective = cell(name, "objective").inner_text().strip()
                assert objective == _interval_text(m, "eval/objective"), (name, objective, m)
                shown = cell(name, "confirmed objective").inner_text().strip()
                assert shown == (_interval_text(m, "confirm/objective") if name in confirmed else "-"), (name, shown)
            assert re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", cell(confirmed[0], "confirmed objective").inner_text())
            assert cell("base s0", "λ").inner_text().strip() == "-"  # the baseline has no λ
            check_cells(FIRST_SCREEN)
            for name in names:  # MLflow's own start-time column ("42 seconds ago") whole too
                width, room = row(name).locator('[col-id="runDateAndNestInfo"]').first.evaluate(
                    "e => [e.scrollWidth, e.clientWidth]")
                assert width <= room, (name, width, room)
            # The parent run is the sweep, named so (trials are named by their points), below them.
            parent = page.get_by_text(parent_name(tiny_sweep.name), exact=True)
            assert parent.count() == 1 and parent.first.is_visible()
            assert parent.first.bounding_box()["y"] > max(tops)
            assert not any(n.startswith("sweep: ") for n in names)
            red, green = icon_colour("base optim.lr=1e12 s0"), icon_colour("base s0")
            assert red[0] > red[1] and green[1] > green[0], (red, green)  # failed icon red, finished green
            # The columns right of the first screen (the grid renders only the columns in view).
            page.set_viewport_size({"width": 2400, "height": 900})
            page.get_by_role("columnheader", name=README_COLUMNS[-1], exact=True).first.wait_for(timeout=30_000)
            check_cells(README_COLUMNS[len(FIRST_SCREEN):])
            page.screenshot(path=str(tmp_path / "runs-table-wide.png"))
        finally:
            browser.close()
