"""Bad input and environment refused up front: exit 2, one line naming the problem, nothing
written (non-finite numbers, and the other refusals of the faults table in docs/sweep.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers import run_sweep


def _refused(capsys, args: list[str], limit_s: float = 30.0) -> str:
    """Run the driver in process; it must exit 2 within ``limit_s`` with one error line, which is returned."""
    started = time.time()
    code = run_sweep(args)
    seconds = time.time() - started
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert seconds < limit_s, f"refused after {seconds:.1f} s"
    assert "Traceback" not in captured.err + captured.out
    lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(lines) == 1, captured.err
    return lines[0]


def _nothing_written(folder: Path) -> None:
    for name in ("mlruns", "sweep_results", "mlflow.db"):
        assert not (folder / name).exists(), name


@pytest.mark.parametrize(
    "sets, key",
    [
        (["search.grid.loss.lam=[.inf]"], "search.grid.loss.lam[0]=inf"),
        (["search.grid.loss.mu=[1.0e-3, .nan]"], "search.grid.loss.mu[1]=nan"),
        (["trainer.optim.lr=-.inf"], "trainer.optim.lr=-inf"),
        (["search.points=[{loss.preset: baseline, optim.lr: .inf}]"], "search.points[0].optim.lr=inf"),
        (["search.method=optuna", "search.seeds=[0]", "search.grid={}", "search.points=[]",
          "search.space.loss.lam={low: 1.0e-4, high: .inf}"], "search.space.loss.lam.high=inf"),
        (["judge.lr=.nan"], "judge.lr=nan"),
    ],
    ids=["grid inf", "grid nan", "base -inf", "point", "optuna space", "judge"],
)
def test_non_finite_numbers_anywhere_are_refused_naming_the_key(sets, key, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = sum((["--set", s] for s in [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *sets]), [])
    line = _refused(capsys, args)
    assert key in line and "finite" in line, line
    _nothing_written(tmp_path)


@pytest.mark.parametrize(
    "sets, typed",
    [
        (["search.grid.loss.lamda=[1.0e-3]"], "search.grid.loss.lamda: unknown key"),
        (["search.grid.loss.lam=[-1]"], "search.grid.loss.lam: Input should be greater than or equal to 0"),
        (["search.points=[{loss.preset: baseline}, {loss.lamda: 1}]"], "search.points[1].loss.lamda: unknown key"),
        (["search.method=optuna", "search.seeds=[0]", "search.grid={}", "search.points=[]",
          "search.space.loss.lamda={low: 1.0e-4, high: 1.0e-2}"], "search.space.loss.lamda: unknown key"),
        (["trainer.loss.lamda=1"], "trainer.loss.lamda: unknown key"),
    ],
    ids=["grid key", "grid value", "point", "optuna space", "base"],
)
def test_a_bad_key_is_named_by_the_path_the_user_typed(sets, typed, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _refused(capsys, sum((["--set", s] for s in [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *sets]), []))
    assert line.endswith(f"error: {typed}"), line
    _nothing_written(tmp_path)


def _args(tmp_path, *sets: str) -> list[str]:
    return sum((["--set", s] for s in [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *sets]), [])


def test_a_storage_path_that_cannot_be_created_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _refused(capsys, _args(tmp_path, "storage_path=/proc/forbidden/results"))
    assert "storage_path" in line and "/proc/forbidden/results" in line, line
    _nothing_written(tmp_path)


def test_a_database_uri_without_its_driver_names_the_package(tmp_path, capsys, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("psycopg") or importlib.util.find_spec("psycopg2"):
        pytest.skip("a PostgreSQL driver is installed here")
    monkeypatch.chdir(tmp_path)
    args = ["--set", "tracking.uri=postgresql://user:secret@127.0.0.1:1/mlflow"]
    line = _refused(capsys, args)
    # SQLAlchemy's default PostgreSQL driver (psycopg 3 in SQLAlchemy 2.1, psycopg2 before), by package
    assert "pip install 'psycopg" in line and "secret" not in line, line
    _nothing_written(tmp_path)


def test_a_read_only_home_is_refused_before_ray_and_leaves_the_name_free(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", "/proc/1")  # a folder nobody, root included, can create files in
    line = _refused(capsys, _args(tmp_path, f"storage_path={tmp_path / 'ray'}"))
    assert "auth token" in line and "/proc/1" in line and "HOME" in line, line
    assert not (tmp_path / "ray").exists()  # no lock left: the plain rerun is not "already exists"


def test_a_tmpdir_too_long_for_ray_sockets_is_refused_naming_the_fix(tmp_path, capsys, monkeypatch):
    from sweep.preflight import RAY_SOCKET_TAIL, SOCKET_PATH_MAX

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    deep = "/scratch/" + "d" * (SOCKET_PATH_MAX - RAY_SOCKET_TAIL)  # one folder level past the limit
    monkeypatch.setenv("TMPDIR", deep)
    line = _refused(capsys, _args(tmp_path, f"storage_path={tmp_path / 'ray'}"))
    assert f"TMPDIR={deep}" in line and "RAY_TMPDIR" in line and str(SOCKET_PATH_MAX) in line, line
    assert not (tmp_path / "ray").exists()


def test_the_socket_tail_matches_the_path_ray_builds():
    """The fixed part counted after the temp root is Ray's own layout (session name from the date
    to the microsecond and the pid), checked against a path built the way Ray's node does."""
    import datetime

    from sweep.preflight import RAY_SOCKET_TAIL

    session = f"session_{datetime.datetime(2026, 12, 31, 23, 59, 59, 999999).strftime('%Y-%m-%d_%H-%M-%S_%f')}_{4194304}"
    assert RAY_SOCKET_TAIL == len(f"/ray/{session}/sockets/plasma_store")


@pytest.mark.parametrize("width, words", [("1.0e6", ["too large to build"]), ("40.0", ["87.5 GiB", "dataset and model"])])
def test_a_cpu_trial_beyond_the_node_memory_is_refused(width, words):
    from sweep.config_files import load_sweep_config
    from sweep.preflight import PreflightError
    from sweep.resources import check_resources

    cfg = load_sweep_config("quickstart", [f"trainer.model.width={width}"])
    with pytest.raises(PreflightError) as e:
        check_resources(cfg, [{"CPU": 2.0, "memory": 16.0 * 2**30}])
    for word in words:
        assert word in str(e.value) and "trainer.model.width" in str(e.value)


def test_the_cpu_memory_bound_is_the_dataset_plus_parameters_gradients_and_momentum():
    """resident_bytes against a hand count: the quickstart model's parameters x 4 bytes x 3
    (weights, gradients, momentum) plus buffers, plus the dataset's float32 images and int64 labels."""
    import torch

    from sweep.config_files import load_sweep_config
    from trainer.memory import data_bytes, resident_bytes
    from trainer.models import build_model

    cfg = load_sweep_config("quickstart", []).trainer
    model = build_model(cfg.model.arch, 10, 1, cfg.model.width, cfg.model.beta, 8)
    params = sum(p.numel() for p in model.parameters()) * 4
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert cfg.optim.momentum > 0 and cfg.data.dataset == "digits"
    assert resident_bytes(cfg) == data_bytes(cfg.data) + 3 * params + buffers
    assert torch.get_default_device().type == "cpu"  # the meta device did not leak


def test_a_trial_that_fits_passes_and_an_unknown_node_memory_is_not_checked():
    from sweep.config_files import load_sweep_config
    from sweep.resources import check_resources

    cfg = load_sweep_config("quickstart", [])
    check_resources(cfg, [{"CPU": 2.0, "memory": 16.0 * 2**30}])
    check_resources(load_sweep_config("quickstart", ["trainer.model.width=40.0"]), [{"CPU": 2.0}])


def _alias_bomb(levels: int = 9) -> str:
    """About 500 bytes of YAML whose nested aliases stand for 9 x 10^(levels-1) strings."""
    names = "abcdefghijklmnop"[:levels]
    parts = [f"{names[0]}: &{names[0]} [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    parts += [f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]" for p, n in zip(names, names[1:])]
    return "{" + ", ".join(parts) + "}"


def test_a_yaml_alias_bomb_in_set_is_refused_within_a_second(tmp_path, capsys, monkeypatch):
    # 10^8 strings behind 500 bytes: validating the expanded tree took over a minute.
    monkeypatch.chdir(tmp_path)
    bomb = _alias_bomb()
    assert len(bomb) < 600
    line = _refused(capsys, ["--set", f"trainer.data.dataset={bomb}"], limit_s=1.0)
    assert "trainer.data.dataset" in line and "alias *a" in line and len(line) < 300
    _nothing_written(tmp_path)


def test_a_config_file_with_an_alias_is_refused_naming_the_file_and_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "mine.yaml"
    config.write_text(f"name: mine\nsearch:\n  points: []\ntrainer:\n  notes: {_alias_bomb()}\n")
    line = _refused(capsys, ["--config", str(config)], limit_s=1.0)
    assert str(config) in line and "line 5" in line and "alias *a" in line
    _nothing_written(tmp_path)
    # A file without aliases (anchors alone expand nothing) still loads.
    config.write_text("name: mine\nsearch:\n  grid:\n    loss.lam: [1.0e-3]\ntrainer:\n  epochs: &e 3\n")
    from sweep.config_files import load_sweep_config

    assert load_sweep_config(str(config)).trainer.epochs == 3


@pytest.mark.parametrize(
    "sets, words",
    [
        (["confirm.samples=1000000000000"], ["the confirmation needs at least", "lower confirm.samples (at most about"]),
        (["trainer.eval.samples=100000000"], ["(trainer.eval.samples=100000000)", "lower trainer.eval.samples"]),
        (["trainer.eval.density_draws=10000000"], ["(trainer.eval.density_draws=10000000)",
                                                   "lower trainer.eval.density_draws"]),
        (["judge.width=200.0"], ["the judge's training needs", "lower judge.width or judge.batch_size"]),
        (["judge.width=1.0e6"], ["judge.width=1e+06: the judge is too large to build"]),
    ],
    ids=["confirm", "eval", "density", "judge", "judge-overflow"],
)
def test_confirmation_judge_and_evaluation_sizes_are_bounded_by_the_node_memory(sets, words):
    # confirm.samples=10^12 was accepted, every trial trained, then confirmation failed allocating 8 TB.
    from sweep.config_files import load_sweep_config
    from sweep.preflight import PreflightError
    from sweep.resources import check_resources

    node = [{"CPU": 2.0, "memory": 16.0 * 2**30}]
    check_resources(load_sweep_config("quickstart", []), node)  # the preset's own sizes fit
    with pytest.raises(PreflightError) as e:
        check_resources(load_sweep_config("quickstart", sets), node)
    for word in words:
        assert word in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "sets, words",
    [
        (["confirm.samples=10000000"], ["the confirmation needs", "one GPU has 4 GiB", "lower confirm.samples"]),
        (["trainer.eval.samples=10000000"], ["trainer.eval.samples=10000000: 4 trial(s) per GPU", "lower trainer.eval.samples"]),
        (["judge.width=30.0"], ["the judge's training needs about", "GiB of GPU memory", "lower judge.width"]),
    ],
    ids=["confirm", "eval", "judge"],
)
def test_on_a_gpu_sweep_the_same_sizes_are_bounded_by_the_gpus_memory_before_ray_starts(sets, words):
    from sweep.config_files import load_sweep_config
    from sweep.preflight import PreflightError
    from sweep.resources import check_packing, check_resources

    gpu = ["trainer.device=cuda", "resources.gpus=0.25", "resources.gpu_memory_gib=4"]
    check_packing(load_sweep_config("quickstart", gpu))  # four quickstart trials, its judge and confirmation fit
    with pytest.raises(PreflightError) as e:
        check_packing(load_sweep_config("quickstart", [*gpu, *sets]))
    for word in words:
        assert word in str(e.value), str(e.value)
    # the samples' starting noise, drawn on the CPU, against the node's memory once Ray is up
    with pytest.raises(PreflightError, match="confirm.samples=1000000000000: the starting noise"):
        check_resources(load_sweep_config("quickstart", [*gpu, "confirm.samples=1000000000000"]),
                        [{"CPU": 4.0, "GPU": 1.0, "memory": 16.0 * 2**30}])


@pytest.mark.slow  # joins the session's Ray: the node's memory is what bounds the sizes
def test_a_confirmation_beyond_the_machine_is_refused_before_the_judge_and_the_trials(ray_cluster, tmp_path, capsys,
                                                                                       monkeypatch):  # fmt: skip
    from helpers import TINY

    monkeypatch.chdir(tmp_path)
    sets = [*TINY, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "confirm.samples=1000000000000"]
    line = _refused(capsys, sum((["--set", s] for s in sets), []), limit_s=120)
    assert "the confirmation needs at least" in line and "confirm.samples=1000000000000" in line, line
    _nothing_written(tmp_path)
