"""What a new user meets first at the command line: --help, --smoke, and a CIFAR preset offline."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_sweep
from sweep import preflight
from sweep.config_files import preset_names
from sweep.cli import load_config, parse_args


def test_help_lists_the_presets_examples_and_exit_codes():
    out = subprocess.run([sys.executable, "-m", "sweep.run", "--help"], capture_output=True, text=True, check=True).stdout
    presets = out.split("presets (--config NAME")[1].split("examples:")[0]
    for name in preset_names():
        line = next(line for line in presets.splitlines() if line.split()[:1] == [name])
        # Its purpose and its cost (where it runs and how long).
        assert "see its header" not in line and ("CPU" in line or "GPU" in line), line
    examples = [line.strip() for line in out.split("examples:")[1].split("exit status:")[0].splitlines() if line.strip()]
    assert len(examples) >= 3 and all(e.startswith("python -m sweep.run") for e in examples)
    assert any("--smoke" in e for e in examples) and any("--resume" in e for e in examples)
    codes = out.split("exit status:")[1]
    for code, words in [("0", "done"), ("1", "failed"), ("2", "refused"), ("130", "Ctrl-C"), ("143", "SIGTERM"),
                        ("129", "SIGHUP")]:
        assert any(code in line.split() and words in line for line in codes.splitlines()), (code, codes)


def test_the_command_line_is_answered_before_torch_mlflow_and_ray_are_imported():
    # --help and a refused flag or config come from sweep.run alone; the driver (sweep.driver)
    # and its heavy imports load only for a command line that is good.
    code = (
        "import sys\n"
        "from sweep.run import main\n"
        "for argv in (['--set', 'trainer.epochs=-1'], ['--config', 'nope'], ['--set', 'oops']):\n"
        "    assert main(argv) == 2, argv\n"
        "heavy = sorted(m for m in ('torch', 'mlflow', 'ray', 'optuna', 'sweep.driver') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stderr.splitlines()] == ["sweep.run"] * 3, result.stderr


@pytest.mark.parametrize("preset", preset_names())
def test_smoke_cuts_every_preset_to_a_small_cpu_run_and_set_still_wins(preset):
    full = load_config(parse_args(["--config", preset]))
    small = load_config(parse_args(["--config", preset, "--smoke"]))
    t = small.trainer
    assert small.resources.gpus == 0 and t.device == "cpu"
    assert t.epochs == 2 and t.model.width == 0.0625 and t.data.train_size == 512 and t.data.test_size == 256
    assert t.eval.samples == 64 and t.eval.steps == 20 and t.eval.grid_images == 16
    # What the preset is about stays: dataset, architecture, loss, search.
    assert (t.data.dataset, t.model.arch, t.loss.kind) == (full.trainer.data.dataset, full.trainer.model.arch,
                                                           full.trainer.loss.kind)
    assert small.search.method == full.search.method and small.search.points == full.search.points
    # The grid keeps its corners: each axis's first and last value.
    assert small.search.grid == {axis: values if len(values) <= 2 else [values[0], values[-1]]
                                 for axis, values in full.search.grid.items()}
    if full.judge is not None:
        assert small.judge["epochs"] == 2 and small.judge["width"] == 0.0625
    if full.search.method == "optuna":
        assert small.search.n_trials == 4
    mine = load_config(parse_args(["--config", preset, "--smoke", "--set", "trainer.epochs=3"]))
    assert mine.trainer.epochs == 3


def test_a_cifar_preset_offline_with_download_exits_2_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(preflight, "reachable", lambda url, timeout=10.0: "Name or service not known")
    store = tmp_path / "mlflow.db"
    code = run_sweep(["--config", "table2", "--set", "trainer.data.download=true", "--set", "resources.gpus=0",
                      "--set", f"tracking.uri=sqlite:///{store}"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    folder = tmp_path / "data" / "cifar-100-python"
    for words in ("cifar100", str(folder), "cifar-100-python.tar.gz", f"-C {tmp_path / 'data'}", "data_dir"):
        assert words in err, (words, err)
    assert not store.exists() and not (tmp_path / "mlruns").exists() and not (tmp_path / "sweep_results").exists()


def test_reachable_reports_why_a_host_does_not_answer():
    assert preflight.reachable("http://127.0.0.1:9/cifar.tar.gz", timeout=2.0) is not None  # port 9: discard, closed


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_header_links_its_measured_run_time_and_result_or_says_not_run(preset):
    """Each measured number lives in one place (docs/results.md); a header links to it, or says it
    was not run (the link's anchor is checked with every other link in tests/test_docs.py)."""
    from sweep.config_files import PRESETS

    header = " ".join(line.lstrip("# ").strip() for line in (PRESETS / f"{preset}.yaml").read_text().splitlines()
                      if line.startswith("#"))
    run_time = header.split("RUN TIME:")[1].split(":")[0]
    assert "not run" in run_time or run_time.strip().startswith("measured"), run_time
    linked = header.split("RUN TIME:")[1]
    assert "not run" in run_time or "docs/results.md#" in linked, header
    assert "EXPECTED:" in header or "MEASURED:" in header
    if "EXPECTED:" in header and "not run" in run_time:
        assert header.split("EXPECTED:")[1].lstrip().startswith("not run"), header


def _no_store_env(monkeypatch) -> None:
    for var in ("MLFLOW_TRACKING_URI", "SWEEP_STORAGE_PATH", "RAY_ADDRESS"):  # the preset's own places
        monkeypatch.delenv(var, raising=False)


def test_a_cifar_copy_that_fails_the_md5_check_exits_2_before_the_judge_in_one_line(tmp_path, monkeypatch, capsys):
    """The user's own CIFAR-100 files where the README says: torchvision's md5 check rejects them;
    the sweep says so in one line naming the files, the check and the way on, and writes nothing."""
    from test_data import write_mini_cifar

    monkeypatch.chdir(tmp_path)
    _no_store_env(monkeypatch)
    write_mini_cifar(tmp_path / "data", 100, per_file=8)
    assert run_sweep(["--config", "table2", "--smoke"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for words in ("trainer.data: cifar100", str(tmp_path / "data" / "cifar-100-python"), "train, test, meta",
                  "md5", "--set trainer.data.verify=false", "--set trainer.data.download=true"):
        assert words in err, (words, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no mlflow.db, mlruns or sweep_results


@pytest.mark.slow  # the driver joins the session's Ray before its judge stage meets the files
def test_an_own_copy_that_is_not_cifars_format_exits_2_in_the_judge_stage_and_keeps_nothing(
        ray_cluster, tmp_path, monkeypatch, capsys):
    """Read unchecked (verify=false), a file that is no CIFAR pickle is found only when the judge
    stage loads the data: one line, exit 2, and the MLflow store the run created is gone again."""
    from test_data import write_mini_cifar

    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_URI", "SWEEP_STORAGE_PATH"):
        monkeypatch.delenv(var, raising=False)
    write_mini_cifar(tmp_path / "data", 100, per_file=8)
    (tmp_path / "data" / "cifar-100-python" / "test").write_bytes(b"half a download")
    assert run_sweep(["--config", "table2", "--smoke", "--set", "trainer.data.verify=false"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"cannot read {tmp_path / 'data' / 'cifar-100-python'} as CIFAR's on-disk format" in err, err
    assert err.rstrip().endswith("(found in the judge stage, before any trial; kept nothing)"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], sorted(tmp_path.iterdir())  # no mlflow.db


@pytest.mark.slow
def test_a_crash_after_the_judge_was_stored_names_the_judge_it_kept(ray_cluster, tmp_path, monkeypatch, capsys):
    from helpers import TINY
    from sweep import driver

    def broken(*args, **kwargs):
        raise RuntimeError("the store went away")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(driver.tracking, "open_parent", broken)  # right after the judge stage
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(RuntimeError, match="the store went away"):
        run_sweep(["--name", "kept", "--set", f"tracking.uri={uri}", *sum((["--set", s] for s in TINY), [])])
    err = capsys.readouterr().err
    import mlflow

    (judge,) = mlflow.MlflowClient(uri).search_runs([mlflow.MlflowClient(uri).get_experiment_by_name("judges").experiment_id])
    assert (f"sweep 'kept' failed before any trial ran and kept only the judge it trained (MLflow experiment "
            f"'judges', run {judge.info.run_id}), which the next start reuses") in err, err


@pytest.mark.slow
def test_table2_smoke_runs_end_to_end_on_an_own_cifar100_copy_with_verify_off(tmp_path):
    """``python -m sweep.run --config table2 --smoke`` on a CIFAR-100 miniature with random pixels in
    torchvision's on-disk format (pickled train/test/meta) in ./data, read with
    trainer.data.verify=false: judge, four trials, confirmation and analysis, exit 0."""
    import os

    import mlflow

    from helpers import stop_session
    from test_data import write_mini_cifar

    write_mini_cifar(tmp_path / "data", 100, per_file=96)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SWEEP_STORAGE_PATH", "RAY_ADDRESS")}
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sweep.run", "--config", "table2", "--smoke",
                                 "--set", "trainer.data.verify=false"],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=540)
        finally:
            stop_session(proc)  # its local Ray, whatever the outcome
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "vgg11_released (width 0.0625), 2 epochs of 96 cifar100 images" in text, text[-3000:]
    assert "sweep 'table2' done in" in text and ": 4 trials, 0 failed" in text, text[-3000:]
    mc = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mc.get_experiment_by_name("table2")
    trials = mc.search_runs([exp.experiment_id], "tags.`sweep.role` = 'trial'")
    assert len(trials) == 4 and {r.data.tags["trial.selection_split"] for r in trials} == {"test"}
    finished = [r for r in trials if r.data.tags["trial.status"] == "finished"]
    assert finished, [r.data.tags["trial.status"] for r in trials]
    images = {a.path.split("/")[-1] for a in mc.list_artifacts(finished[0].info.run_id, "images")}
    assert {"samples.png", "saliency.png", "density_ratios.png", "pixel_perturbation.png"} <= images, images
    assert (tmp_path / "out" / "analysis" / "table2" / "table2" / "table2.png").is_file()


def test_the_resume_command_keeps_smoke():
    from sweep.cli import rerun_command

    args = parse_args(["--config", "table2", "--smoke", "--set", "trainer.epochs=3"])
    command = rerun_command(load_config(args), args)
    assert command.endswith("--config table2 --name table2 --smoke --resume --set trainer.epochs=3")


def test_ctrl_c_while_the_driver_imports_torch_exits_130_in_one_line(tmp_path):
    # Ctrl-C in the first seconds lands in `from sweep import driver` (torch, MLflow, Ray); it was
    # a KeyboardInterrupt traceback. The signal is sent once torch's library is mapped, i.e. during
    # that import (Ray's, which follows, takes longer still).
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.run", "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.time() + 120
    while "libtorch" not in maps.read_text():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err + out
    assert err.strip() == "sweep.run: interrupted by Ctrl-C while starting; nothing was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == []
