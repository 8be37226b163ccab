"""Tests of the GAN-test judge: config key, cache (a second call does not train), safe loading."""

from __future__ import annotations

import pickle

import pytest
import torch
from pydantic import ValidationError

from trainer import judge as judge_mod
from trainer.config import DataConfig
from trainer.data import load_dataset
from trainer.evaluation import gan_test
from trainer.judge import JudgeConfig, load_judge, read_judge, train_judge

# Learns digits to ~50% test accuracy in 2 epochs (augmenting 8x8 images with 4-pixel crops
# would need many more).
TINY = dict(
    data=DataConfig(dataset="digits", train_size=512, test_size=120, augment=False),
    width=0.125,
    epochs=2,
    batch_size=32,
    lr=0.05,
)


def test_key_names_what_changes_the_judge():
    cfg = JudgeConfig(**TINY)
    assert cfg.key() == JudgeConfig(**TINY).key() and len(cfg.key()) == 12
    assert JudgeConfig(**{**TINY, "seed": 1}).key() != cfg.key()
    assert JudgeConfig(**{**TINY, "width": 0.25}).key() != cfg.key()
    moved = cfg.model_copy(update={"data": cfg.data.model_copy(update={"data_dir": "/elsewhere"})})
    assert moved.key() == cfg.key()  # where the data lives does not change the judge
    with pytest.raises(ValidationError, match="epoch"):
        JudgeConfig(epoch=3)  # a typo is an error, not a default


def test_train_judge_caches_and_its_gan_test_on_real_images_is_its_test_accuracy(tmp_path, monkeypatch):
    calls = []
    real_run = judge_mod.run

    def counting_run(*args, **kwargs):
        calls.append(args)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(judge_mod, "run", counting_run)
    cfg = JudgeConfig(**TINY)
    path = train_judge(cfg, tmp_path, device="cpu")
    assert calls and len(calls) == 1
    assert path == tmp_path / f"judge-{cfg.key()}.pt" and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left behind
    stamp = path.stat().st_mtime_ns

    # The second call finds the file: no training, the file untouched.
    assert train_judge(JudgeConfig(**TINY), tmp_path, device="cpu") == path
    assert len(calls) == 1 and path.stat().st_mtime_ns == stamp

    info = read_judge(path)
    assert {"arch", "num_classes", "in_channels", "width", "beta", "state_dict", "config", "test_acc"} <= info.keys()
    assert (info["arch"], info["num_classes"], info["in_channels"]) == ("vgg11", 10, 1)
    assert JudgeConfig(**info["config"]) == cfg
    judge = load_judge(path, "cpu")
    assert not judge.training and not any(p.requires_grad for p in judge.parameters())

    data = load_dataset(cfg.data, "cpu")
    assert gan_test(data.test_x, data.test_y, judge) == info["test_acc"]
    assert info["test_acc"] > 0.3  # far above chance (0.1): it did learn


def test_load_judge_refuses_pickled_code(tmp_path):
    path = tmp_path / "judge-evil.pt"
    torch.save({"arch": "vgg11", "payload": pickle.PickleError("not a tensor")}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_judge(path)


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    assert judge_mod.main(["--set", "widht=2", "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "widht" in err and err.count("\n") == 1
    assert judge_mod.main(["--set", "epochs=1", "--device", "gpu", "--cache", str(tmp_path / "c")]) == 2
    assert "device" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
