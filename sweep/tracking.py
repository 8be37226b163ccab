"""Every MLflow write of the sweep: experiments, the parent run, child runs, judges.

Runs are found again by tags rather than remembered, so a retried or resumed trial continues
its own child run and a restarted sweep its own parent run (MLflow's Ray callback would make a
new run per restore instead). Everything goes through an explicit ``MlflowClient`` bound to one
tracking URI, so driver and Ray workers on other nodes agree.
"""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

PARENT_ROLE = "parent"
TRIAL_ROLE = "trial"
JUDGES_EXPERIMENT = "judges"
BATCH = 100  # MLflow accepts at most 100 params / 1000 metrics per log_batch


def client(uri: str) -> MlflowClient:
    """A client bound to ``uri`` (never the process-global tracking URI)."""
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


def _params(values: Mapping[str, Any]) -> list[Param]:
    # MLflow params are strings of at most 6000 characters.
    return [Param(k, str(v)[:6000]) for k, v in values.items()]


def log_params(mc: MlflowClient, run_id: str, values: Mapping[str, Any]) -> None:
    """Log params in batches MLflow accepts."""
    params = _params(values)
    for i in range(0, len(params), BATCH):
        mc.log_batch(run_id, params=params[i : i + BATCH])


def _first_run(mc: MlflowClient, experiment: str, query: str) -> str | None:
    """The id of the first run of ``experiment`` matching ``query``, or None (no such experiment too)."""
    exp = mc.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = mc.search_runs([exp.experiment_id], query, max_results=1)
    return runs[0].info.run_id if runs else None


def find_parent(mc: MlflowClient, experiment: str, sweep: str) -> str | None:
    """The parent run id of sweep ``sweep`` in ``experiment``, or None."""
    return _first_run(mc, experiment, f"tags.`sweep.name` = '{sweep}' and tags.`sweep.role` = '{PARENT_ROLE}'")


def start_parent(
    mc: MlflowClient, experiment_id: str, sweep: str, params: Mapping[str, Any], config_file: Path
) -> str:
    """Create the sweep's parent run with its resolved config, git commit and tags."""
    run = mc.create_run(
        experiment_id,
        run_name=sweep,
        tags={"sweep.name": sweep, "sweep.role": PARENT_ROLE, "git.commit": git_commit()},
    )
    log_params(mc, run.info.run_id, params)
    mc.log_artifact(run.info.run_id, str(config_file))
    return run.info.run_id


def reopen(mc: MlflowClient, run_id: str) -> None:
    """Mark a run running again (a resumed sweep or trial)."""
    mc.update_run(run_id, status="RUNNING")


def finish(mc: MlflowClient, run_id: str, failed: bool = False) -> None:
    mc.set_terminated(run_id, status="FAILED" if failed else "FINISHED")


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

    def open(self, name: str, trial_id: str, params: Mapping[str, Any]) -> str:
        """Find or create the run; count this start in tag ``trial.attempts``. Returns the run id."""
        runs = self.mc.search_runs(
            [self.experiment_id],
            f"tags.`mlflow.parentRunId` = '{self.parent_id}' and tags.`trial.key` = '{self.key}'",
            max_results=1,
        )
        if runs:
            run = runs[0]
            self.run_id = run.info.run_id
            self.attempt = int(run.data.tags.get("trial.attempts", "0")) + 1
            reopen(self.mc, self.run_id)
        else:
            run = self.mc.create_run(
                self.experiment_id,
                run_name=name,
                tags={
                    "mlflow.parentRunId": self.parent_id,
                    "sweep.name": self.sweep,
                    "sweep.role": TRIAL_ROLE,
                    "trial.key": self.key,
                    "trial.point": name,
                    "git.commit": git_commit(),
                },
            )
            self.run_id = run.info.run_id
            self.attempt = 1
            log_params(self.mc, self.run_id, params)
        self.set_tags({"trial.id": trial_id, "trial.status": "running", "trial.attempts": str(self.attempt)})
        return self.run_id

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.mc.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log the finite numeric metrics at ``step`` (the epoch)."""
        now = int(time.time() * 1000)
        rows = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        for i in range(0, len(rows), 1000):
            self.mc.log_batch(self.run_id, metrics=rows[i : i + 1000])

    def log_files(self, files: Iterable[tuple[Path, str]]) -> None:
        """Upload ``(local file, artifact folder)`` pairs."""
        for path, folder in files:
            self.mc.log_artifact(self.run_id, str(path), folder)

    def end(self, status: str) -> None:
        """Tag the trial's final status; a failed trial's run is FAILED, every other FINISHED."""
        self.set_tags({"trial.status": status})
        finish(self.mc, self.run_id, failed=status == "failed")


def find_judge(mc: MlflowClient, key: str) -> str | None:
    """The run id of a finished judge with tag ``judge.key = key``, or None."""
    return _first_run(mc, JUDGES_EXPERIMENT, f"tags.`judge.key` = '{key}' and attributes.status = 'FINISHED'")


def log_judge(mc: MlflowClient, artifact_root: str | None, key: str, params: Mapping[str, Any], path: Path) -> str:
    """Store a trained judge as artifact ``judge.pt`` of a new run in experiment ``judges``."""
    exp_id = ensure_experiment(mc, JUDGES_EXPERIMENT, artifact_root)
    run = mc.create_run(exp_id, run_name=f"judge-{key}", tags={"judge.key": key, "git.commit": git_commit()})
    log_params(mc, run.info.run_id, params)
    staged = path.parent / "judge.pt"
    if path.name != "judge.pt":
        staged = path.parent / f"stage-{key}" / "judge.pt"
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(path.read_bytes())
    mc.log_artifact(run.info.run_id, str(staged))
    finish(mc, run.info.run_id)
    return run.info.run_id


def download(mc: MlflowClient, run_id: str, artifact: str, dst: Path) -> Path:
    """Download one artifact of a run into ``dst`` (a folder) and return the local path."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mc.download_artifacts(run_id, artifact, str(dst)))


def settle_trials(mc: MlflowClient, experiment_id: str, parent_id: str, statuses: Mapping[str, str]) -> None:
    """After the Tuner: make each child run's trial.status agree with Tune's final word.

    A trial the scheduler stopped, or whose worker died, may not have closed its own run;
    ``statuses`` maps Tune trial ids to the final trial.status."""
    runs = mc.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=10000)
    for run in runs:
        status = statuses.get(run.data.tags.get("trial.id", ""))
        if status and (run.data.tags.get("trial.status") != status or run.info.status == "RUNNING"):
            mc.set_tag(run.info.run_id, "trial.status", status)
            finish(mc, run.info.run_id, failed=status == "failed")
