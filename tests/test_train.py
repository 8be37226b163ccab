"""The training loop: learning, the validation and test passes, the report contract, resume,
divergence, evaluations, the CLI."""

import json

import pytest
import torch
import torch.nn.functional as F

from trainer import items, keys
from trainer.__main__ import main
from trainer.bench.measures import VARIANTS, bench
from trainer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from trainer.config import ConfigError, load_config
from trainer.data import load_dataset
from trainer.models import build_model
from trainer.train import run
from trainer.stats import wilson


def tiny(**over):
    """A config that trains in about a second on a CPU."""
    cfg = {
        "data": {"dataset": "digits", "train_size": 128, "test_size": 64},
        "model": {"arch": "resnet9", "width": 1 / 16},
        "epochs": 2,
        "batch_size": 32,
        "seed": 3,
        "eval": {"enabled": False},
    }
    for key, value in over.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    return cfg


def test_short_digits_run_lowers_the_loss():
    seen = []
    cfg = tiny(
        data={"train_size": 384, "augment": False},
        model={"width": 1 / 8},
        loss={"preset": "score_matching"},
        optim={"lr": 0.05, "milestones": []},
    )
    final = run(cfg, report=lambda m, f: seen.append(m))
    assert [m[keys.EPOCH] for m in seen] == [1, 2]
    assert seen[1][keys.TRAIN_LOSS] < 0.75 * seen[0][keys.TRAIN_LOSS]
    # Training accuracy well above chance (0.1); test accuracy lags after 24 steps, because the
    # BatchNorm running statistics are still settling (test_validation_and_test_passes checks
    # what test/acc is).
    assert final[keys.TRAIN_ACC] > 0.5
    assert final[keys.STATUS] == "finished"
    for key in (
        keys.TRAIN_CE,
        keys.TRAIN_TRACE,
        keys.TRAIN_GRAD_NORM,
        keys.TRAIN_STABILITY,
        keys.TRAIN_ACC,
        keys.LR,
        keys.EPOCH_SECONDS,
        keys.IMAGES_PER_SECOND,
        keys.TEST_LOSS,
        keys.VAL_ACC,
        keys.VAL_LOSS,
    ):
        assert isinstance(final[key], float)
    assert all(keys.VAL_ACC in m and keys.VAL_LOSS in m for m in seen)  # every epoch
    assert final[keys.TRAIN_GRAD_NORM] > 0 and final[keys.TRAIN_STABILITY] > 0


def naive_accuracy_and_ce(model, images, labels):
    """Image by image, in eval mode: the reference for the batched validation and test passes."""
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for x, y in zip(images, labels):
            logits = model(x[None])
            correct += int(logits.argmax(1).item() == y.item())
            loss += F.cross_entropy(logits, y[None]).item()
    return correct / len(labels), loss / len(labels)


def test_validation_and_test_passes_measure_the_checkpointed_model(tmp_path):
    cfg = tiny(epochs=1, data={"train_size": 200, "test_size": 40})  # augmentation on: eval must not use it
    final = run(cfg, checkpoint_dir=tmp_path)
    resolved = load_config(cfg)
    data = load_dataset(resolved.data)
    assert len(data.val_y) == 20 and len(data.train_y) == 180
    model = build_model("resnet9", 10, 1, width=1 / 16)
    model.load_state_dict(load_checkpoint(tmp_path / "last.pt")["model"])
    val_acc, val_loss = naive_accuracy_and_ce(model, data.val_x, data.val_y)
    test_acc, test_loss = naive_accuracy_and_ce(model, data.test_x, data.test_y)
    assert final[keys.VAL_ACC] == pytest.approx(val_acc) and final[keys.VAL_LOSS] == pytest.approx(val_loss, rel=1e-5)
    assert final[keys.TEST_ACC] == pytest.approx(test_acc) and final[keys.TEST_LOSS] == pytest.approx(test_loss, rel=1e-5)
    # The two splits are different images: their losses differ.
    assert final[keys.VAL_LOSS] != final[keys.TEST_LOSS]
    # Each accuracy's 95 % Wilson interval over its split's images (20 and 40), logged beside it.
    for key, acc, n in ((keys.VAL_ACC, val_acc, 20), (keys.TEST_ACC, test_acc, 40)):
        interval = wilson(round(acc * n), n)
        assert (final[keys.lo_key(key)], final[keys.hi_key(key)]) == pytest.approx((interval.lo, interval.hi))
        assert final[keys.lo_key(key)] <= final[key] <= final[keys.hi_key(key)]


def test_no_validation_split_reports_no_validation_metrics():
    seen = []
    final = run(tiny(epochs=2, data={"val_size": 0}), report=lambda m, f: seen.append(m))
    assert len(seen) == 2 and not any(k.startswith("val/") for m in seen for k in m)
    assert keys.TEST_ACC in final and keys.VAL_ACC not in final


def test_report_follows_the_checkpoint_and_lr_steps_at_the_milestones(tmp_path):
    def report(metrics, files):
        state = load_checkpoint(tmp_path / "last.pt")
        assert state["epoch"] == metrics[keys.EPOCH] and files == {}
        lrs.append(metrics[keys.LR])
        statuses.append(metrics[keys.STATUS])

    lrs, statuses = [], []
    run(tiny(epochs=4, optim={"milestones": [0.5, 0.75]}), report=report, checkpoint_dir=tmp_path)
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert statuses == ["running"] * 3 + ["finished"]


class Interrupt(Exception):
    pass


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    # Score matching (noise generator), augmentation (data generator) and an lr step.
    cfg = tiny(epochs=3, loss={"preset": "score_matching"}, optim={"milestones": [0.5]})
    whole = run(cfg, checkpoint_dir=tmp_path / "whole")

    def stop_after_first_epoch(metrics, files):
        if metrics[keys.EPOCH] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(cfg, report=stop_after_first_epoch, checkpoint_dir=tmp_path / "split")
    assert load_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 1
    resumed_epochs = []
    resumed = run(
        cfg, report=lambda m, f: resumed_epochs.append(m[keys.EPOCH]), checkpoint_dir=tmp_path / "split"
    )
    assert resumed_epochs == [2, 3]

    a = load_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed[keys.TRAIN_LOSS] == whole[keys.TRAIN_LOSS]

    # A finished run resumes to its final metrics without training again.
    again = run(
        cfg, report=lambda m, f: pytest.fail("no epoch left to report"), checkpoint_dir=tmp_path / "split"
    )
    assert again[keys.STATUS] == "finished" and again[keys.EPOCH] == 3
    # Resuming with a different training config is refused, naming the field.
    with pytest.raises(ConfigError, match="loss.lam"):
        run({**cfg, "loss": {"preset": "score_matching", "lam": 0.5}}, checkpoint_dir=tmp_path / "split")
    # So is another validation split: the images trained on would change.
    with pytest.raises(ConfigError, match="data.val_size"):
        run(tiny(epochs=3, loss={"preset": "score_matching"}, optim={"milestones": [0.5]}, data={"val_size": 0}),
            checkpoint_dir=tmp_path / "split")


def test_resume_from_a_truncated_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(1000)}, "config": {}})
    path.write_bytes(path.read_bytes()[:200])  # truncated, as by a full disk
    with pytest.raises(CheckpointError, match="last.pt.*cannot be read as a torch file"):
        run(tiny(), checkpoint_dir=tmp_path)
    save_checkpoint(path, {"weights": torch.ones(1)})
    with pytest.raises(CheckpointError, match="is not a training checkpoint"):
        run(tiny(), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_config_that_blows_up_ends_as_diverged(tmp_path):
    reports = []
    cfg = tiny(loss={"kind": "anti_score_matching", "lam": 1e8, "tau": 1e30})
    out = run(cfg, report=lambda m, f: reports.append(m), checkpoint_dir=tmp_path)
    assert out[keys.STATUS] == "diverged"
    assert [m[keys.STATUS] for m in reports] == ["diverged"]
    assert not (tmp_path / "last.pt").exists()  # no checkpoint for the diverged epoch


def test_one_epoch_with_evaluations_reports_eval_metrics_and_files(tmp_path):
    cfg = tiny(
        epochs=1,
        eval={
            "enabled": True,
            "samples": 8,
            "steps": 2,
            "density_images": 16,
            "density_sigmas": [1e-3, 1e-1],
            "perturbation_images": 16,
            "perturbation_points": 3,
            "grid_images": 4,
        },
    )
    got = []
    run(cfg, report=lambda m, f: got.append((m, f)), out_dir=tmp_path)
    ((metrics, files),) = got
    assert keys.density_ratio_key(1e-3) in metrics and keys.EVAL_SECONDS in metrics
    assert keys.GAN_TEST not in metrics  # no judge configured
    assert files and all(str(tmp_path / "epoch_001") in p for p in files.values())
    assert all((tmp_path / "epoch_001").joinpath(p).is_file() for p in files.values())
    # Each validation and test image's correctness, kept with the evaluation for paired comparisons:
    # as many as images, and their mean the accuracy the epoch reported.
    codes = json.loads(open(files["items"]).read())
    assert set(codes) == {keys.VAL_ACC, keys.TEST_ACC}  # no judge: no GAN-test verdicts
    for key in (keys.VAL_ACC, keys.TEST_ACC):
        outcomes = items.decode(codes[key])
        assert outcomes.mean() == pytest.approx(metrics[key])
    assert len(items.decode(codes[keys.TEST_ACC])) == 64


def test_cli_runs_resumes_and_rejects_bad_input(tmp_path, capsys):
    args = [
        "--set",
        "data.dataset=synthetic",
        "--set",
        "data.train_size=64",
        "--set",
        "epochs=1",
        "--set",
        "model.arch=resnet9",
        "--set",
        "model.width=0.0625",
        "--set",
        "batch_size=32",
        "--set",
        "eval.enabled=false",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(args) == 0
    assert (tmp_path / "out" / "checkpoints" / "last.pt").is_file()
    assert "status: finished after 1/1 epochs" in capsys.readouterr().out
    assert main(args) == 0  # resumes the finished run
    capsys.readouterr()
    assert main(["--set", "loss.sigma=0", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "loss.sigma" in err[0]
    assert not (tmp_path / "bad").exists()


def test_bench_times_every_variant_against_ce():
    result = bench("resnet9", width=1 / 16, batch=4, steps=1, warmup=0, device="cpu", image_size=8)
    rows = {r["variant"]: r for r in result["results"]}
    assert set(rows) == set(VARIANTS)
    for row in rows.values():  # each ratio is its median over ce's
        assert row["ratio_to_ce"] == pytest.approx(row["median_s"] / rows["ce"]["median_s"])
    assert all(r["median_s"] > 0 for r in rows.values())
    assert isinstance(result["targets"]["taylor_cheaper_than_hutchinson"], bool)
