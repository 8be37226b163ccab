"""The GAN-test judge: an independently trained classifier, trained once per config and cached.

GAN-test (Table 1/2) asks a judge that never saw the evaluated models which class each generated
sample shows. The judge is a plain cross-entropy run of its own architecture with its own seed:
by default ``vgg11_released`` (the layout of the authors' released judge) on images of 16 px or
more (CIFAR), and the standard ``vgg11`` on smaller ones (8x8 digits), where four 2x pools do not
fit. :func:`train_judge` stores it at ``cache_dir/judge-<key>.pt``, where the key hashes the config
(the arch included), so every trial (and every later sweep) with the same judge config reuses one
file; trainer.checkpoint reads it safely (``read_judge``, ``load_judge``).

    python -m trainer.judge --set data.dataset=digits --set width=0.125 --set epochs=4 --cache judges
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainer.checkpoint import CHECKPOINT, JUDGE_FORMAT, load_checkpoint, read_judge, save_checkpoint
from trainer.config import Arch, ConfigError, DataConfig, TrainConfig, check_arch_fits, parse_override, set_dotted, validate
from trainer.data import load_dataset
from trainer.keys import STATUS, TEST_ACC, Status
from trainer.train import Report, run


def default_judge_arch(data: DataConfig) -> str:
    """The released judge where its four 2x pools fit (16 px or more), else the standard VGG-11."""
    return "vgg11_released" if data.resolved_image_size() >= 16 else "vgg11"


class JudgeConfig(BaseModel):
    """How the judge is trained. Its defaults are the paper-scale judge; presets shrink it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data: DataConfig = DataConfig()
    # None: default_judge_arch(data), filled in at validation so that the key and the judge file
    # record the arch actually trained. vgg11_released is refused on images under 16 px.
    arch: Arch | None = None
    width: float = Field(1.0, gt=0)  # channel multiplier (1.0: 64 ... 512 channels)
    beta: float | None = Field(10.0, gt=0)  # softplus sharpness, as in the evaluated models
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.1, gt=0)  # SGD learning rate (momentum 0.9, wd 5e-4, steps at 50%/75%)
    seed: int = 1000  # its own seed, apart from the trials' small seeds 0, 1, 2, ...

    @model_validator(mode="after")
    def _resolve_arch(self) -> JudgeConfig:
        if self.arch is None:
            # Bypasses validate_assignment (which would re-run this validator): the value is valid.
            self.__dict__["arch"] = default_judge_arch(self.data)
        check_arch_fits(self.arch, self.data, "arch")
        return self

    def key(self) -> str:
        """Short sha256 of the canonical JSON of everything that changes the trained judge.

        ``data.data_dir`` and ``data.download`` say where the data comes from, not what it is,
        so they are left out: the same judge is found from any data directory. ``data.verify=false``
        (an own, unchecked copy of CIFAR) is kept in: such a judge is not the published data's.
        """
        tree = self.model_dump(mode="json")
        for field in ("data_dir", "download"):
            tree["data"].pop(field)
        if tree["data"]["verify"]:  # the published files: keys stay those of judges trained before the field
            tree["data"].pop("verify")
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


def _train(cfg: JudgeConfig, device: str, report: Report | None = None) -> dict[str, Any]:
    """Train the judge with the trainer's own loop; returns the judge file's contents."""
    train_cfg = train_config(cfg, device)
    with tempfile.TemporaryDirectory(prefix="judge-") as tmp:
        metrics = run(train_cfg, report=report, checkpoint_dir=tmp)
        if metrics[STATUS] != Status.FINISHED:
            raise RuntimeError(f"judge training ended as {metrics[STATUS]!r}; lower judge.lr")
        state = load_checkpoint(Path(tmp) / CHECKPOINT)["model"]
    data = load_dataset(cfg.data, "cpu")  # for its shape: classes, channels, image size
    return {
        "format": JUDGE_FORMAT,
        "arch": cfg.arch,
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "image_size": data.image_size,
        "width": cfg.width,
        "beta": cfg.beta,
        "state_dict": state,
        "config": cfg.model_dump(mode="json"),
        "key": cfg.key(),
        "test_acc": metrics[TEST_ACC],
    }


def train_judge(cfg: JudgeConfig, cache_dir: str | Path, device: str = "auto", report: Report | None = None) -> Path:
    """Train the judge of ``cfg`` unless ``cache_dir`` already holds it; return its path.

    ``report(metrics, files)`` is called after every epoch (:func:`trainer.train.run`'s), e.g.
    to show progress.

    The file holds arch, num_classes, in_channels, image_size, width, beta, state_dict, config,
    key and test_acc.
    It is written atomically, so a reader never sees half a judge.
    """
    path = judge_path(cfg, cache_dir)
    if path.is_file():
        return path
    payload = _train(cfg, device, report)
    save_checkpoint(path, payload)
    return path


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
