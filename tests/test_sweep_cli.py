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
from sweep.loading import preset_names
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
def test_every_preset_header_states_a_measured_run_time_and_result_or_not_run(preset):
    from sweep.loading import PRESETS

    header = " ".join(line.lstrip("# ").strip() for line in (PRESETS / f"{preset}.yaml").read_text().splitlines()
                      if line.startswith("#"))
    run_time = header.split("RUN TIME:")[1].split(":")[0]
    # Measured: a date and the commit of the run; else it says so.
    assert "not run" in run_time or ("commit" in run_time and "2026-" in run_time), run_time
    assert "EXPECTED:" in header or "MEASURED:" in header
    if "EXPECTED:" in header and "not run" in run_time:
        assert header.split("EXPECTED:")[1].lstrip().startswith("not run"), header


def test_the_quickstart_header_expects_what_the_readme_shows():
    import re
    from pathlib import Path

    from sweep.loading import PRESETS

    header = (PRESETS / "quickstart.yaml").read_text()
    point, value = re.search(r"best point (\S+ s\d), confirmed objective (\d\.\d+ \[[\d., ]+\])", header).groups()
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert f"Best point: {point}, objective {value}" in readme


@pytest.mark.slow
def test_smoke_trains_a_cifar_presets_judge_and_trials_code_on_a_miniature(tmp_path, monkeypatch):
    """table2 --smoke through the judge stage's plan and training and one trial's trainer run, on a
    miniature CIFAR-100 in torchvision's on-disk format (CIFAR cannot be downloaded here)."""
    import torchvision.datasets.cifar

    from sweep import judge_stage
    from sweep.config import judge_config
    from sweep.points import apply_point, grid_points, point_name
    from test_data import write_mini_cifar
    from trainer import keys
    from trainer.judge import train_judge
    from trainer.train import run

    write_mini_cifar(tmp_path, 100, per_file=96)
    # torchvision checks each file's md5 against the real dataset's: skip only that check.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    cfg = load_config(parse_args(["--config", "table2", "--smoke", "--set", f"trainer.data.data_dir={tmp_path}"]))
    jc = judge_config(cfg)
    plan = judge_stage.plan(jc, "cpu")
    assert "vgg11_released (width 0.0625), 2 epochs of 96 cifar100 images" in plan and "--set judge.epochs=N" in plan
    judge = train_judge(jc, tmp_path / "judges", "cpu")

    point = grid_points(cfg.search)[-1]  # the corner λ = 1e-6, μ = 1e-5: trains without diverging
    trainer_cfg = apply_point(cfg.trainer.model_dump(), point)
    trainer_cfg.eval.judge, trainer_cfg.eval.label = str(judge), point_name(trainer_cfg, point)
    files = {}
    metrics = run(trainer_cfg, report=lambda m, f: files.update(f), checkpoint_dir=tmp_path / "run",
                  out_dir=tmp_path / "out")
    assert metrics[keys.STATUS] == "finished" and metrics[keys.EPOCH] == 2
    assert 0 <= metrics[keys.GAN_TEST] <= 1 and keys.TEST_ACC in metrics
    assert {"samples", "saliency", "density_ratios", "pixel_perturbation"} <= set(files)


def test_the_resume_command_keeps_smoke():
    from sweep.driver import _command

    args = parse_args(["--config", "table2", "--smoke", "--set", "trainer.epochs=3"])
    command = _command(load_config(args), args)
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
