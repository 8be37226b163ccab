"""The judge stage's plan, printed before the judge trains: architecture, epochs, a rough guess of
the time on this device (said to be one), and how to shrink it (never to grow it); then each epoch's
measured time."""

from __future__ import annotations

import pytest

from sweep import judge_stage
from trainer import keys
from trainer.judge import JudgeConfig


def test_the_plan_says_its_estimate_is_a_rough_guess_and_how_to_shrink(monkeypatch):
    jc = JudgeConfig(data={"dataset": "digits"}, arch="vgg11", width=0.5, epochs=100, batch_size=128)
    # 1000 images at batch 128: 8 steps per epoch (the last one short), 800 steps at 0.5 s: 400 s.
    monkeypatch.setattr(judge_stage, "step_seconds", lambda jc, device: (0.5, 1000, "cpu"))
    lines = judge_stage.plan(jc, "auto").splitlines()
    assert lines[0] == (
        "judge plan: vgg11 (width 0.5), 100 epochs of 1000 digits images at batch 128 on cpu (8 step(s) per "
        "epoch, 800 in all): a rough guess of about 7 min from 3 timed steps (500 ms each); each epoch's "
        "measured time follows"
    )
    assert lines[1].endswith("shrink it with --set judge.epochs=N (N < 100) or --set judge.width=0.25")
    assert judge_stage._duration(40) == "40 s" and judge_stage._duration(7 * 3600 + 300) == "7 h 05 min"


@pytest.mark.parametrize("epochs, width, hints", [
    (100, 1.0, ["--set judge.epochs=N (N < 100)", "--set judge.width=0.5"]),
    (2, 0.125, ["--set judge.epochs=N (N < 2)", "--set judge.width=0.0625"]),
    (2, 0.0625, ["--set judge.epochs=N (N < 2)"]),  # --smoke's judge: no narrower one is suggested
    (1, 0.0625, []),
])
def test_the_hints_only_shrink_the_judge(epochs, width, hints):
    jc = JudgeConfig(data={"dataset": "digits"}, arch="vgg11", width=width, epochs=epochs)
    assert judge_stage.shrink_hints(jc) == hints
    for hint in hints:
        if "width=" in hint:
            assert float(hint.split("=")[1]) < width


def test_the_progress_times_measured_epochs_not_the_start_up(monkeypatch, capsys):
    """A 60 s start-up (data, model) before epoch 1, whose steps took 4 s: the first line says 4 s
    per epoch; from epoch 2 on, the wall time between epochs."""
    clock = [0.0]
    monkeypatch.setattr(judge_stage.time, "time", lambda: clock[0])
    printer = judge_stage.EpochPrinter(epochs=10, every=0.0)
    clock[0] = 64.0
    printer({keys.EPOCH: 1, keys.EPOCH_SECONDS: 4.0}, {})
    clock[0] = 69.0
    printer({keys.EPOCH: 2, keys.EPOCH_SECONDS: 4.0}, {})
    first, second = capsys.readouterr().out.splitlines()
    assert first == "judge: epoch 1/10, 4.0 s/epoch measured, ETA ~0 min 36 s"
    assert second == "judge: epoch 2/10, 5.0 s/epoch measured, ETA ~0 min 40 s"


def test_step_seconds_times_real_steps_of_the_judge():
    jc = JudgeConfig(data={"dataset": "digits", "train_size": 100}, width=0.0625, epochs=1, batch_size=32)
    per_step, images, device = judge_stage.step_seconds(jc, "cpu")
    assert 0 < per_step < 60 and device == "cpu"
    assert images == 90  # the first 100 training images less the validation tenth
