"""trainer.memory: the GPU memory estimate against counts made by hand and by direct measurement."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainer.config import load_config
from trainer.data import load_dataset
from trainer.losses import compute_loss
from trainer.memory import (
    ALLOCATOR_MARGIN,
    CUDA_CONTEXT_BYTES,
    MemoryEstimate,
    data_bytes,
    estimate_memory,
    memory_key,
    model_bytes,
    saved_tensor_bytes,
)
from trainer.models import build_model

F32 = 4  # bytes per float32


def test_saved_bytes_of_a_linear_net_counted_by_hand():
    # Linear saves its input (the weight is a parameter: excluded); ReLU saves its output, which
    # is also the second Linear's saved input: one storage, counted once; sum saves nothing.
    b, d, h, k = 5, 7, 11, 3
    net = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, k))
    x = torch.randn(b, d)
    total, largest = saved_tensor_bytes(net, lambda: net(x).sum())
    assert total == b * (d + h) * F32
    assert largest == b * h * F32


def test_saved_bytes_of_a_conv_net_counted_by_hand():
    # Conv2d saves its input; Softplus saves its input (the conv's output).
    b, c, m, s = 3, 2, 5, 6
    net = nn.Sequential(nn.Conv2d(c, m, 3, padding=1), nn.Softplus(beta=10))
    x = torch.randn(b, c, s, s)
    total, largest = saved_tensor_bytes(net, lambda: net(x).sum())
    assert total == b * (c + m) * s * s * F32
    assert largest == b * m * s * s * F32


TINY = {
    "data": {"dataset": "synthetic", "channels": 3, "image_size": 16, "num_classes": 10, "train_size": 64,
             "test_size": 32},
    "model": {"arch": "resnet9", "width": 0.125},
    "eval": {"samples": 32, "perturbation_images": 32},
}  # fmt: skip


@pytest.mark.parametrize("loss", ["baseline", "score_matching", "grad_norm", "anti_score_matching"])
def test_meta_probe_counts_what_the_cpu_saves(loss):
    # The fast shape-only probe must count exactly the bytes real arithmetic saves.
    cfg = load_config({**TINY, "loss": {"preset": loss}})
    meta, cpu = estimate_memory(cfg, "meta"), estimate_memory(cfg, "cpu")
    assert (meta.data, meta.model, meta.train_activations) == (cpu.data, cpu.model, cpu.train_activations)
    # In eval mode the CPU's BatchNorm saves empty batch statistics where meta saves one value per
    # channel: a few KB, nothing that grows with the batch.
    assert meta.eval_activations == pytest.approx(cpu.eval_activations, rel=1e-3)


@pytest.mark.parametrize("batch", [8, 24])
@pytest.mark.parametrize("loss", [{"preset": "score_matching"}, {"preset": "score_matching", "estimator": "hutchinson"}])
def test_activations_extrapolate_to_a_direct_count_at_the_batch(batch, loss):
    # Extrapolated from probes at 2 and 4 images vs counted on the CPU at the batch itself.
    cfg = load_config({**TINY, "loss": loss, "batch_size": batch, "eval": {"enabled": False}})
    torch.manual_seed(0)
    model = build_model("resnet9", 10, 3, 0.125, 10.0, 16).train()
    x, y = torch.rand(batch, 3, 16, 16), torch.randint(10, (batch,))
    total, largest = saved_tensor_bytes(model, lambda: compute_loss(model, x, y, cfg.loss))
    est = estimate_memory(cfg)
    assert est.train_activations == total + 2 * largest
    assert est.eval_activations == 0


def test_data_bytes_equal_the_loaded_tensors():
    for data in ({"dataset": "digits"}, {"dataset": "synthetic", "channels": 3, "image_size": 12, "val_size": 0.2}):
        cfg = load_config({"data": data}).data
        ds = load_dataset(cfg)
        tensors = [ds.train_x, ds.train_y, ds.test_x, ds.test_y, ds.val_x, ds.val_y]
        assert data_bytes(cfg) == sum(t.numel() * t.element_size() for t in tensors if t is not None)


def test_model_bytes_equal_parameters_gradients_and_momentum_after_a_step():
    model = build_model("resnet9", 10, 3, 0.125)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    nn.functional.cross_entropy(model(torch.rand(4, 3, 16, 16)), torch.randint(10, (4,))).backward()
    opt.step()
    tensors = [*model.state_dict().values(), *(p.grad for p in model.parameters())]
    tensors += [s["momentum_buffer"] for s in opt.state.values()]
    assert model_bytes(model, momentum=True) == sum(t.numel() * t.element_size() for t in tensors)


def test_peak_takes_the_larger_phase_and_footprint_adds_the_stated_margins():
    est = MemoryEstimate(data=100, model=10, train_activations=1000, eval_activations=3000, batch_size=8)
    assert est.peak_bytes == 3110
    assert est.footprint_bytes == math.ceil(3110 * (1 + ALLOCATOR_MARGIN)) + CUDA_CONTEXT_BYTES


def test_memory_key_ignores_weights_but_not_the_loss_kind():
    base = load_config({"loss": {"preset": "score_matching"}})
    assert memory_key(base) == memory_key(load_config({"loss": {"preset": "score_matching", "lam": 0.5}}))
    assert memory_key(base) != memory_key(load_config({"loss": {"preset": "grad_norm"}}))
    assert memory_key(base) != memory_key(load_config({"loss": {"preset": "score_matching"}, "batch_size": 64}))


def test_the_estimate_leaves_the_global_random_state_alone():
    state = torch.get_rng_state()
    estimate_memory(load_config(TINY))
    assert torch.equal(torch.get_rng_state(), state)
