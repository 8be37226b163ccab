"""The one float32 precision policy of the trainer: TF32 or IEEE float32 for convolutions and matmuls.

``fp32_precision(mode, device)`` is a context manager: inside, cuDNN convolutions and CUDA matmuls
on float32 tensors run in ``mode`` and autocast is off; on exit every flag it touched is restored.

- ``"tf32"``: TensorFloat-32 (10-bit mantissa products, float32 accumulation) on GPUs that have it.
  The default of the training losses: at fixed noise its error in the Hessian-trace estimate h is
  far below h's own spread over noise draws (``python -m trainer.bench --precision`` measures it;
  docs/performance-gpu.md has the figures).
- ``"ieee"``: plain IEEE float32, on request, and for the density ratios at σ = 1e-4, whose
  log-ratios (≈ 1e-4·‖∇ₓf_y‖) are smaller than TF32's rounding of a logit.

Half precision (bf16 autocast) is not offered: against float64 at fixed noise its h error and
gradient direction are not within the estimator's own noise (see docs/performance-gpu.md).

torch ≥ 2.9 has a per-operator API (``torch.backends.cudnn.conv.fp32_precision``,
``torch.backends.cuda.matmul.fp32_precision``); mixing it with the legacy ``allow_tf32`` flags is
an error there, so the legacy flags are used only where the new API is missing. On CPU the flags
do nothing (CPU float32 kernels are IEEE), but they are still set and restored, so the behaviour
is the same everywhere.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Literal

import torch

Precision = Literal["tf32", "ieee"]
PRECISIONS: tuple[str, ...] = ("tf32", "ieee")


def per_operator_api() -> bool:
    """True where torch has the ≥ 2.9 per-operator ``fp32_precision`` flags."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    return conv is not None and hasattr(conv, "fp32_precision")


def current_flags() -> dict[str, object]:
    """The flags this module sets, by name, as they are now (for saving and for tests)."""
    if per_operator_api():
        return {
            "cudnn.conv.fp32_precision": torch.backends.cudnn.conv.fp32_precision,
            "cuda.matmul.fp32_precision": torch.backends.cuda.matmul.fp32_precision,
        }
    return {
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


def _set_flags(flags: dict[str, object]) -> None:
    for name, value in flags.items():
        owner, attr = name.rsplit(".", 1)
        if owner == "cudnn.conv":
            target = torch.backends.cudnn.conv
        elif owner == "cudnn":
            target = torch.backends.cudnn
        else:  # "cuda.matmul"
            target = torch.backends.cuda.matmul
        setattr(target, attr, value)


def flags_for(mode: str) -> dict[str, object]:
    """The flag values that make float32 convolutions and matmuls run in ``mode``."""
    if mode not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {mode!r}")
    if per_operator_api():
        return {"cudnn.conv.fp32_precision": mode, "cuda.matmul.fp32_precision": mode}
    tf32 = mode == "tf32"
    return {"cudnn.allow_tf32": tf32, "cuda.matmul.allow_tf32": tf32}


@contextlib.contextmanager
def fp32_precision(mode: str, device: torch.device | str) -> Iterator[None]:
    """Float32 convolutions and matmuls in ``mode`` ("tf32" or "ieee"), autocast off, inside;
    every flag restored after, also when the body raises."""
    wanted = flags_for(mode)
    saved = current_flags()
    kind = torch.device(device).type
    # The meta device (trainer.memory's shape-only probe steps) has no autocast to turn off.
    no_autocast = (
        torch.autocast(device_type=kind, enabled=False) if torch.amp.is_autocast_available(kind) else contextlib.nullcontext()
    )
    _set_flags(wanted)
    try:
        with no_autocast:
            yield
    finally:
        _set_flags(saved)
