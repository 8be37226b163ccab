"""Selection on validation data: what the objective reads, what the config refuses, what is tagged."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sweep import judge_runs, tracking
from sweep.config import ObjectiveConfig
from sweep.config_files import load_sweep_config
from sweep.objective import objective_value, worst_value
from sweep.record import SelectionSplit, Tag
from trainer import keys
from trainer.config import ConfigError

EVAL = {keys.STATUS: "running", keys.GAN_TEST: 0.4}


@pytest.mark.parametrize("name", ["weighted", "harmonic", "accuracy"])
def test_the_objective_moves_with_validation_accuracy_and_not_with_test_accuracy(name):
    cfg = ObjectiveConfig(name=name)
    base = objective_value(cfg, {**EVAL, keys.VAL_ACC: 0.7, keys.TEST_ACC: 0.7})
    # Test accuracy changes, validation accuracy held: the objective does not move.
    assert objective_value(cfg, {**EVAL, keys.VAL_ACC: 0.7, keys.TEST_ACC: 0.1}) == base
    assert objective_value(cfg, {**EVAL, keys.VAL_ACC: 0.7, keys.TEST_ACC: 0.99}) == base
    # Validation accuracy changes, test accuracy held: it moves, up with it.
    assert objective_value(cfg, {**EVAL, keys.VAL_ACC: 0.9, keys.TEST_ACC: 0.7}) > base
    assert objective_value(cfg, {**EVAL, keys.VAL_ACC: 0.5, keys.TEST_ACC: 0.7}) < base
    # No validation accuracy yet: no objective, whatever the test accuracy.
    assert objective_value(cfg, {**EVAL, keys.TEST_ACC: 0.9}) is None


def test_weighted_objective_values():
    cfg = ObjectiveConfig(name="weighted", weight=0.25)
    assert objective_value(cfg, {**EVAL, keys.VAL_ACC: 0.8, keys.TEST_ACC: 0.0}) == pytest.approx(0.25 * 0.8 + 0.75 * 0.4)


def test_a_test_split_objective_reads_test_accuracy_only():
    cfg = ObjectiveConfig(name="accuracy", split="test")
    assert objective_value(cfg, {**EVAL, keys.VAL_ACC: 0.2, keys.TEST_ACC: 0.6}) == 0.6
    assert objective_value(cfg, {**EVAL, keys.VAL_ACC: 0.9, keys.TEST_ACC: 0.6}) == 0.6


def test_groundtruth_objectives_read_their_metric_and_negate_the_fisher_divergence():
    metrics = {keys.STATUS: "running", keys.SCORE_ALIGNMENT: 0.3, keys.FISHER_DIVERGENCE: 12.5,
               keys.SAMPLE_LOGLIK: -2.5, keys.VAL_ACC: 0.9}  # fmt: skip
    assert objective_value(ObjectiveConfig(name="score_alignment", split="test"), metrics) == 0.3
    assert objective_value(ObjectiveConfig(name="fisher_divergence", split="test"), metrics) == -12.5
    assert objective_value(ObjectiveConfig(name="score_alignment", split="test"), {keys.STATUS: "running"}) is None
    diverged = {keys.STATUS: keys.Status.DIVERGED}
    assert objective_value(ObjectiveConfig(name="score_alignment", split="test"), diverged) == -1.0
    assert objective_value(ObjectiveConfig(name="fisher_divergence", split="test"), diverged) == -math.inf
    assert objective_value(ObjectiveConfig(), diverged) == 0.0 == worst_value(ObjectiveConfig())


GAUSSIANS = ["trainer.data.dataset=gaussians", "judge.arch=vgg11"]


@pytest.mark.parametrize(
    "overrides,words",
    [
        (["search.method=optuna", "search.space.loss.lam={low: 1.0e-5, high: 1.0e-3}", "search.objectives=[test/acc]"],
         ["test/acc is test-set data", "val/acc"]),
        (["search.method=optuna", "search.space.loss.lam={low: 1.0e-5, high: 1.0e-3}",
          "search.objectives=[val/acc, test/loss]"], ["test/loss is test-set data"]),
        (["trainer.data.val_size=0"], ["objective.split: val", "val_size is 0", "objective.split: test"]),
        (["objective.split=test"], ["objective.split: test", "validation split"]),
        (["objective.name=score_alignment"], ["score_alignment", "gaussians"]),
        ([*GAUSSIANS, "objective.name=score_alignment"], ["test images", "objective.split: test"]),
        ([*GAUSSIANS, "objective.name=fisher_divergence"], ["test images"]),
        (["search.method=optuna", "search.space.loss.lam={low: 1.0e-5, high: 1.0e-3}", "trainer.data.val_size=0",
          "objective.split=test", "search.objectives=[val/acc]"], ["val/acc", "validation split"]),
    ],
    ids=["optuna-test-acc", "optuna-test-loss", "val-without-split", "test-with-split", "alignment-on-digits",
         "alignment-on-val", "fisher-on-val", "val-acc-without-split"],
)  # fmt: skip
def test_the_config_refuses_selection_on_test_data(overrides, words):
    with pytest.raises(ConfigError) as e:
        load_sweep_config("quickstart", overrides)
    for word in words:
        assert word in str(e.value), (word, str(e.value))


def test_the_config_accepts_declared_selections():
    assert load_sweep_config("quickstart").objective.split == "val"
    paper = load_sweep_config("quickstart", ["trainer.data.val_size=0", "objective.split=test"])
    assert paper.objective.split == "test"
    gt = load_sweep_config("groundtruth", ["objective.name=score_alignment", "objective.split=test"])
    assert gt.objective.name == "score_alignment"


@pytest.mark.parametrize("override", ["objective.name=sample_loglik", "search.objectives=[eval/sample_loglik]"])
def test_sample_likelihood_cannot_select_and_the_refusal_says_why(override):
    # It cannot tell alignment from flatness (a flat model's samples score higher than a trained one's).
    optuna = ["search.method=optuna", "search.space.loss.lam={low: 1.0e-5, high: 1.0e-3}"]
    extra = optuna if override.startswith("search") else []
    with pytest.raises(ConfigError) as e:
        load_sweep_config("groundtruth", [*extra, override])
    assert "sample_loglik" in str(e.value) and "flat" in str(e.value), str(e.value)


def test_paper_table_presets_select_on_test_and_say_so_and_the_others_on_validation():
    for preset in ("table1", "table2"):
        cfg = load_sweep_config(preset)
        assert (cfg.trainer.data.val_size, cfg.objective.split) == (0, "test")
        assert "SELECTION:" in (Path(__import__("sweep").__file__).parent / "configs" / f"{preset}.yaml").read_text()
    for preset in ("quickstart", "optuna", "groundtruth"):
        cfg = load_sweep_config(preset)
        assert cfg.trainer.data.val_size > 0 and cfg.objective.split == "val"
        assert all(not m.startswith("test/") for m in cfg.search.objectives)


def test_cifar_presets_use_the_released_judge():
    from sweep.config import judge_config

    for preset in ("table1", "table2", "optuna"):
        assert judge_config(load_sweep_config(preset)).arch == "vgg11_released"


def test_a_trial_is_tagged_with_its_selection_split_and_its_judges_key_and_arch(tmp_path):
    mc = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracking.ensure_experiment(mc, "e", (tmp_path / "artifacts").as_uri())
    judge_file = tmp_path / "judge.pt"
    judge_file.write_bytes(b"x")
    judge = judge_runs.start_judge(mc, (tmp_path / "artifacts").as_uri(), "abc123")
    judge_runs.store_judge(mc, judge, "abc123", {"arch": "vgg11_released"}, judge_file)
    _, parent = tracking.open_parent(mc, "e", None, "s", {"objective": {"split": "test"}}, None)
    assert mc.get_run(parent).data.tags[Tag.SELECTION_SPLIT] == "test"
    run = tracking.TrialRun(mc.tracking_uri, exp, parent, "s", key="k")
    run_id = run.open("p", "t", {}, judge=judge, selection_split=SelectionSplit.TEST)
    tags = mc.get_run(run_id).data.tags
    assert tags[Tag.SELECTION_SPLIT] == "test"
    assert (tags[Tag.JUDGE], tags[Tag.JUDGE_KEY], tags[Tag.JUDGE_ARCH]) == (judge, "abc123", "vgg11_released")
