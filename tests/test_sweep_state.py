"""``--resume`` of a sweep whose records were damaged or edited: Tune's experiment state that does
not parse, the MLflow parent or a finished child deleted (as from the UI), a point with two active
runs, a corrupt Optuna study. Each is refused before Ray starts (exit 2, one line naming what is
wrong and what to do, nothing written) or repaired where the repair loses nothing; the way out the
line names is then taken and the sweep finishes. A grid sweep never ends as done without every
point.

Real drivers in subprocesses (joining the session's Ray, as ``--address`` would). Each test works
in its own folder with its own sqlite store: a copy of one finished sweep (sqlite file, Ray
results, lock file) for the refusals, whose artifacts only the original holds; a sweep of its own
where the test continues it past a fault that re-runs trials.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, ViewType

from helpers import TINY
from sweep import kill_points
from sweep.record import Tag
from trainer import keys

REPO = Path(__file__).resolve().parents[1]
NAME = "st"


def _args(*extra: str, resume: bool = False, name: str = NAME) -> list[str]:
    # Relative store and results (the defaults, made absolute against the working folder), so a
    # copy of the folder is a sweep of its own.
    sets = [*TINY, "trainer.epochs=2", "max_concurrent_trials=1", "search.grid.loss.lam=[1.0e-3]",
            "search.points=[{loss.preset: baseline}]", "analysis=false", "confirm.enabled=false", *extra]  # fmt: skip
    return [sys.executable, "-m", "sweep.run", "--name", name, *sum((["--set", s] for s in sets), []),
            *(["--resume"] if resume else [])]  # fmt: skip


def _env(cluster, kill_at: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": cluster.address, **cluster.env,
           "TUNE_GLOBAL_CHECKPOINT_S": "0"}  # fmt: skip
    env.pop(kill_points.ENV_KILL_AT, None)
    if kill_at:
        env[kill_points.ENV_KILL_AT] = kill_at
    return env


def _drive(cwd: Path, cluster, *extra: str, resume: bool = False, kill_at: str | None = None,
           timeout: float = 900) -> subprocess.CompletedProcess:  # fmt: skip
    return subprocess.run(_args(*extra, resume=resume), cwd=cwd, env=_env(cluster, kill_at), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _refused(done: subprocess.CompletedProcess) -> str:
    """The driver exited 2 with one error line and no traceback; the line."""
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-4000:]
    assert "Traceback" not in out and "trials:" not in out, out[-4000:]  # refused before any trial
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, done.stderr[-4000:]
    return lines[0]


def _client(folder: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")


def _runs(mc: MlflowClient, role: str, view: int = ViewType.ALL) -> list:
    exp = mc.get_experiment_by_name(NAME)
    return mc.search_runs([exp.experiment_id], f"tags.`{Tag.ROLE}` = '{role}'", run_view_type=view)


def _snapshot(mc: MlflowClient) -> list[tuple]:
    """Every run of the sweep's experiment as (id, lifecycle, status, tags): what a refusal must not touch."""
    exp = mc.get_experiment_by_name(NAME)
    runs = mc.search_runs([exp.experiment_id], "", run_view_type=ViewType.ALL)
    return sorted((r.info.run_id, r.info.lifecycle_stage, r.info.status, sorted(r.data.tags.items())) for r in runs)


def _shell(command: str, cwd: Path) -> None:
    """Run a command a refusal printed, as the user would paste it."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # an activated venv: mlflow
    done = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "PATH": path})  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def finished(_ray_head, tmp_path_factory) -> Path:
    """One finished 2-point grid sweep (a score-matching point and the baseline) in its own folder."""
    folder = tmp_path_factory.mktemp("state-finished")
    done = _drive(folder, _ray_head)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return folder


def _copy(finished: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "sweep"
    shutil.copytree(finished, folder, symlinks=True)
    return folder


@pytest.mark.slow  # a sweep of its own, refused once, then continued to the end
@pytest.mark.timeout(1200)
def test_a_tune_state_that_does_not_parse_is_refused_and_the_named_way_out_finishes_every_point(ray_cluster,
                                                                                                 tmp_path):  # fmt: skip
    # Was: Tune logged "Failed to restore the run state", started over, ran a part and exit 0.
    done = _drive(tmp_path, ray_cluster)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    (state,) = (tmp_path / "sweep_results" / NAME).glob("experiment_state-*.json")
    state.write_bytes(state.read_bytes()[: len(state.read_bytes()) // 2])  # a half-written copy, a full disk
    mc = _client(tmp_path)
    before = _snapshot(mc)
    line = _refused(_drive(tmp_path, ray_cluster, resume=True))
    assert "Ray Tune's state of sweep 'st' cannot be read" in line and state.name in line, line
    assert _snapshot(mc) == before
    # The way out it names: move the Ray folder aside, and the same command continues every point
    # from its MLflow run (here each is finished: nothing is trained again, nothing duplicated).
    move = re.search(r"\((mv [^)]*)\)", line).group(1)
    _shell(move, tmp_path)
    again = _drive(tmp_path, ray_cluster, resume=True)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    trials = _runs(mc, "trial")
    assert len(trials) == 2 and all(r.info.lifecycle_stage == "active" for r in trials)
    for run in trials:
        assert run.data.tags[Tag.STATUS] == "finished" and run.info.status == "FINISHED", run.info.run_name
        steps = sorted(m.step for m in mc.get_metric_history(run.info.run_id, keys.TRAIN_LOSS))
        assert steps == [1, 2], (run.info.run_name, steps)  # each epoch once
    (parent,) = _runs(mc, "parent")
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials/finished"] == 2


@pytest.mark.slow  # a refused resume, the printed restore command, then a resume to the end
@pytest.mark.timeout(900)
def test_a_deleted_parent_run_is_refused_with_the_command_that_restores_it(finished, ray_cluster, tmp_path):
    # Was: exit 0 with a new parent of the same name; the finished trials orphaned under the old one.
    folder = _copy(finished, tmp_path)
    mc = _client(folder)
    (parent,) = _runs(mc, "parent")
    mc.delete_run(parent.info.run_id)  # what the MLflow UI's Delete does
    before = _snapshot(mc)
    line = _refused(_drive(folder, ray_cluster, resume=True))
    assert f"parent run of sweep 'st' ({parent.info.run_id}) is deleted" in line, line
    assert _snapshot(mc) == before  # no new parent, nothing reopened
    _shell(line.split("restore it with: ")[1].split("; or start")[0], folder)
    assert mc.get_run(parent.info.run_id).info.lifecycle_stage == "active"
    again = _drive(folder, ray_cluster, resume=True)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert [p.info.run_id for p in _runs(mc, "parent")] == [parent.info.run_id]
    trials = _runs(mc, "trial")
    assert len(trials) == 2 and {r.data.tags[Tag.ATTEMPTS] for r in trials} == {"1"}  # nothing ran again


@pytest.mark.slow  # one refused resume
@pytest.mark.timeout(600)
def test_a_deleted_finished_trial_run_is_refused_naming_it_and_how_to_restore_it(finished, ray_cluster, tmp_path):
    # Was: exit 0, counted as finished, its cell silently missing from Table 2.
    folder = _copy(finished, tmp_path)
    mc = _client(folder)
    trial = next(r for r in _runs(mc, "trial") if r.data.tags[Tag.POINT] != "base s0")
    mc.delete_run(trial.info.run_id)
    before = _snapshot(mc)
    line = _refused(_drive(folder, ray_cluster, resume=True))
    assert "1 trial run(s) of sweep 'st' are deleted" in line and trial.data.tags[Tag.POINT] in line, line
    assert f"mlflow runs restore --run-id {trial.info.run_id}" in line
    assert _snapshot(mc) == before
    _shell(line.split("restore them with: ")[1].split("; or start")[0], folder)
    assert mc.get_run(trial.info.run_id).info.lifecycle_stage == "active"


@pytest.mark.slow  # two refused or repaired resumes on copies, one continued
@pytest.mark.timeout(900)
def test_a_point_with_two_active_runs_is_refused_or_repaired_when_the_second_holds_nothing(finished, ray_cluster,
                                                                                          tmp_path):  # fmt: skip
    folder = _copy(finished, tmp_path)
    mc = _client(folder)
    trial = next(r for r in _runs(mc, "trial") if r.data.tags[Tag.POINT] != "base s0")
    # What TrialRun.open creates a point's run with, before anything is logged to it.
    tags = {k: trial.data.tags[k] for k in (Tag.PARENT, Tag.SWEEP, Tag.ROLE, Tag.KEY, Tag.POINT)}
    second = mc.create_run(trial.info.experiment_id, run_name=trial.info.run_name, tags=tags).info.run_id
    mc.log_batch(second, metrics=[Metric(keys.EPOCH, 1, 0, 1)])  # it holds an epoch: not certain which to keep
    before = _snapshot(mc)
    line = _refused(_drive(folder, ray_cluster, resume=True))
    assert f"point {trial.data.tags[Tag.POINT]} of sweep 'st' has 2 active runs" in line, line
    assert f"{trial.info.run_id} (2 epochs, finished)" in line and f"{second} (1 epochs, ?)" in line
    assert f"mlflow runs delete --run-id {second}" in line  # the suggestion keeps the one with the most epochs
    assert _snapshot(mc) == before
    # The user takes that advice; then a second run holding nothing (a driver killed between
    # creating a point's new run and deleting the one it replaces): moved to the trash by itself.
    _shell(line.split("epochs: ")[1].split("), or start")[0], folder)
    assert mc.get_run(second).info.lifecycle_stage == "deleted"
    empty = mc.create_run(trial.info.experiment_id, run_name=trial.info.run_name, tags=tags).info.run_id
    again = _drive(folder, ray_cluster, resume=True)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-4000:]
    assert f"had a second run ({empty}) holding no epoch; moved it to MLflow's trash" in out
    assert mc.get_run(empty).info.lifecycle_stage == "deleted"
    assert mc.get_run(trial.info.run_id).info.lifecycle_stage == "active"


@pytest.mark.slow  # an Optuna sweep killed mid-trial, its study damaged, one refused resume
@pytest.mark.timeout(900)
def test_a_corrupt_optuna_study_is_refused_before_ray_starts(ray_cluster, tmp_path):
    # Was: past the checks, Ray's start and the judge, a raw SQLAlchemy traceback ("database disk
    # image is malformed"), exit 1, the parent left RUNNING.
    optuna_sets = ["search.method=optuna", "search.n_trials=2", "search.seed_with_grid=false", "search.grid={}",
                   "search.points=[]", "search.space.loss.lam={low: 1.0e-5, high: 1.0e-3, log: true}"]  # fmt: skip
    killed = _drive(tmp_path, ray_cluster, *optuna_sets, kill_at="result")
    assert killed.returncode == -9, (killed.stdout + killed.stderr)[-4000:]
    study = tmp_path / "sweep_results" / f"{NAME}-optuna.db"
    data = bytearray(study.read_bytes())
    assert len(data) > 3 * 4096
    data[4096:3 * 4096] = os.urandom(2 * 4096)  # two pages of the b-trees overwritten
    study.write_bytes(bytes(data))
    mc = _client(tmp_path)
    before = _snapshot(mc)
    line = _refused(_drive(tmp_path, ray_cluster, *optuna_sets, resume=True))
    assert f"the Optuna study of sweep 'st' ({study}) is damaged" in line, line
    assert "search.warm_start=[st]" in line
    assert _snapshot(mc) == before


@pytest.mark.slow  # reads a copy of the module's finished sweep (made once)
def test_every_pickle_of_tunes_state_is_walked_not_loaded(finished, tmp_path):
    # tuner.pkl and the pickles embedded in the state are what Tune unpickles on restore: a
    # truncated one is named before Tune gets to it, and nothing of them runs here.
    from sweep import state
    from sweep.config_files import load_sweep_config
    from sweep.preflight import PreflightError

    folder = _copy(finished, tmp_path)
    results = folder / "sweep_results" / NAME
    cfg = load_sweep_config("quickstart", [a for a in _args()[5:] if a != "--set"], name=NAME)
    trials = state.read_tune_state(cfg, str(results))
    assert len(trials) == 2 and all(t.ended for t in trials)
    (tuner := results / "tuner.pkl").write_bytes(tuner.read_bytes()[:-20])
    with pytest.raises(PreflightError, match=r"tuner.pkl: ValueError"):
        state.read_tune_state(cfg, str(results))
    shutil.copyfile(finished / "sweep_results" / NAME / "tuner.pkl", tuner)
    (experiment,) = results.glob("experiment_state-*.json")
    text = experiment.read_text()
    blob = re.search(r'\\"value\\": \\"(80[0-9a-f]+)\\"', text).group(1)
    experiment.write_text(text.replace(blob, blob[: len(blob) // 4 * 2], 1))  # an embedded pickle cut short
    with pytest.raises(PreflightError, match=experiment.name):
        state.read_tune_state(cfg, str(results))


def test_a_grid_sweep_missing_points_is_not_done():
    # Never exit 0 with fewer points than the sweep has: the driver's last check after Tune.
    from sweep.config import ObjectiveConfig
    from sweep.trials import missing_points
    from sweep.points import Point
    from sweep.trial import POINT_KEY, SweepContext

    a, b = Point((("loss.lam", 1e-3),), 0), Point((("loss.lam", 1e-4),), 0)
    ctx = SweepContext("s", "sqlite://", "1", "p", {}, ObjectiveConfig(), None, 1, points={a.key: a, b.key: b},
                       names={a.key: "sm λ1e-3 s0", b.key: "sm λ1e-4 s0"})  # fmt: skip
    assert missing_points([{"config": {POINT_KEY: a.key}}], ctx) == ["sm λ1e-4 s0"]
    assert missing_points([{"config": {POINT_KEY: a.key}}, {"config": {POINT_KEY: b.key}}], ctx) == []
