"""The MLflow UI's runs table as a sweep opens it: its columns, their widths and order, the
texts with intervals the trials carry for it, and the address that opens it.

Pure data and functions: :func:`sweep.tracking.write_view_state` stores :func:`view_state` on the
experiment and :class:`sweep.tracking.TrialRun` writes each trial's :func:`view_tags`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from sweep.record import Tag, ViewTag
from trainer import keys
from trainer.stats import Interval


# The runs-table columns of the shared view (MLflow's canonical keys: type.`name`), in the order
# the README describes them: what selected and what was confirmed, the point and its status, then
# the parts the objective trades off. Each number is a ViewTag's text, ``0.803 [0.759, 0.846]``:
# a metric column would cut it (``0.802517361…``) or show float noise (``0.6328125``), and no
# column can show a metric's interval.
VIEW_COLUMNS = (
    f"tags.`{ViewTag.OBJECTIVE}`",
    f"tags.`{ViewTag.CONFIRMED}`",
    f"tags.`{ViewTag.LAM}`",
    f"tags.`{ViewTag.MU}`",
    f"tags.`{Tag.STATUS}`",
    f"tags.`{ViewTag.VAL_ACC}`",
    f"tags.`{ViewTag.GAN_TEST}`",
    f"tags.`{ViewTag.TEST_ACC}`",
)


# Column widths in pixels. On a 1600 px screen with MLflow's assistant panel open, MLflow 3.17 pins
# the run name and its start time left and leaves about 560 px for the others: the objective, the
# confirmed objective, λ, μ and the status fit there (520 px); validation accuracy, GAN-test and test
# accuracy follow to their right (scroll, or close the panel). 150 px holds ``0.803 [0.759, 0.846]``
# (measured: 148 px) and 140 px the start time's icon and ``42 seconds ago``.
RUN_NAME_COLUMN, CREATED_COLUMN = "attributes.`Run Name`", "runDateAndNestInfo"


VIEW_WIDTHS = {
    RUN_NAME_COLUMN: 165, CREATED_COLUMN: 140,
    **dict(zip(VIEW_COLUMNS, (150, 150, 70, 70, 80, 150, 150, 150))),
}


# Metrics shown in the view as text with their interval (trainer.stats.Interval's format).
VIEW_METRICS = {
    keys.OBJECTIVE: ViewTag.OBJECTIVE,
    keys.VAL_ACC: ViewTag.VAL_ACC,
    keys.GAN_TEST: ViewTag.GAN_TEST,
    keys.TEST_ACC: ViewTag.TEST_ACC,
}


def with_interval(metrics: Mapping[str, Any], key: str) -> str | None:
    """Metric ``key`` of ``metrics`` with its logged 95 % interval, ``0.803 [0.759, 0.846]`` (three
    decimals: :class:`trainer.stats.Interval`'s format); the value alone without interval ends;
    None when the metric is missing or not a finite number."""
    value = metrics.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(float(value)):
        return None
    lo, hi = metrics.get(keys.lo_key(key)), metrics.get(keys.hi_key(key))
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and math.isfinite(lo) and math.isfinite(hi):
        return str(Interval(float(value), float(lo), float(hi)))
    return f"{float(value):.3f}"


def view_tags(metrics: Mapping[str, Any]) -> dict[str, str]:
    """The runs table's text tags (:class:`sweep.record.ViewTag`) of the metrics present."""
    texts = {tag: with_interval(metrics, key) for key, tag in VIEW_METRICS.items()}
    return {str(tag): text for tag, text in texts.items() if text is not None}


def view_state() -> dict[str, Any]:
    """The runs table a sweep's experiment opens on: its columns in VIEW_COLUMNS' order and
    VIEW_WIDTHS, sorted by the objective (the metric: a sort needs no shown column).

    The MLflow 3 UI reads experiment tag ``mlflow.sharedViewState.<key>`` (JSON of its search
    facets and UI state) when the page URL has ``?viewStateShareKey=<key>``. It lists selected
    columns alphabetically within each group unless ``columnOrder`` says otherwise (a column's
    width is applied only to columns named there). Sorting by a metric lists the runs flat (the
    UI nests child runs only in its default start-time order), so every trial is visible at once;
    the parent, which has no ``eval/objective``, sorts last and is told apart by its name
    (:func:`parent_name`): MLflow 3.17 drops pinned rows (``runsPinned``) from a shared view.
    """
    return {
        "searchFilter": "",
        "orderByKey": f"metrics.`{keys.OBJECTIVE}`",
        "orderByAsc": False,
        "lifecycleFilter": "Active",
        "selectedColumns": list(VIEW_COLUMNS),
        "columnOrder": [RUN_NAME_COLUMN, CREATED_COLUMN, *VIEW_COLUMNS],
        "columnWidths": dict(VIEW_WIDTHS),
        "runsHiddenMode": "SHOW_ALL",
    }


def runs_table_url(base: str, experiment_id: str, share_key: str | None = None) -> str:
    """The MLflow UI address of an experiment's runs table (not MLflow 3's GenAI overview)."""
    # The view state is read on the runs tab's route only (…/runs), not on the bare experiment's.
    url = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return url + (f"&viewStateShareKey={share_key}" if share_key else "")
