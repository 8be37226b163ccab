"""Faults refused up front or survived without loss, without running a sweep: one driver per name,
unusable stores, oversized grids, hostile names, concurrent store creation, checkpoint fallback,
idempotent metric steps."""

from __future__ import annotations

import json
import multiprocessing
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from argparse import Namespace
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import run_sweep
from sweep import lock, recovery, tracking
from sweep.config_files import load_sweep_config
from sweep.points import grid_size
from sweep.record import Tag
from trainer import keys
from trainer.checkpoint import save_checkpoint


def _refused(capsys, args: list[str], limit_s: float = 15.0) -> str:
    """Run the driver in process; it must exit 2 within ``limit_s`` with one error line, which is returned."""
    started = time.time()
    code = run_sweep(args)
    seconds = time.time() - started
    err = capsys.readouterr().err
    assert code == 2, err
    assert seconds < limit_s, f"refused after {seconds:.1f} s"
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def _nothing_written(folder: Path, *also: str) -> None:
    for name in ("mlruns", "sweep_results", *also):
        assert not (folder / name).exists(), name


@contextmanager
def _unwritable(path: Path):
    """Make ``path`` unwritable even for root (chattr +i), or by mode bits for other users."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("running as root on a filesystem without chattr +i")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)


# --- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags,words",
    [
        (["--name", "x" * 300], ["name", "100"]),
        (["--set", "experiment=../../escaped"], ["experiment", "'/'"]),
        (["--set", "experiment=" + "e" * 101], ["experiment", "100"]),
        (["--name", "a\tb"], ["name", "printable"]),
        (["--name", "..", "--set", "experiment=ok"], ["name", "leading '.'"]),
        (["--name", "both'\"quotes"], ["name", "not both"]),
    ],
    ids=["300-char name", "experiment ../..", "long experiment", "control char", "dot-dot", "both quotes"],
)
def test_bad_names_and_experiments_are_refused_before_anything_is_written(flags, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _refused(capsys, [*flags, "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    for word in words:
        assert word in line, line
    assert len(line) < 400  # a 300-character name is not echoed whole
    _nothing_written(tmp_path, "mlflow.db")
    assert list(tmp_path.parent.glob("escaped")) == []


def test_a_name_with_a_quote_is_found_in_mlflow_and_its_printed_commands_paste_as_is(tmp_path, capsys, monkeypatch):
    name = "it's"
    mc = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracking.ensure_experiment(mc, name, (tmp_path / "artifacts").as_uri())
    (tmp_path / "sweep.yaml").write_text("x: 1\n")
    other = tracking.start_parent(mc, exp, "its", {"a": 1}, tmp_path / "sweep.yaml")
    parent = tracking.start_parent(mc, exp, name, {"a": 1}, tmp_path / "sweep.yaml")
    assert tracking.find_parent(mc, name, name) == parent != other
    assert tracking.find_parent(mc, name, 'say "hi"') is None  # the other quote works too

    from sweep.report import print_next_steps

    monkeypatch.chdir(tmp_path)
    cfg = load_sweep_config("quickstart", [], name=name)
    uri = f"sqlite:///{tmp_path / 'my store.db'}"
    print_next_steps(cfg, uri, parent, str(tmp_path), Namespace(config="quickstart", address=None, set=["a=b c"], smoke=False), exp)
    out = capsys.readouterr().out
    commands = [line.strip() for line in out.splitlines() if line.strip().startswith(("python -m", "cd ", "mlflow ui"))]
    assert len(commands) == 4, out
    resume = shlex.split(commands[-1].split("&&", 1)[1])
    assert resume[resume.index("--name") + 1] == name and resume[resume.index("--set") + 1] == "a=b c"
    table2 = shlex.split(commands[1])
    assert table2[table2.index("--experiment") + 1] == name and table2[table2.index("--tracking-uri") + 1] == uri


# --- grid size ---------------------------------------------------------------------------------


def test_a_million_point_grid_is_refused_before_it_is_expanded(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    axis = "[" + ", ".join(f"{1e-6 * (i + 1):.3e}" for i in range(1000)) + "]"
    grid = ["--set", f"search.grid.loss.lam={axis}", "--set", f"search.grid.loss.mu={axis}", "--set", "search.points=[]"]
    line = _refused(capsys, grid, limit_s=5)
    assert "1,000,000 points" in line and "search.max_points" in line and "--set search.max_points=1000000" in line
    _nothing_written(tmp_path, "mlflow.db")


def test_grid_size_counts_axes_points_and_seeds_without_expanding():
    cfg = load_sweep_config("quickstart", ["search.seeds=[0, 1]"])
    assert grid_size(cfg.search) == (3 * 3 + 1) * 2
    with pytest.raises(Exception, match="max_points"):
        load_sweep_config("quickstart", ["search.max_points=19", "search.seeds=[0, 1]"])


# --- tracking stores and storage ---------------------------------------------------------------


def test_garbage_in_mlflow_db_is_refused_up_front(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "mlflow.db"
    garbage = os.urandom(4096)
    store.write_bytes(garbage)
    line = _refused(capsys, ["--set", f"tracking.uri=sqlite:///{store}"])
    assert str(store) in line and "not an SQLite database" in line
    assert store.read_bytes() == garbage
    _nothing_written(tmp_path)


def test_a_read_only_mlflow_db_is_refused_up_front(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "mlflow.db"
    tracking.client(f"sqlite:///{store}")  # a real, empty MLflow database
    before = store.read_bytes()
    with _unwritable(store):
        line = _refused(capsys, ["--set", f"tracking.uri=sqlite:///{store}"])
    assert str(store) in line and "writable" in line
    assert store.read_bytes() == before
    _nothing_written(tmp_path)


def test_a_store_a_killed_writer_left_mid_transaction_is_rolled_back_not_refused(tmp_path):
    """A resume right after an interrupt met the journal a still-exiting process left: the
    read-only check failed with "attempt to write a readonly database". Now SQLite rolls the
    journal back and the store passes, with its committed content and not the half-written one."""
    from sweep import store_checks

    store = tmp_path / "mlflow.db"
    uri = f"sqlite:///{store}"
    mc = tracking.client(uri)
    exp = tracking.ensure_experiment(mc, "kept", None)
    writer = (
        "import os, signal, sqlite3, sys\n"
        "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "con.execute('BEGIN')\n"
        "con.execute(\"UPDATE experiments SET name = 'half-written' WHERE name = 'kept'\")\n"
        "con.execute('CREATE TABLE filler AS WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c "
        "WHERE n < 3000) SELECT randomblob(1000) AS b FROM c')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    died = subprocess.run([sys.executable, "-c", writer, str(store)], timeout=120)
    assert died.returncode == -signal.SIGKILL
    assert (tmp_path / "mlflow.db-journal").stat().st_size > 0  # hot: nobody holds its lock
    store_checks.check_tracking_store(uri, None)
    assert not (tmp_path / "mlflow.db-journal").exists()
    assert MlflowClient(uri).get_experiment(exp).name == "kept"
    assert "half-written" not in {e.name for e in MlflowClient(uri).search_experiments()}


def test_a_tracking_uri_in_an_unwritable_folder_is_refused_up_front(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "locked"
    folder.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    with _unwritable(folder):
        line = _refused(capsys, [])
    assert str(folder) in line and "not writable" in line
    assert list(folder.iterdir()) == []
    _nothing_written(tmp_path, "mlflow.db")


def test_an_unwritable_storage_path_is_refused_up_front(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.setenv("SWEEP_STORAGE_PATH", str(folder / "results"))
    with _unwritable(folder):
        line = _refused(capsys, ["--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    assert "storage_path" in line and str(folder) in line
    _nothing_written(tmp_path, "mlflow.db")
    assert list(folder.iterdir()) == []


# --- one driver per name -----------------------------------------------------------------------


def test_a_second_driver_of_a_running_sweep_exits_2_naming_the_holder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    held = lock.acquire(str(tmp_path / "sweep_results" / "quickstart"), "quickstart")
    try:
        line = _refused(capsys, ["--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    finally:
        held.release()
    assert "running already" in line and f"pid {os.getpid()}" in line and socket.gethostname() in line
    assert not (tmp_path / "mlflow.db").exists()


def _lock_and_die(sweep_dir: str) -> None:
    lock.acquire(sweep_dir, "x")
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_lock_of_a_killed_driver_is_free_and_its_mark_stays(tmp_path):
    sweep_dir = str(tmp_path / "x")
    proc = multiprocessing.get_context("spawn").Process(target=_lock_and_die, args=(sweep_dir,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    assert lock.started(sweep_dir)  # a rerun is told to --resume
    held = lock.acquire(sweep_dir, "x")  # and --resume gets the lock at once
    assert held is not None and held.existed
    with pytest.raises(lock.LockHeld, match=f"pid {os.getpid()}"):
        lock.acquire(sweep_dir, "x")
    held.release()


def _create_store(uri: str, barrier, errors) -> None:
    try:
        barrier.wait(30)
        mc = tracking.client(uri)
        tracking.ensure_experiment(mc, f"e{os.getpid()}", None)
    except Exception as e:  # reported to the test, which fails naming it
        errors.put(f"{type(e).__name__}: {e}"[:300])


@pytest.mark.slow  # three fresh Python processes importing MLflow: about a minute on 2 loaded cores
def test_concurrent_first_use_of_a_fresh_sqlite_store_does_not_crash(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    n = 3
    barrier, errors = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_create_store, args=(uri, barrier, errors)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == [] and [p.exitcode for p in procs] == [0] * n
    assert len(MlflowClient(uri).search_experiments()) == n + 1  # theirs and Default


# --- checkpoints and metric steps --------------------------------------------------------------


def _checkpoint(path: Path, epoch: int) -> Path:
    save_checkpoint(path, {"model": {}, "config": {}, "epoch": epoch})
    return path


def test_a_corrupt_tune_checkpoint_falls_back_to_the_mlflow_one_then_to_scratch(trial_store, tmp_path):
    uri, exp, parent = trial_store
    run = tracking.TrialRun(uri, exp, parent, "s", key="k")
    run.open("p", "t1", {})
    for epoch in (1, 2, 3):
        run.log_metrics({keys.EPOCH: epoch, keys.TRAIN_LOSS: 1.0 / epoch}, step=epoch)
    run.log_checkpoint(_checkpoint(tmp_path / "up" / "last.pt", 2))
    restore = tmp_path / "restore"
    restore.mkdir()
    (restore / "last.pt").write_bytes(_checkpoint(tmp_path / "x.pt", 3).read_bytes()[:200])  # truncated
    (restore / "sweep_state.json").write_text('{"best": 0.5')  # truncated too

    again = tracking.TrialRun(uri, exp, parent, "s", key="k")
    ckpt = tmp_path / "ckpt1"
    ckpt.mkdir()
    resumed, note = recovery.restore_checkpoint(restore, ckpt, again)
    assert resumed and "Tune checkpoint unusable" in note and "epoch 2" in note
    assert recovery.read_state(ckpt / "sweep_state.json", {"best": None}) == {"best": None}
    again.open("p", "t2", {}, from_scratch=not resumed, restarted=note)
    assert again.run_id == run.run_id and again.attempt == 2 and again.holds(3) and not again.holds(4)
    assert MlflowClient(uri).get_run(run.run_id).data.tags[Tag.RESTARTED] == note

    # MLflow's copy truncated too: noticed, and the trial starts from scratch in a new run.
    upload = tmp_path / "bad" / "last.pt"
    upload.parent.mkdir()
    upload.write_bytes(b"\x80\x02garbage")
    run.log_checkpoint(upload)
    third = tracking.TrialRun(uri, exp, parent, "s", key="k")
    ckpt = tmp_path / "ckpt2"
    ckpt.mkdir()
    resumed, note = recovery.restore_checkpoint(restore, ckpt, third)
    assert not resumed and "unusable too" in note and "from scratch" in note and list(ckpt.iterdir()) == []
    third.open("p", "t3", {}, from_scratch=True, restarted=note)
    assert third.run_id != run.run_id and third.attempt == 3 and not third.holds(1)
    runs = MlflowClient(uri).search_runs([exp], f"tags.`{Tag.KEY}` = 'k'")
    assert [r.info.run_id for r in runs] == [third.run_id]  # the old run is replaced, not duplicated
    assert runs[0].data.tags[Tag.RESTARTED] == note


def test_a_replaced_lost_checkpoint_says_so_in_the_note_and_is_not_carried_on(trial_store, tmp_path):
    uri, exp, parent = trial_store
    run = tracking.TrialRun(uri, exp, parent, "s", key="k")
    run.open("p", "t1", {})
    run.log_metrics({keys.EPOCH: 1, keys.TRAIN_LOSS: 1.0}, step=1)
    run.log_checkpoint(_checkpoint(tmp_path / "up" / "last.pt", 1))
    said = "the Tune checkpoint checkpoint_000002 of this trial was gone; continued from checkpoint_000003"
    # sweep.engine.trainable moved the newest checkpoint where Tune's state pointed, with its note
    moved = tmp_path / "moved"
    _checkpoint(moved / "last.pt", 3)
    (moved / recovery.LOST_NOTE).write_text(said)
    ckpt = tmp_path / "ckpt1"
    ckpt.mkdir()
    assert recovery.restore_checkpoint(moved, ckpt, tracking.TrialRun(uri, exp, parent, "s", key="k")) == (True, said)
    assert not (ckpt / recovery.LOST_NOTE).exists()  # the next checkpoints do not repeat it
    # none was left: an empty folder with the note, and the trial continues from MLflow's last.pt
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / recovery.LOST_NOTE).write_text(said.replace("continued from checkpoint_000003", "none was left"))
    ckpt = tmp_path / "ckpt2"
    ckpt.mkdir()
    resumed, note = recovery.restore_checkpoint(empty, ckpt, tracking.TrialRun(uri, exp, parent, "s", key="k"))
    assert resumed and note.startswith("the Tune checkpoint checkpoint_000002 of this trial was gone; none was left; ")
    assert "continued from MLflow's" in note and "(epoch 1)" in note
    assert sorted(p.name for p in ckpt.iterdir()) == ["last.pt"]


def test_a_resumed_trial_never_logs_a_step_mlflow_holds(trial_store):
    uri, exp, parent = trial_store
    run = tracking.TrialRun(uri, exp, parent, "s", key="k")
    run.open("p", "t1", {})
    for epoch in (1, 2):  # the worker got one epoch ahead of the checkpoint Tune recorded (1)
        run.log_metrics({keys.EPOCH: epoch, keys.TRAIN_LOSS: 1.0}, step=epoch)
    resumed = tracking.TrialRun(uri, exp, parent, "s", key="k")
    resumed.open("p", "t1", {})  # continues from epoch 1's checkpoint
    for epoch in (2, 3):
        resumed.log_metrics({keys.EPOCH: epoch, keys.TRAIN_LOSS: 2.0}, step=epoch)
    history = MlflowClient(uri).get_metric_history(run.run_id, keys.TRAIN_LOSS)
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 1.0), (3, 2.0)]


# --- a trial under a memory limit ---------------------------------------------------------------

_LIMITED_TRIAL = """
import json, resource, sys
from pathlib import Path
import torch
from sweep import tracking
from sweep.config import ObjectiveConfig
from sweep.points import Point
from sweep.trial import POINT_KEY, SweepContext, run_trial
from trainer.config import load_config

root = Path(sys.argv[1])
uri = f"sqlite:///{root / 'mlflow.db'}"
mc = tracking.client(uri)
exp = tracking.ensure_experiment(mc, "e", (root / "artifacts").as_uri())
(root / "sweep.yaml").write_text("x: 1\\n")
parent = tracking.start_parent(mc, exp, "s", {"a": 1}, root / "sweep.yaml")
base = load_config(None, ["data.dataset=synthetic", "data.image_size=32", "data.channels=3", "data.train_size=512",
                          "data.test_size=64", "epochs=1", "batch_size=512", "eval.enabled=false",
                          "model.width=0.5", "device=cpu"]).model_dump()
point = Point((("loss.lam", 1e-3),), 0)
ctx = SweepContext("s", uri, exp, parent, base, ObjectiveConfig(name="accuracy"), None, 1,
                   points={point.key: point}, names={point.key: "p"})
torch.zeros(1)
# 64 MiB more address space than the process holds now: enough for the data, not for a training step
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + 64 * 2**20, resource.RLIM_INFINITY))
try:
    run_trial(ctx, {POINT_KEY: point.key}, "t0", None, lambda result, ckpt: None)
except Exception as e:
    print(json.dumps({"type": type(e).__name__, "message": str(e)}))
"""


@pytest.mark.slow  # ~30 s: torch and MLflow imported in a fresh process
def test_a_trial_under_a_memory_limit_fails_saying_out_of_memory(tmp_path):
    # An address-space limit on a trial's process (ulimit -v, a container's) made its training
    # step fail with oneDNN's "could not create a primitive", with no word of memory.
    done = subprocess.run([sys.executable, "-c", _LIMITED_TRIAL, str(tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)  # fmt: skip
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert failed["type"] == "OutOfMemory", failed
    assert failed["message"].startswith("out of memory: the trial's process could not allocate memory (")
    assert "lower trainer.batch_size" in failed["message"]
    runs = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(
        [tracking.ensure_experiment(tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}"), "e", None)],
        f"tags.`{Tag.ROLE}` = 'trial'")
    assert [(r.info.status, r.data.tags[Tag.STATUS]) for r in runs] == [("FAILED", "failed")]
