"""Packing trials onto a GPU (``resources.gpus`` = 1/N): refused before anything starts when the
trials' estimated memory exceeds ``resources.gpu_memory_gib``. No GPU needed: the check runs
before Ray or CUDA."""

from __future__ import annotations

import math

import pytest

from helpers import run_sweep
from sweep import preflight, resources
from sweep.config_files import load_sweep_config
from trainer.memory import GIB, estimate_memory


@pytest.mark.parametrize("gpus,trials", [(0.25, 4), (0.33, 3), (0.5, 2), (0.2, 5), (1, 1), (2, 1), (0, 0)])
def test_trials_per_gpu(gpus, trials):
    assert resources.trials_per_gpu(gpus) == trials


def _quickstart_on_gpu(*overrides: str):
    return load_sweep_config("quickstart", ["trainer.device=cuda", *overrides], None)


def test_a_packing_that_fits_passes_and_an_unknown_memory_is_a_note(capsys):
    resources.check_packing(_quickstart_on_gpu("resources.gpus=0.25", "resources.gpu_memory_gib=80"))
    resources.check_packing(_quickstart_on_gpu("resources.gpus=0.25"))
    assert "not checked against GPU memory" in capsys.readouterr().out
    resources.check_packing(_quickstart_on_gpu("resources.gpus=0", "resources.gpu_memory_gib=0.001"))  # no GPU
    resources.check_packing(_quickstart_on_gpu("resources.gpus=0.25", "resources.gpu_memory_gib=0.001",
                                               "trainer.device=cpu"))  # fmt: skip


def test_the_largest_trial_of_the_grid_counts():
    # A ce base with one score-matching point: the point saves more, so it sets the need (the
    # evaluations are off: at quickstart's sizes they would need more than either training step).
    # No judge either: on a GPU of half a GiB its training (CUDA context included) would not fit.
    no_eval = ["trainer.eval.enabled=false", "objective.name=accuracy", "resources.gpus=1", "judge=null"]
    flags = [*no_eval, "trainer.loss.preset=baseline", "search.grid={}", "search.points=[{loss.preset: score_matching}]"]
    base = estimate_memory(_quickstart_on_gpu(*flags).trainer).footprint_bytes
    point = estimate_memory(_quickstart_on_gpu(*no_eval).trainer).footprint_bytes  # quickstart's base: score matching
    assert base < point - 1000
    resources.check_packing(_quickstart_on_gpu(*flags, f"resources.gpu_memory_gib={(point + 1000) / GIB}"))
    with pytest.raises(preflight.PreflightError, match="resources.gpus=1 packs 1 trials per GPU"):
        resources.check_packing(_quickstart_on_gpu(*flags, f"resources.gpu_memory_gib={(point - 1000) / GIB}"))


def test_a_packing_beyond_the_gpu_memory_exits_2_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    footprint = estimate_memory(_quickstart_on_gpu().trainer).footprint_bytes / GIB
    memory = 2.5 * footprint  # two trials fit, four do not
    store = tmp_path / "mlflow.db"
    code = run_sweep(["--set", "trainer.device=cuda", "--set", "resources.gpus=0.25",
                      "--set", f"resources.gpu_memory_gib={memory}", "--set", f"tracking.uri=sqlite:///{store}"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert "resources.gpus=0.25 packs 4 trials per GPU" in lines[0]
    assert f"{4 * footprint:.1f} GiB in all" in lines[0]
    assert f"resources.gpu_memory_gib is {memory:g}" in lines[0]
    assert f"--set resources.gpus=0.5 ({math.floor(memory / footprint)} per GPU)" in lines[0]
    assert not store.exists() and list(tmp_path.iterdir()) == []


def test_one_trial_that_cannot_fit_says_so():
    with pytest.raises(preflight.PreflightError, match="one trial does not fit: lower trainer.batch_size"):
        resources.check_packing(_quickstart_on_gpu("resources.gpus=1", "resources.gpu_memory_gib=0.1"))


@pytest.mark.parametrize("preset,per_gpu", [("table2", 4), ("table1", 4), ("optuna", 4), ("table2_unbiased", 3)])
def test_cifar_presets_pack_what_fits_their_gpus(preset, per_gpu):
    cfg = load_sweep_config(preset)
    assert resources.trials_per_gpu(cfg.resources.gpus) == per_gpu and cfg.resources.cpus == 1
    resources.check_packing(cfg)  # raises if the packing does not fit resources.gpu_memory_gib
    # The IEEE variant the headers point to: one trial per GPU.
    resources.check_packing(load_sweep_config(preset, ["trainer.loss.precision=ieee", "resources.gpus=1"]))


def test_an_estimate_is_made_once_per_memory_key_and_equals_a_fresh_one():
    # The preflight keeps trainer.memory's estimate per memory key: points differing only in
    # what the estimate does not read (λ, μ, the learning rate) share one; another batch does not.
    one = _quickstart_on_gpu("trainer.loss.lam=1.0e-3").trainer
    other = _quickstart_on_gpu("trainer.loss.lam=1.0e-5", "trainer.optim.lr=0.2").trainer
    bigger = _quickstart_on_gpu("trainer.batch_size=96").trainer
    assert resources._estimate(one) is resources._estimate(other)
    assert resources._estimate(one) == estimate_memory(other)  # the kept value is what a fresh one gives
    assert resources._estimate(bigger).footprint_bytes > resources._estimate(one).footprint_bytes
