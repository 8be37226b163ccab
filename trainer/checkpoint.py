"""Checkpoint and judge files: one atomic writer, one safe reader.

Every file the trainer writes (a run's ``last.pt``, a judge's ``judge-<key>.pt``) holds tensors
and plain containers only, so every read goes through :func:`load_file`, which uses
``torch.load(weights_only=True)``: a file that would run pickled code is refused, and a missing,
truncated or corrupt file raises :class:`CheckpointError` naming the file and the problem.
Writes go to a temporary file in the same folder and are renamed into place, so a reader never
sees half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.config import ConfigError
from trainer.models import build_model

CHECKPOINT = "last.pt"  # a run's checkpoint, inside its checkpoint_dir
JUDGE_FORMAT = 2  # version of the judge file layout; 2 added image_size
JUDGE_KEYS = frozenset({"arch", "state_dict", "num_classes"})  # what makes a file a judge file
CHECKPOINT_KEYS = frozenset({"model", "config"})  # what makes a file a training checkpoint


class CheckpointError(ConfigError):
    """A checkpoint or judge file that is missing, unreadable or of the wrong kind.

    A ConfigError, so command lines report it as bad input (one line, exit status 2).
    """


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_file(path: str | Path, what: str = "checkpoint") -> Any:
    """The contents of a file written by :func:`save_checkpoint`, tensors on the CPU.

    ``what`` names the file in error messages ("checkpoint", "judge"). Raises CheckpointError for
    a missing file or one torch cannot read: truncated, corrupt, not a torch file, or holding
    anything but tensors and plain containers (the original exception is kept as ``__cause__``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ... by cause
        raise CheckpointError(f"{what} {str(path)!r} cannot be read as a torch file: {type(e).__name__}") from e
    return state


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint written by ``trainer.run`` (model, optimizer, config, metrics, ...)."""
    state = load_file(path, "checkpoint")
    if not (isinstance(state, dict) and CHECKPOINT_KEYS <= state.keys()):
        raise CheckpointError(f"checkpoint {str(path)!r} is not a training checkpoint (no model and config)")
    return state


def read_judge(path: str | Path) -> dict[str, Any]:
    """A judge file's contents: arch, num_classes, in_channels, image_size, width, beta, state_dict,
    config, key, test_acc (see trainer.judge)."""
    info = load_file(path, "judge")
    if not (isinstance(info, dict) and JUDGE_KEYS <= info.keys()):
        raise CheckpointError(f"judge {str(path)!r} is not a judge file (see python -m trainer.judge)")
    return info


def judge_from_info(info: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """The judge network described by a judge file's contents, on ``device``, in eval mode, frozen."""
    model = build_model(
        info["arch"],
        info["num_classes"],
        info["in_channels"],
        info["width"],
        info["beta"],
        image_size=info.get("image_size"),  # format 1 files predate it (and vgg11_released)
    )
    model.load_state_dict(info["state_dict"])
    model.requires_grad_(False)
    return model.to(device).eval()


def load_judge(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The judge stored at ``path``, on ``device``, in eval mode, its weights frozen."""
    return judge_from_info(read_judge(path), device)
