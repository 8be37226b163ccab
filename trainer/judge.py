"""The GAN-test judge: an independently trained classifier, trained once per config and cached.

GAN-test (Table 1/2) asks a judge that never saw the evaluated models which class each generated
sample shows. The judge is a plain cross-entropy run of its own architecture (VGG-11 by default,
as in the released code) with its own seed. :func:`train_judge` stores it at
``cache_dir/judge-<key>.pt``, where the key hashes the config, so every trial (and every later
sweep) with the same judge config reuses one file; :func:`load_judge` reads it safely.

    python -m trainer.judge --set data.dataset=digits --set width=0.125 --set epochs=4 --cache judges
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from trainer.config import ConfigError, DataConfig, TrainConfig, parse_override, set_dotted, validate
from trainer.data import load_dataset
from trainer.keys import STATUS, TEST_ACC
from trainer.models import build_model
from trainer.train import CHECKPOINT, load_checkpoint, run, save_checkpoint

JUDGE_FORMAT = 1  # version of the judge file layout


class JudgeConfig(BaseModel):
    """How the judge is trained. Its defaults are the paper-scale judge; presets shrink it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data: DataConfig = DataConfig()
    # VGG-11 as in the released code. The team's VGG-11 pools with ceil_mode and ends in a global
    # average pool, so it also fits 8x8 digits (8 -> 4 -> 2 -> 1): no second architecture needed.
    arch: Literal["resnet18", "resnet9", "vgg11"] = "vgg11"
    width: float = Field(1.0, gt=0)  # channel multiplier (1.0: 64 ... 512 channels)
    beta: float | None = Field(10.0, gt=0)  # softplus sharpness, as in the evaluated models
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.1, gt=0)  # SGD learning rate (momentum 0.9, wd 5e-4, steps at 50%/75%)
    seed: int = 1000  # its own seed, apart from the trials' small seeds 0, 1, 2, ...

    def key(self) -> str:
        """Short sha256 of the canonical JSON of everything that changes the trained judge.

        ``data.data_dir`` and ``data.download`` say where the data comes from, not what it is,
        so they are left out: the same judge is found from any data directory.
        """
        tree = self.model_dump(mode="json")
        for field in ("data_dir", "download"):
            tree["data"].pop(field)
        canonical = json.dumps(tree, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def judge_path(cfg: JudgeConfig, cache_dir: str | Path) -> Path:
    """Where :func:`train_judge` keeps the judge of ``cfg``."""
    return Path(cache_dir) / f"judge-{cfg.key()}.pt"


def train_config(cfg: JudgeConfig, device: str = "auto") -> TrainConfig:
    """The trainer config of the judge's run: plain cross-entropy, the paper's SGD schedule at
    ``cfg.lr``, no evaluations (the judge is what evaluates)."""
    tree = {
        "data": cfg.data.model_dump(),
        "model": {"arch": cfg.arch, "width": cfg.width, "beta": cfg.beta},
        "loss": {"kind": "ce"},
        "optim": {"lr": cfg.lr},
        "eval": {"enabled": False},
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "device": device,
    }
    return validate(TrainConfig, tree)


def _train(cfg: JudgeConfig, device: str) -> dict[str, Any]:
    """Train the judge with the trainer's own loop; returns the judge file's contents."""
    train_cfg = train_config(cfg, device)
    with tempfile.TemporaryDirectory(prefix="judge-") as tmp:
        metrics = run(train_cfg, checkpoint_dir=tmp)
        if metrics[STATUS] != "finished":
            raise RuntimeError(f"judge training ended as {metrics[STATUS]!r}; lower judge.lr")
        state = load_checkpoint(Path(tmp) / CHECKPOINT)["model"]
    data = load_dataset(cfg.data, "cpu")  # for its shape: classes and channels
    return {
        "format": JUDGE_FORMAT,
        "arch": cfg.arch,
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "width": cfg.width,
        "beta": cfg.beta,
        "state_dict": state,
        "config": cfg.model_dump(mode="json"),
        "key": cfg.key(),
        "test_acc": metrics[TEST_ACC],
    }


def train_judge(cfg: JudgeConfig, cache_dir: str | Path, device: str = "auto") -> Path:
    """Train the judge of ``cfg`` unless ``cache_dir`` already holds it; return its path.

    The file holds arch, num_classes, in_channels, width, beta, state_dict, config and test_acc.
    It is written atomically, so a reader never sees half a judge.
    """
    path = judge_path(cfg, cache_dir)
    if path.is_file():
        return path
    payload = _train(cfg, device)
    save_checkpoint(path, payload)
    return path


def read_judge(path: str | Path) -> dict[str, Any]:
    """The judge file's contents (tensors on the CPU), loaded with ``weights_only=True``."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def load_judge(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The judge stored at ``path``, on ``device``, in eval mode, its weights frozen."""
    info = read_judge(path)
    model = build_model(info["arch"], info["num_classes"], info["in_channels"], info["width"], info["beta"])
    model.load_state_dict(info["state_dict"])
    model.requires_grad_(False)
    return model.to(device).eval()


def main(argv: list[str] | None = None) -> int:
    """``python -m trainer.judge --set KEY=VALUE ... --cache DIR``: train (or find) a judge."""
    parser = argparse.ArgumentParser(prog="python -m trainer.judge", description="Train or find a cached GAN-test judge.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="JudgeConfig field, e.g. data.dataset=digits, width=0.125, epochs=4")
    parser.add_argument("--cache", default="judges", help="folder of judge files (default: ./judges)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda[:N], mps")
    args = parser.parse_args(argv)
    try:
        tree: dict[str, Any] = {}
        for item in args.overrides:
            set_dotted(tree, *parse_override(item))
        cfg = validate(JudgeConfig, tree)
        train_config(cfg, args.device)  # checks the device name before any work
        cached = judge_path(cfg, args.cache).is_file()
        path = train_judge(cfg, args.cache, args.device)
    except ConfigError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    print(f"judge {cfg.key()} ({'cached' if cached else 'trained'}): {path}")
    print(f"{TEST_ACC} {read_judge(path)['test_acc']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
