"""What ``--resume`` trusts, read and cross-checked before Ray starts: Tune's experiment state, the
Optuna study, the MLflow parent run and its child runs.

A resume that trusts a damaged or edited record ends in a silent partial sweep: Tune starts over
when it cannot read its state, a soft-deleted parent is replaced by a new one (orphaning the
finished trials under the old), a soft-deleted child drops its cell from Table 2, a corrupt study
fails after the judge. :func:`check` reads each record and compares them; anything unreadable or
inconsistent is a :class:`~sweep.preflight.PreflightError` (exit 2) whose one line names what is
wrong and what the user can do (the command that restores a run from MLflow's trash, the folder to
move aside, or a new name), before anything is written. The one repair made without asking is
certain to lose nothing: a point's second active run that holds no epoch (a driver killed between
creating it and logging to it) is moved to MLflow's trash.

Tune's state is read as the JSON it is and its pickles are walked opcode by opcode
(:mod:`pickletools`), never loaded: nothing of it runs here.
"""

from __future__ import annotations

import json
import pickletools
import shlex
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from mlflow.entities import Run, ViewType

from sweep import tracking
from sweep.config import SweepConfig
from sweep.points import POINT_SEED, Point, grid_points
from sweep.preflight import PreflightError
from sweep.record import Role, Status, Tag
from trainer import keys

TUNE_STATE = "experiment_state-*.json"  # Tune's state file, one per session; it reads the newest
TUNE_TRIAL_CONFIG = "point_key"  # a grid trial's Tune config (sweep.trial.POINT_KEY)
ENDED = (Status.FINISHED, Status.DIVERGED)  # a trial Tune will not run again, by its last result


@dataclass(frozen=True)
class TuneTrial:
    """One trial as Tune's saved state holds it."""

    trial_id: str
    status: str  # Tune's: TERMINATED, ERROR, PENDING, RUNNING, PAUSED
    key: str  # the point's key (MLflow tag trial.key)
    last: dict[str, Any] = field(default_factory=dict)  # its last result

    @property
    def ended(self) -> bool:
        """Ended for good (finished or diverged): a resume will not run it again."""
        return self.status == "TERMINATED" and self.last.get(keys.STATUS) in ENDED


def study_url(cfg: SweepConfig, storage: str) -> str:
    """The Optuna study's storage URL (search.storage, else a sqlite file beside the Ray results)."""
    if cfg.search.storage:
        return cfg.search.storage
    folder = Path(storage) if "://" not in storage else Path.cwd() / "sweep_results"
    return f"sqlite:///{folder / (cfg.name + '-optuna.db')}"


def _walk_pickle(data: bytes) -> None:
    """Raise ValueError unless ``data`` is one whole, well-formed pickle (read, not loaded)."""
    if not data:
        raise ValueError("empty file")
    for _ in pickletools.genops(data):
        pass


def _blobs(value: Any) -> Iterator[str]:
    """The hex pickles Tune embeds in its JSON state (``{"_type": "CLOUDPICKLE_FALLBACK", ...}``)."""
    if isinstance(value, dict):
        if value.get("_type") == "CLOUDPICKLE_FALLBACK" and isinstance(value.get("value"), str):
            yield value["value"]
        for v in value.values():
            yield from _blobs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _blobs(v)


def _files(sweep_dir: str) -> dict[str, bytes]:
    """The top-level files of the sweep's Ray folder (local or a pyarrow filesystem URI) by name."""
    if "://" not in sweep_dir:
        folder = Path(sweep_dir)
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} if folder.is_dir() else {}
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(sweep_dir)
    out = {}
    for info in fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True)):
        if info.type == pyarrow.fs.FileType.File:
            with fs.open_input_stream(info.path) as f:
                out[info.base_name] = f.readall()
    return out


def read_tune_state(cfg: SweepConfig, sweep_dir: str) -> list[TuneTrial] | None:
    """The trials of the sweep's newest Tune state, or None when Tune saved none.

    Raises PreflightError naming the file when the state, or a pickle beside it (``tuner.pkl``,
    the searcher's), cannot be read: Tune would log "Failed to restore the run state" and start
    the sweep over, running a part of it and reporting the rest as never run.
    """
    files = _files(sweep_dir)
    states = sorted(n for n in files if n.startswith("experiment_state-") and n.endswith(".json"))
    if not states:
        return None
    newest = states[-1]
    checked = [newest, *(n for n in files if n.endswith(".pkl")),
               *(n for n in files if n.endswith(".json") and n.startswith(("basic-variant-state-", "search")))]
    trials: list[TuneTrial] = []
    for name in checked:
        try:
            if name != newest:  # Tune pickles some of these whatever their suffix (basic-variant-state-*.json)
                _walk_pickle(files[name]) if files[name][:1] == b"\x80" else json.loads(files[name])
                continue
            data = json.loads(files[name])
            for json_state, metadata in data["trial_data"]:
                trial = json.loads(json_state)
                meta = json.loads(metadata)
                for blob in _blobs(trial):
                    _walk_pickle(bytes.fromhex(blob))
                trials.append(TuneTrial(trial["trial_id"], trial["status"], _key(cfg, trial["config"]),
                                        dict(meta.get("last_result") or {})))  # fmt: skip
        except Exception as e:  # noqa: BLE001 - whatever the damage, the answer is the same
            raise PreflightError(_unreadable(cfg, sweep_dir, name, e)) from None
    return trials


def _key(cfg: SweepConfig, config: dict[str, Any]) -> str:
    """The point key of a Tune trial's config, as :meth:`sweep.trial.SweepContext.point_of` makes it
    (a replicate's, with :data:`POINT_SEED`: its point's settings with that seed)."""
    seed = config.get(POINT_SEED)
    if TUNE_TRIAL_CONFIG in config:
        key = str(config[TUNE_TRIAL_CONFIG])
        if seed is None:
            return key
        point = next((p for p in grid_points(cfg.search) if p.key == key), None)
        return key if point is None else Point(point.overrides, int(seed)).key
    sampled = tuple(sorted((k, v) for k, v in config.items() if k != POINT_SEED))
    return Point(sampled, cfg.search.seeds[0] if seed is None else int(seed)).key


def _unreadable(cfg: SweepConfig, sweep_dir: str, name: str, error: Exception) -> str:
    reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}" if str(error) else type(error).__name__
    head = f"--resume: Ray Tune's state of sweep {cfg.name!r} cannot be read ({sweep_dir}/{name}: {reason}), so " \
           "Tune would start the sweep over"
    if cfg.search.method == "grid" and "://" not in sweep_dir:
        moved = shlex.quote(f"{sweep_dir}.damaged")
        return (f"{head}; to continue every point from its MLflow run instead (each unfinished one from its last "
                f"evaluation's checkpoint), move the folder aside (mv {shlex.quote(sweep_dir)} {moved}) and run "
                "the same command, or start under a new name (--name)")
    return f"{head}; start under a new name (--name NEW --set 'search.warm_start=[{cfg.name}]' learns from its trials)"


def _restore_command(uri: str, run_ids: list[str]) -> str:
    """The shell command that takes ``run_ids`` out of MLflow's trash."""
    env = f"MLFLOW_TRACKING_URI={shlex.quote(uri)}"
    if len(run_ids) == 1:
        return f"{env} mlflow runs restore --run-id {run_ids[0]}"
    return f"for r in {' '.join(run_ids)}; do {env} mlflow runs restore --run-id $r; done"


def _epochs(mc: Any, run: Run) -> int:
    return int(max((m.step for m in mc.get_metric_history(run.info.run_id, keys.EPOCH)), default=0))


def check(cfg: SweepConfig, uri: str, sweep_dir: str, storage: str, parent_id: str | None) -> list[str]:
    """Read and cross-check what ``--resume`` of ``cfg`` would continue (``parent_id``: the active
    parent run found, or None). Raises PreflightError for anything unreadable or inconsistent;
    returns a line for each repair made."""
    tune = read_tune_state(cfg, sweep_dir)
    mc = tracking.client(uri)
    exp = mc.get_experiment_by_name(cfg.experiment_name)
    where = f"MLflow store {uri}, experiment {cfg.experiment_name!r}"
    if parent_id is None:
        _check_no_parent(cfg, uri, mc, exp, tune, where)
        if cfg.search.method == "optuna":
            _check_study(cfg, storage, tune)
        return []
    children = tracking.search_all(mc, exp.experiment_id, f"tags.`{Tag.PARENT}` = '{parent_id}'", ViewType.ALL)
    repairs = _check_children(cfg, uri, mc, children, tune, parent_id)
    if cfg.search.method == "optuna":
        _check_study(cfg, storage, tune)
    return repairs


def _check_no_parent(cfg: SweepConfig, uri: str, mc: Any, exp: Any, tune: list[TuneTrial] | None, where: str) -> None:
    """No active parent run: a deleted one is named with the command that restores it; Tune state
    without any parent means the runs are not in this store."""
    deleted = []
    if exp is not None:
        parents = tracking.search_all(mc, exp.experiment_id, f"tags.`{Tag.ROLE}` = '{Role.PARENT}'",
                                            ViewType.DELETED_ONLY)  # fmt: skip
        deleted = [r for r in parents if r.data.tags.get(Tag.SWEEP) == cfg.name]
    if deleted:
        run = max(deleted, key=lambda r: r.info.start_time or 0)
        orphans = tracking.search_all(mc, exp.experiment_id, f"tags.`{Tag.PARENT}` = '{run.info.run_id}'",
                                            ViewType.DELETED_ONLY)  # fmt: skip
        ids = [run.info.run_id, *(r.info.run_id for r in orphans)]
        raise PreflightError(
            f"--resume: the MLflow parent run of sweep {cfg.name!r} ({run.info.run_id}) is deleted (in MLflow's "
            f"trash){f', with {len(orphans)} of its trial runs' if orphans else ''}; a resume would start a new "
            f"parent and split the sweep; restore it with: {_restore_command(uri, ids)}; or start under a new "
            "name (--name)"
        )
    if tune:
        raise PreflightError(
            f"--resume: Ray Tune's state of sweep {cfg.name!r} holds {len(tune)} trial(s) but the {where} has no "
            "parent run of it (deleted for good, or another store); point tracking.uri / MLFLOW_TRACKING_URI at "
            "the store the sweep started with, or start under a new name (--name)"
        )


def _check_children(cfg: SweepConfig, uri: str, mc: Any, children: list[Run], tune: list[TuneTrial] | None,
                    parent_id: str) -> list[str]:  # fmt: skip
    """Every point has at most one active run; none Tune counts as ended lacks one; none was deleted
    by hand."""
    active: dict[str, list[Run]] = {}
    deleted: dict[str, list[Run]] = {}
    for run in children:
        key = run.data.tags.get(Tag.KEY)
        if key:
            (active if run.info.lifecycle_stage == "active" else deleted).setdefault(key, []).append(run)
    # A point's run is deleted by the sweep itself only when a new one replaces it (a trial that
    # starts from scratch; sweep.tracking.TrialRun.open): a deleted run whose point has no active
    # one was deleted by someone else.
    lost = [r for key, runs in deleted.items() if key not in active for r in runs]
    if lost:
        names = ", ".join(sorted({r.data.tags.get(Tag.POINT, r.info.run_id) for r in lost}))
        ids = [r.info.run_id for r in lost]
        raise PreflightError(
            f"--resume: {len(lost)} trial run(s) of sweep {cfg.name!r} are deleted (in MLflow's trash): {names}; "
            f"the sweep would count them as done but report none of their results; restore them with: "
            f"{_restore_command(uri, ids)}; or start under a new name (--name)"
        )
    repairs = []
    for key, runs in sorted(active.items()):
        if len(runs) < 2:
            continue
        held = {r.info.run_id: _epochs(mc, r) for r in runs}
        empty = [r for r in runs if held[r.info.run_id] == 0 and not r.data.metrics]  # nothing logged at all
        if len(runs) - len(empty) == 1:  # certain: the others hold nothing to lose
            for r in empty:
                mc.delete_run(r.info.run_id)
                repairs.append(f"sweep {cfg.name!r}: point {r.data.tags.get(Tag.POINT, key)} had a second run "
                               f"({r.info.run_id}) holding no epoch; moved it to MLflow's trash")  # fmt: skip
            continue
        keep = max(runs, key=lambda r: (held[r.info.run_id], r.info.start_time or 0))
        drop = [r.info.run_id for r in runs if r is not keep]
        said = "; ".join(f"{r.info.run_id} ({held[r.info.run_id]} epochs, {r.data.tags.get(Tag.STATUS, '?')})"
                         for r in runs)  # fmt: skip
        command = (f"MLFLOW_TRACKING_URI={shlex.quote(uri)} mlflow runs delete --run-id {drop[0]}" if len(drop) == 1
                   else f"for r in {' '.join(drop)}; do MLFLOW_TRACKING_URI={shlex.quote(uri)} mlflow runs delete "
                        "--run-id $r; done")  # fmt: skip
        raise PreflightError(
            f"--resume: point {runs[0].data.tags.get(Tag.POINT, key)} of sweep {cfg.name!r} has {len(runs)} active "
            f"runs: {said}; a resume would log into one of them at random; keep the one to continue and move the "
            f"others to MLflow's trash (to keep the one with the most epochs: {command}), or start under a new name "
            "(--name)"
        )
    ended = [t for t in tune or [] if t.ended and t.key not in active]
    if ended:
        raise PreflightError(
            f"--resume: Ray Tune's state of sweep {cfg.name!r} says {len(ended)} trial(s) ended "
            f"({', '.join(sorted(t.last.get('point', t.trial_id) for t in ended))}) but MLflow holds no run of their "
            f"point under the parent run {parent_id} (deleted for good?); Tune would not run them again and the "
            "sweep would lack their results; start under a new name (--name)"
        )
    return repairs


def _check_study(cfg: SweepConfig, storage: str, tune: list[TuneTrial] | None) -> None:
    """The Optuna study must be readable and hold the sweep's study once Tune has trials of it."""
    url = study_url(cfg, storage)
    fix = (f"start under a new name (--name NEW --set 'search.warm_start=[{cfg.name}]' learns from this sweep's "
           "trials in MLflow)")  # fmt: skip
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if not path.exists():
            if tune:
                raise PreflightError(f"--resume: the Optuna study of sweep {cfg.name!r} ({path}) is gone but Ray Tune's "
                                     f"state holds {len(tune)} trial(s) of it; {fix}")  # fmt: skip
            return
        try:
            con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=15)
            try:
                problems = [row[0] for row in con.execute("PRAGMA quick_check")]
            finally:
                con.close()
        except sqlite3.DatabaseError as e:
            problems = [str(e)]
        if problems != ["ok"]:
            raise PreflightError(f"--resume: the Optuna study of sweep {cfg.name!r} ({path}) is damaged "
                                 f"({'; '.join(problems)[:200]}); restore it from a backup, or {fix}")  # fmt: skip
    if not tune:
        return
    import optuna

    try:
        storage_ = optuna.storages.RDBStorage(url, skip_table_creation=True)
        storage_.get_study_id_from_name(cfg.name)
    except KeyError:
        raise PreflightError(f"--resume: the Optuna storage of sweep {cfg.name!r} ({url}) holds no study "
                             f"{cfg.name!r}, but Ray Tune's state holds {len(tune)} trial(s) of it; {fix}") from None
    except Exception as e:  # noqa: BLE001 - an unreachable or unusable database
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise PreflightError(f"--resume: the Optuna study of sweep {cfg.name!r} cannot be read ({reason}); "
                             f"{fix}") from None
