"""Every MLflow write of the sweep's runs: experiments, the parent run, the trials' child runs.

Runs are found again by tags rather than remembered, so a retried or resumed trial continues its
own child run and a restarted sweep its own parent run (MLflow's Ray callback would make a new run
per restore instead). Everything goes through an explicit ``MlflowClient`` bound to one tracking
URI, so driver and Ray workers on other nodes agree. The judges' runs are :mod:`sweep.judge_runs`
(on the helpers here); the runs table's view is :mod:`sweep.runs_view`.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from filelock import FileLock
from mlflow.entities import Metric, Param, Run, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweep.record import (
    BEST_CHECKPOINT,
    BEST_METRIC_PREFIX,
    CHECKPOINTS,
    COUNT_METRIC_PREFIX,
    VIEW_STATE_KEY,
    VIEW_STATE_TAG,
    WARM_START_FILE,
    Role,
    Status,
    Tag,
    ViewTag,
)
from sweep.runs_view import view_state, view_tags, with_interval
from trainer import keys
from trainer.config import flatten

# MLflow logs the creation and migration of a new sqlite store at INFO on every first run.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


def client(uri: str) -> MlflowClient:
    """A client bound to ``uri`` (never the process-global tracking URI).

    Creating the client opens the store and, for a new sqlite file, creates its tables; two
    processes doing that at once would collide ("table ... already exists"), so for sqlite it
    happens under a lock beside the database file.
    """
    if uri.startswith("sqlite:///"):
        with FileLock(f"{uri[len('sqlite:///'):]}.lock"):
            return MlflowClient(tracking_uri=uri)
    return MlflowClient(tracking_uri=uri)


def git_commit() -> str:
    """The commit of the checkout this package runs from, or "unknown" outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def ensure_experiment(mc: MlflowClient, name: str, artifact_root: str | None) -> str:
    """The id of experiment ``name``, created (artifacts under ``artifact_root/``) if missing."""
    exp = mc.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
    return mc.create_experiment(name, artifact_location=location)


MAX_TAG_CHARS = 8000  # MLflow's limit on a tag's value


def tag_texts(values: Mapping[str, Any]) -> dict[str, str]:
    # Plain str keys and values: the names are StrEnums, which MLflow's protobufs need not accept.
    return {str(k): str(v) for k, v in values.items()}


def _params(values: Mapping[str, Any]) -> list[Param]:
    # MLflow params are strings of at most 6000 characters.
    return [Param(k, str(v)[:6000]) for k, v in values.items()]


def log_params(mc: MlflowClient, run_id: str, values: Mapping[str, Any]) -> None:
    """Log params (``log_batch`` splits them into the batches the server accepts)."""
    mc.log_batch(run_id, params=_params(values))


def search_all(mc: MlflowClient, experiment_id: str, query: str, view: int = ViewType.ACTIVE_ONLY) -> list[Run]:
    """Every run of the experiment matching ``query``, page by page (``view``: MLflow's ViewType;
    ALL or DELETED_ONLY to see runs in MLflow's trash too)."""
    runs: list[Run] = []
    token = None
    while True:
        page = mc.search_runs([experiment_id], query, run_view_type=view, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def first_run(mc: MlflowClient, experiment: str, query: str) -> str | None:
    """The id of the first run of ``experiment`` matching ``query``, or None (no such experiment too)."""
    exp = mc.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = mc.search_runs([exp.experiment_id], query, max_results=1)
    return runs[0].info.run_id if runs else None


def _tagged(runs: list[Run], tag: str, value: str) -> str | None:
    """The id of the first of ``runs`` whose tag ``tag`` is ``value``, or None.

    User values (sweep and point names) are compared here, never written into a search filter:
    MLflow's filter grammar has no escape, so a name holding a quote could not be looked up.
    Filters hold only constants and run ids (hex).
    """
    return next((r.info.run_id for r in runs if r.data.tags.get(tag) == value), None)


def find_parent(mc: MlflowClient, experiment: str, sweep: str) -> str | None:
    """The parent run id of sweep ``sweep`` in ``experiment``, or None."""
    exp = mc.get_experiment_by_name(experiment)
    if exp is None:
        return None
    parents = search_all(mc, exp.experiment_id, f"tags.`{Tag.ROLE}` = '{Role.PARENT}'")
    return _tagged(parents, Tag.SWEEP, sweep)


def stored_config(mc: MlflowClient, parent_id: str) -> dict[str, str]:
    """The flattened config a sweep's parent run was created with (its params, as strings)."""
    return dict(mc.get_run(parent_id).data.params)


def parent_name(sweep: str) -> str:
    """The parent run's display name: ``sweep: NAME``, so that the runs table tells it from its
    trials (named by their points) at a glance. Display only: the parent is found by its tags."""
    return f"sweep: {sweep}"


def start_parent(
    mc: MlflowClient, experiment_id: str, sweep: str, params: Mapping[str, Any], config_file: Path
) -> str:
    """Create the sweep's parent run with its resolved config, git commit and tags."""
    run = mc.create_run(
        experiment_id,
        run_name=parent_name(sweep),
        tags=tag_texts({Tag.SWEEP: sweep, Tag.ROLE: Role.PARENT, Tag.COMMIT: git_commit()}),
    )
    log_params(mc, run.info.run_id, params)
    mc.log_artifact(run.info.run_id, str(config_file))
    return run.info.run_id


def open_parent(
    mc: MlflowClient,
    experiment: str,
    artifact_root: str | None,
    sweep: str,
    config: Mapping[str, Any],
    parent_id: str | None,
) -> tuple[str, str]:
    """The experiment id and the sweep's parent run: reopened when ``parent_id`` is given, else
    created with the resolved ``config`` (a JSON-able mapping) as params and as ``sweep.yaml``."""
    experiment_id = ensure_experiment(mc, experiment, artifact_root)
    if parent_id is not None:
        reopen(mc, parent_id)
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "sweep.yaml"
        config_file.write_text(yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True))
        if parent_id is None:
            parent_id = start_parent(mc, experiment_id, sweep, flatten(config), config_file)
        elif not mc.get_run(parent_id).data.params:  # a driver killed between create_run and its params
            log_params(mc, parent_id, flatten(config))
            mc.log_artifact(parent_id, str(config_file))
    split = (config.get("objective") or {}).get("split")
    if split:  # the parent says what its trials selected by, as each trial does
        mc.set_tag(parent_id, str(Tag.SELECTION_SPLIT), str(split))
    return experiment_id, parent_id


def reopen(mc: MlflowClient, run_id: str) -> None:
    """Mark a run running again (a resumed sweep or trial)."""
    mc.update_run(run_id, status="RUNNING")


def finish(mc: MlflowClient, run_id: str, failed: bool = False) -> None:
    mc.set_terminated(run_id, status="FAILED" if failed else "FINISHED")


def log_parent_metrics(mc: MlflowClient, run_id: str, metrics: Mapping[str, float]) -> None:
    """Log sweep-level numbers (e.g. the front's hypervolume, ``sweep/hypervolume``) on a parent run,
    once per step: a value equal to the metric's latest is not logged again (the analysis run twice,
    a resumed sweep's report), and a changed one goes to the next step, so no step holds two."""
    now = int(time.time() * 1000)
    rows = []
    for key, value in metrics.items():
        history = mc.get_metric_history(run_id, key)
        latest = max(history, key=lambda m: (m.step, m.timestamp), default=None)
        if latest is not None and (latest.value == float(value) or (math.isnan(latest.value) and math.isnan(value))):
            continue
        rows.append(Metric(key, float(value), now, 0 if latest is None else latest.step + 1))
    if rows:
        mc.log_batch(run_id, metrics=rows)


def log_warm_start(mc: MlflowClient, run_id: str, sources: list[Mapping[str, Any]]) -> None:
    """Record on the parent run which earlier trials its search learned from.

    Tag ``sweep.warm_start`` lists their run ids (comma-separated, cut at MLflow's 8000
    characters); artifact ``warm_start.json`` holds each one's id, sweep, params and values.
    """
    ids = ",".join(str(s["run_id"]) for s in sources)
    mc.set_tag(run_id, str(Tag.WARM_START), ids[:8000])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / WARM_START_FILE
        path.write_text(json.dumps(list(sources), indent=1, default=str))
        mc.log_artifact(run_id, str(path))


def finish_parent(
    mc: MlflowClient,
    run_id: str,
    trials: int,
    failed: int,
    counts: Mapping[str, int] | None = None,
    best: Mapping[str, Any] | None = None,
    best_run: str | None = None,
    note: str | None = None,
) -> None:
    """Write the sweep's summary on its parent run and close it.

    ``counts``: trials per status (metrics ``trials/<status>``); ``best``: the best point's
    ``point`` and final metrics (tag ``sweep.best_point``, metrics ``best/objective``,
    ``best/val_acc``, ``best/test_acc``, ``best/gan_test``) and ``best_run`` its run id (tag
    ``sweep.best_run``); ``note``: the run's description in the MLflow UI (Markdown).
    """
    tags: dict[str, Any] = {Tag.TRIALS: trials, Tag.FAILED_TRIALS: failed, Tag.INTERRUPTED: "false"}
    now = int(time.time() * 1000)
    metrics = [Metric(f"{COUNT_METRIC_PREFIX}{k}", float(v), now, 0) for k, v in (counts or {}).items()]
    if best:
        tags.update({Tag.BEST_POINT: best["point"], Tag.BEST_RUN: best_run or ""})
        for key, short in ((keys.OBJECTIVE, "objective"), (keys.VAL_ACC, "val_acc"), (keys.TEST_ACC, "test_acc"),
                           (keys.GAN_TEST, "gan_test")):
            value = best.get(key)
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                metrics.append(Metric(f"{BEST_METRIC_PREFIX}{short}", float(value), now, 0))
    if note:
        tags[Tag.NOTE] = note
    mc.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tag_texts(tags).items()])
    finish(mc, run_id)


def interrupt_parent(mc: MlflowClient, experiment_id: str, parent_id: str, note: str) -> None:
    """After Ctrl-C: mark the parent and every still-running child run KILLED, resumable.

    ``--resume`` reopens the same runs (:func:`reopen`), so nothing is duplicated; the tag
    ``sweep.interrupted`` and the note say so in the UI meanwhile.
    """
    for run in search_all(mc, experiment_id, f"tags.`{Tag.PARENT}` = '{parent_id}'"):
        if run.info.status == "RUNNING":
            mc.set_terminated(run.info.run_id, status="KILLED")
    mc.log_batch(parent_id, tags=[RunTag(k, v) for k, v in tag_texts({Tag.INTERRUPTED: "true", Tag.NOTE: note}).items()])
    mc.set_terminated(parent_id, status="KILLED")


def write_view_state(mc: MlflowClient, experiment_id: str) -> str:
    """Store :func:`view_state` on the experiment; returns the key to open it with."""
    mc.set_experiment_tag(experiment_id, f"{VIEW_STATE_TAG}{VIEW_STATE_KEY}", json.dumps(view_state()))
    return VIEW_STATE_KEY


UNSUCCESSFUL = (Status.FAILED, Status.DIVERGED)  # statuses whose MLflow run ends FAILED


class TrialRun:
    """The child run of one trial, found by its stable key under the parent or created once."""

    def __init__(self, uri: str, experiment_id: str, parent_id: str, sweep: str, key: str) -> None:
        self.mc = client(uri)
        self.experiment_id = experiment_id
        self.parent_id = parent_id
        self.sweep = sweep
        self.key = key
        self.run_id = ""
        self.attempt = 0
        self.checkpoint: str | None = None  # the artifact tag trial.checkpoint names
        self.logged_step = 0  # the last epoch MLflow holds for this run; later logs skip steps <= it

    def find(self) -> Run | None:
        """The point's existing child run under the parent, or None."""
        runs = self.mc.search_runs(
            [self.experiment_id],
            f"tags.`{Tag.PARENT}` = '{self.parent_id}' and tags.`{Tag.KEY}` = '{self.key}'",
            max_results=1,
        )
        return runs[0] if runs else None

    def open(
        self,
        name: str,
        trial_id: str,
        params: Mapping[str, Any],
        judge: str | None = None,
        selection_split: str | None = None,
        objective: str | None = None,
        from_scratch: bool = False,
        restarted: str | None = None,
        shown: Mapping[str, str] | None = None,
    ) -> str:
        """Find or create the run; count this start in tag ``trial.attempts``. Returns the run id.

        ``shown``: the runs table's text tags of the point (:class:`sweep.record.ViewTag`: λ, μ).

        ``judge`` (the judge's run id) is tagged with the judge's key and architecture, read from
        its run in experiment ``judges``; ``selection_split`` (val or test) is what the objective
        read; ``objective`` its definition (JSON).

        A trial continuing from a checkpoint continues its run, and metrics at epochs the run
        already holds are not logged again (Tune may resume from a checkpoint one epoch behind
        what the worker logged). A trial starting ``from_scratch`` whose run already holds epochs
        (its first checkpoint never reached Tune, or the checkpoint was unusable) replaces that
        run: the old one is deleted and a new one created, tagged ``trial.restarted`` with
        ``restarted`` (why), so its history has each epoch once.
        """
        run = self.find()
        previous_attempts = 0
        replaced = None
        if run is not None and from_scratch and self._last_step(run.info.run_id) > 0:
            previous_attempts = int(run.data.tags.get(Tag.ATTEMPTS, "0"))
            # Deleted once its successor exists: a kill in between leaves a second run holding no
            # epoch, which a resume moves to the trash (sweep.state), never a point without a run.
            replaced = run.info.run_id
            restarted = restarted or "started again from scratch"
            run = None
        if run is not None:
            self.run_id = run.info.run_id
            self.attempt = int(run.data.tags.get(Tag.ATTEMPTS, "0")) + 1
            self.checkpoint = run.data.tags.get(Tag.CHECKPOINT)
            self.logged_step = self._last_step(self.run_id)
            reopen(self.mc, self.run_id)
        else:
            run = self.mc.create_run(
                self.experiment_id,
                run_name=name,
                tags=tag_texts(
                    {
                        Tag.PARENT: self.parent_id,
                        Tag.SWEEP: self.sweep,
                        Tag.ROLE: Role.TRIAL,
                        Tag.KEY: self.key,
                        Tag.POINT: name,
                        Tag.COMMIT: git_commit(),
                    }
                ),
            )
            self.run_id = run.info.run_id
            self.attempt = previous_attempts + 1
            log_params(self.mc, self.run_id, params)
            if replaced is not None:
                self.mc.delete_run(replaced)
        tags = {Tag.TRIAL_ID: trial_id, Tag.STATUS: Status.RUNNING, Tag.ATTEMPTS: str(self.attempt), **(shown or {})}
        if restarted:
            tags[Tag.RESTARTED] = restarted
        if judge:
            tags.update(judge_tags(self.mc, judge))
        if selection_split:
            tags[Tag.SELECTION_SPLIT] = selection_split
        if objective:
            tags[Tag.OBJECTIVE] = objective
        self._set_tags(tags)
        return self.run_id

    def _set_tags(self, tags: Mapping[str, str]) -> None:
        self.mc.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tag_texts(tags).items()])

    def set_status(self, status: Status) -> None:
        """Tag the trial's status while it runs (a diverged trial says so before it ends)."""
        self._set_tags({Tag.STATUS: status})

    def _last_step(self, run_id: str) -> int:
        # The trainer reports its epoch as a metric every epoch, so its history has every step.
        return max((m.step for m in self.mc.get_metric_history(run_id, keys.EPOCH)), default=0)

    def last_epoch(self, run_id: str) -> int:
        """The last epoch run ``run_id`` holds metrics of (0: none)."""
        return self._last_step(run_id)

    def holds(self, step: int) -> bool:
        """Whether the run already holds the metrics of epoch ``step`` (logged by an earlier attempt)."""
        return step <= self.logged_step

    def log_metrics(self, metrics: Mapping[str, Any], step: int, tags: Mapping[str, str] | None = None) -> None:
        """Log the finite numeric metrics at ``step`` (the epoch), and ``tags`` (that epoch's per-item
        outcomes) in the same batch, unless the run holds that step."""
        if self.holds(step):
            return
        now = int(time.time() * 1000)
        rows = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        # The view's text beside the metrics, in one batch: the table never shows one without the other.
        # A tag holds 8,000 characters; per-item outcomes of more items (about 45,000) are not kept:
        # their comparisons fall back to the unpaired test.
        both = {**view_tags(metrics), **tag_texts(tags or {})}
        kept = [RunTag(k, v) for k, v in both.items() if len(v) <= MAX_TAG_CHARS]
        self.mc.log_batch(self.run_id, metrics=rows, tags=kept)  # log_batch splits into accepted sizes
        self.logged_step = step

    def log_files(self, files: Iterable[tuple[Path, str]]) -> None:
        """Upload ``(local file, artifact folder)`` pairs."""
        for path, folder in files:
            self.mc.log_artifact(self.run_id, str(path), folder)

    def log_checkpoint(self, path: Path, best_objective: float | None = None) -> None:
        """Upload a checkpoint into ``checkpoints/`` and point tag ``trial.checkpoint`` at it.

        With ``best_objective`` the file is the new best (best.pt); without, it is the latest
        weights (last.pt), which the tag names only while the trial has no best.
        """
        self.mc.log_artifact(self.run_id, str(path), CHECKPOINTS)
        tags: dict[str, str] = {}
        if best_objective is not None:
            self.checkpoint = BEST_CHECKPOINT
            tags = {Tag.CHECKPOINT: BEST_CHECKPOINT, Tag.BEST_OBJECTIVE: repr(float(best_objective))}
        elif self.checkpoint != BEST_CHECKPOINT:
            self.checkpoint = f"{CHECKPOINTS}/{path.name}"
            tags = {Tag.CHECKPOINT: self.checkpoint}
        if tags:
            self._set_tags(tags)

    def end(self, status: Status) -> None:
        """Tag the trial's final status; a failed or diverged trial's run is FAILED (the MLflow UI
        then shows it as no success; the tag tells which), every other FINISHED."""
        self._set_tags({Tag.STATUS: status})
        finish(self.mc, self.run_id, failed=status in UNSUCCESSFUL)


def judge_tags(mc: MlflowClient, run_id: str) -> dict[str, str]:
    """The tags naming a trial's judge: its run id, key and architecture (from the judge's run)."""
    tags = {Tag.JUDGE: run_id}
    try:
        run = mc.get_run(run_id)
    except MlflowException:  # a judge run deleted since: the id alone still tells judges apart
        return tags
    if Tag.JUDGE_KEY in run.data.tags:
        tags[Tag.JUDGE_KEY] = run.data.tags[Tag.JUDGE_KEY]
    if "arch" in run.data.params:  # store_judge logs the judge config, its arch resolved
        tags[Tag.JUDGE_ARCH] = run.data.params["arch"]
    return tags


def download(mc: MlflowClient, run_id: str, artifact: str, dst: Path) -> Path:
    """Download one artifact of a run into ``dst`` (a folder) and return the local path."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mc.download_artifacts(run_id, artifact, str(dst)))


def settle_trials(mc: MlflowClient, experiment_id: str, parent_id: str, statuses: Mapping[str, Status]) -> None:
    """After the Tuner: make each child run's trial.status agree with Tune's final word.

    A trial the scheduler stopped, or whose worker died, may not have closed its own run;
    ``statuses`` maps Tune trial ids to the final status."""
    runs = search_all(mc, experiment_id, f"tags.`{Tag.PARENT}` = '{parent_id}'")
    for run in runs:
        status = statuses.get(run.data.tags.get(Tag.TRIAL_ID, ""))
        if status and (run.data.tags.get(Tag.STATUS) != status or run.info.status == "RUNNING"):
            mc.set_tag(run.info.run_id, str(Tag.STATUS), str(status))
            finish(mc, run.info.run_id, failed=status in UNSUCCESSFUL)


def child_runs(mc: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """Every child run of the sweep's parent (trials, and anything else nested under it)."""
    return search_all(mc, experiment_id, f"tags.`{Tag.PARENT}` = '{parent_id}'")


def log_confirmation(mc: MlflowClient, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, Any]) -> None:
    """Log a finalist's ``confirm/*`` metrics (step 0: measured once; measured again with other
    settings after a resume changed ``confirm.*``: the next step) and the tags saying what they were
    measured on, in one batch, so a run holds all of them or none (sweep.confirm)."""
    now = int(time.time() * 1000)
    step = 1 + max((m.step for k in metrics for m in mc.get_metric_history(run_id, k)), default=-1)
    rows = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(float(v))]
    # The runs table's "confirmed objective": what the sweep reports, the mean over the training
    # seeds where the finalist was retrained (logged after its own confirmation), else its own.
    confirmed = with_interval(metrics, keys.CONFIRM_OBJECTIVE_SEEDS) or with_interval(metrics, keys.CONFIRM_OBJECTIVE)
    shown = {**tags, ViewTag.CONFIRMED: confirmed} if confirmed else tags
    mc.log_batch(run_id, metrics=rows, tags=[RunTag(k, v) for k, v in tag_texts(shown).items()])
