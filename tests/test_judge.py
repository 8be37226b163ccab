"""Tests of the GAN-test judge: config key, default arch, cache (a second call does not train), safe loading."""

from __future__ import annotations

import pickle

import pytest
import torch
from pydantic import ValidationError

from trainer import judge as judge_mod
from trainer.checkpoint import CheckpointError, load_judge, read_judge
from trainer.config import ConfigError, DataConfig, validate
from trainer.data import load_dataset
from trainer.evaluation import gan_test
from trainer.judge import JudgeConfig, train_judge

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
    assert JudgeConfig(**{**TINY, "arch": "resnet9"}).key() != cfg.key()  # the arch is part of the key
    moved = cfg.model_copy(update={"data": cfg.data.model_copy(update={"data_dir": "/elsewhere"})})
    assert moved.key() == cfg.key()  # where the data lives does not change the judge
    with pytest.raises(ValidationError, match="epoch"):
        JudgeConfig(epoch=3)  # a typo is an error, not a default


def test_default_arch_is_the_released_judge_where_it_fits():
    cifar = {"dataset": "cifar100"}
    assert JudgeConfig(data=cifar).arch == "vgg11_released"
    assert JudgeConfig(data={"dataset": "synthetic", "image_size": 16}).arch == "vgg11_released"
    assert JudgeConfig(data={"dataset": "digits"}).arch == "vgg11"  # 8 px: four 2x pools do not fit
    assert JudgeConfig(data=cifar, arch="vgg11").arch == "vgg11"  # an explicit arch stays
    # The resolved arch is what the key hashes: unset and explicit give the same judge file.
    assert JudgeConfig(data=cifar).key() == JudgeConfig(data=cifar, arch="vgg11_released").key()
    assert JudgeConfig(data=cifar).key() != JudgeConfig(data=cifar, arch="vgg11").key()
    with pytest.raises(ConfigError, match=r"judge\.arch: vgg11_released needs images of at least 16 px.*digits has 8 px"):
        validate(JudgeConfig, {"arch": "vgg11_released", "data": {"dataset": "digits"}}, prefix="judge")


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
    assert {"arch", "num_classes", "in_channels", "image_size", "width", "beta", "state_dict", "config", "key",
            "test_acc"} <= info.keys()
    assert (info["arch"], info["num_classes"], info["in_channels"], info["image_size"]) == ("vgg11", 10, 1, 8)
    assert info["key"] == cfg.key()
    assert JudgeConfig(**info["config"]) == cfg
    judge = load_judge(path, "cpu")
    assert not judge.training and not any(p.requires_grad for p in judge.parameters())

    data = load_dataset(cfg.data, "cpu")
    assert gan_test(data.test_x, data.test_y, judge) == info["test_acc"]
    assert info["test_acc"] > 0.3  # far above chance (0.1): it did learn


def test_load_judge_refuses_pickled_code(tmp_path):
    path = tmp_path / "judge-evil.pt"
    torch.save({"arch": "vgg11", "payload": pickle.PickleError("not a tensor")}, path)
    with pytest.raises(CheckpointError, match="judge-evil.pt.*cannot be read") as caught:
        load_judge(path)
    assert isinstance(caught.value.__cause__, pickle.UnpicklingError)  # refused by weights_only


def test_load_judge_names_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="judge .*nowhere.pt' does not exist"):
        read_judge(tmp_path / "nowhere.pt")
    torch.save({"model": {}}, tmp_path / "run.pt")
    with pytest.raises(CheckpointError, match="is not a judge file"):
        read_judge(tmp_path / "run.pt")


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    assert judge_mod.main(["--set", "widht=2", "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "widht" in err and err.count("\n") == 1
    assert judge_mod.main(["--set", "epochs=1", "--device", "gpu", "--cache", str(tmp_path / "c")]) == 2
    assert "device" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
