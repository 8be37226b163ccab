"""Bad input to ``python -m sweep.run``: one message naming the problem, exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import free_port, run_sweep
from sweep.config_files import load_sweep_config, preset_names
from sweep.points import grid_points

YAML_LIST = "- not\n- a mapping\n"

# (flags, words the message must contain); every case must fail before MLflow or Ray results exist.
CASES = [
    (["--set", "trainer.bogus=1"], ["trainer.bogus", "unknown key"]),
    (["--set", "trainer.epochs=0"], ["trainer.epochs"]),
    (["--set", "search.grid.loss.lam=[]"], ["loss.lam", "no values"]),
    (["--set", "search.grid.loss.lam=[-1.0e-3]"], ["search.grid.loss.lam"]),  # the path as typed
    (["--set", "search.points=[{loss.preset: nosuch}]"], ["nosuch"]),
    (["--config", "nosuch"], ["nosuch", "quickstart"]),
    (["--frobnicate"], ["--frobnicate"]),
    (["--set", "trainer.epochs"], ["key=value"]),
    (["--config", "{yaml_list}"], ["mapping"]),
    (["--set", "scheduler.kind=asha", "--set", "trainer.eval.every=0"], ["grace_period"]),
    (["--set", "trainer.data.dataset=cifar100"], ["cifar100", "download"]),
    (["--set", "tracking.uri=http://127.0.0.1:{port}"], ["not reachable"]),
    (["--set", "judge=null"], ["objective.name", "judge"]),
    (["--set", "trainer.data.val_size=0"], ["objective.split: val", "trainer.data.val_size is 0"]),
    (["--set", "search.method=optuna", "--set", "search.space.loss.lam={low: 1.0e-5, high: 1.0e-3}",
      "--set", "search.objectives=[test/acc]"], ["test/acc is test-set data"]),
    (["--set", "search.method=optuna", "--set", "search.space.loss.lam={low: 1.0e-3, high: 1.0e-4}"], ["low"]),
    (["--resume"], ["--resume", "no sweep"]),
    (["--address", "127.0.0.1:{port}"], ["--address", "no Ray cluster"]),
    (["--set", "resources.cpus=64"], ["resources.cpus", "64"]),  # checked once Ray is up
    (["--set", "confirm.sample_seed=0"], ["confirm.sample_seed", "fresh draws"]),  # the trials' seed
    (["--set", "confirm.top_k=0"], ["confirm.top_k"]),
    (["--set", "confirm.sampels=64"], ["confirm.sampels", "unknown key"]),
    (["--set", "confirm.train_seeds=-1"], ["confirm.train_seeds", "greater than or equal to 0"]),
]


# The one case that starts a local Ray (the resources are checked against its nodes) is ``slow``.
STARTS_RAY = (["--set", "resources.cpus=64"],)


@pytest.mark.parametrize("flags,words", [
    pytest.param(flags, words, id=" ".join(flags)[:60], marks=[pytest.mark.slow] if flags in STARTS_RAY else [])
    for flags, words in CASES
])  # fmt: skip
def test_bad_input_exits_2_naming_the_problem_and_writes_nothing(flags, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(YAML_LIST)
    flags = [f.replace("{yaml_list}", str(bad_yaml)).replace("{port}", str(free_port())) for f in flags]
    store = tmp_path / "mlflow.db"
    with pytest.raises(SystemExit) if flags == ["--frobnicate"] else _no_raise() as exc:
        code = run_sweep([*flags, "--set", f"tracking.uri=sqlite:///{store}"] if "tracking.uri" not in str(flags) else flags)
    if exc is not None:
        code = exc.value.code
    assert code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, (word, err)
    # One message (in-process, Ray's log handlers may add noise; the subprocess test checks it all).
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err
    assert not store.exists() and not (tmp_path / "mlruns").exists() and not (tmp_path / "sweep_results").exists()


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_cli_error_is_one_line_without_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "sweep.run", "--set", "trainer.model.arch=resnet99"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "sweep.run: error: trainer.model.arch: Input should be 'resnet18', 'resnet9', 'vgg11' or 'vgg11_released'"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("preset", ["quickstart", "table2", "table1", "optuna", "groundtruth"])
def test_presets_load_and_open_with_their_command(preset):
    cfg = load_sweep_config(preset)
    assert cfg.name == preset
    text = (Path(__import__("sweep").__file__).parent / "configs" / f"{preset}.yaml").read_text()
    assert text.startswith(f"# {preset}:") and "COMMAND:" in text and "RUN TIME:" in text
    assert preset in preset_names()


def test_quickstart_and_table2_grids():
    quick = load_sweep_config("quickstart")
    lams = {dict(p.overrides).get("loss.lam") for p in grid_points(quick.search)}
    assert len(grid_points(quick.search)) >= 10 and len(lams - {None}) >= 3
    assert quick.trainer.data.dataset == "digits" and quick.resources.gpus == 0
    table2 = load_sweep_config("table2")
    points = grid_points(table2.search)
    assert len(points) == 20
    assert {dict(p.overrides)["loss.lam"] for p in points} == {1e-2, 1e-3, 1e-4, 1e-5, 1e-6}
    assert {dict(p.overrides)["loss.mu"] for p in points} == {1e-2, 1e-3, 1e-4, 1e-5}
    assert table2.trainer.model.arch == "resnet18" and table2.trainer.epochs == 200 and table2.resources.gpus == 0.25
    table1 = load_sweep_config("table1")
    assert [dict(p.overrides)["loss.preset"] for p in grid_points(table1.search)] == [
        "baseline", "anti_score_matching", "grad_norm", "score_matching"
    ]  # fmt: skip
    optuna = load_sweep_config("optuna")
    assert optuna.search.space["loss.lam"].low == 1e-7 and optuna.search.space["loss.mu"].high == 1e-1


def test_overrides_name_and_dotted_axes():
    cfg = load_sweep_config("quickstart", ["search.grid.loss.lam=[1e-5]", "trainer.epochs=3"], name="mine")
    assert cfg.name == "mine" and cfg.search.grid["loss.lam"] == [1e-5] and cfg.trainer.epochs == 3


def test_table2_unbiased_preset_is_table2_with_the_unbiased_term():
    paper, unbiased = load_sweep_config("table2"), load_sweep_config("table2_unbiased")
    assert paper.trainer.loss.stability == "biased" and unbiased.trainer.loss.stability == "unbiased"
    assert [p.overrides for p in grid_points(unbiased.search)] == [p.overrides for p in grid_points(paper.search)]
    same = {k: v for k, v in unbiased.trainer.model_dump().items() if k != "loss"}
    assert same == {k: v for k, v in paper.trainer.model_dump().items() if k != "loss"}
