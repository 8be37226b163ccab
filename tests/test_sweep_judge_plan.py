"""The judge stage's plan, printed before the judge trains: architecture, epochs, an estimated
time on this device, and how to shrink it."""

from __future__ import annotations

from sweep import judge_stage
from trainer.judge import JudgeConfig


def test_the_plan_multiplies_the_timed_step_by_the_steps_and_says_how_to_shrink(monkeypatch):
    jc = JudgeConfig(data={"dataset": "digits"}, arch="vgg11", width=0.5, epochs=100, batch_size=128)
    # 1000 images at batch 128: 8 steps per epoch (the last one short), 800 steps at 0.5 s: 400 s.
    monkeypatch.setattr(judge_stage, "step_seconds", lambda jc, device: (0.5, 1000, "cpu"))
    lines = judge_stage.plan(jc, "auto").splitlines()
    assert lines[0] == (
        "judge plan: vgg11 (width 0.5), 100 epochs of 1000 digits images at batch 128 on cpu: "
        "about 7 min (800 steps, 500 ms each in a 3-step timing here)"
    )
    assert "--set judge.epochs=N" in lines[1]
    assert judge_stage._duration(40) == "40 s" and judge_stage._duration(7 * 3600 + 300) == "7 h 05 min"


def test_step_seconds_times_real_steps_of_the_judge():
    jc = JudgeConfig(data={"dataset": "digits", "train_size": 100}, width=0.0625, epochs=1, batch_size=32)
    per_step, images, device = judge_stage.step_seconds(jc, "cpu")
    assert 0 < per_step < 60 and device == "cpu"
    assert images == 90  # the first 100 training images less the validation tenth
