"""The one precision policy: flags set inside the context and restored after, for each choice."""

import contextlib

import pytest
import torch

from trainer import precision as P
from trainer.config import ConfigError, LossConfig, load_config
from trainer.losses import compute_loss, precision
from trainer.models import build_model


@pytest.mark.parametrize("mode", ["tf32", "ieee"])
def test_flags_inside_and_restored_after(mode):
    before = P.current_flags()
    with P.fp32_precision(mode, "cpu"):
        assert P.current_flags() == P.flags_for(mode)
        # Each value names the mode: the per-operator API takes the name, legacy a boolean.
        assert set(P.current_flags().values()) in ({mode}, {mode == "tf32"})
        assert not torch.is_autocast_enabled("cpu")
    assert P.current_flags() == before


@pytest.mark.parametrize("mode", ["tf32", "ieee"])
def test_flags_restored_when_the_body_raises(mode):
    before = P.current_flags()
    with pytest.raises(RuntimeError, match="boom"):
        with P.fp32_precision(mode, "cpu"):
            raise RuntimeError("boom")
    assert P.current_flags() == before


def test_contexts_nest():
    before = P.current_flags()
    with P.fp32_precision("ieee", "cpu"):
        with P.fp32_precision("tf32", "cpu"):
            assert P.current_flags() == P.flags_for("tf32")
        assert P.current_flags() == P.flags_for("ieee")
    assert P.current_flags() == before


def test_autocast_is_off_inside():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        with P.fp32_precision("tf32", "cpu"):
            assert not torch.is_autocast_enabled("cpu")
            out = torch.nn.Linear(4, 4)(torch.rand(2, 4))
        assert torch.is_autocast_enabled("cpu")
    assert out.dtype == torch.float32


def test_legacy_flags_where_the_per_operator_api_is_missing(monkeypatch):
    # torch < 2.9: only allow_tf32 exists. Simulate it on stand-in flag holders, so the real
    # torch flags (which must not be mixed with the new API) stay untouched.
    class Flags:
        allow_tf32 = True

    cudnn, matmul = Flags(), Flags()
    monkeypatch.setattr(P, "per_operator_api", lambda: False)
    monkeypatch.setattr(torch.backends, "cudnn", cudnn, raising=False)
    monkeypatch.setattr(torch.backends.cuda, "matmul", matmul, raising=False)
    cudnn.allow_tf32, matmul.allow_tf32 = True, False  # PyTorch's legacy defaults
    with P.fp32_precision("ieee", "cpu"):
        assert (cudnn.allow_tf32, matmul.allow_tf32) == (False, False)
    assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, False)
    with P.fp32_precision("tf32", "cpu"):
        assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, True)
    assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, False)


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="precision"):
        P.flags_for("fp8")


def test_loss_precision_field():
    assert LossConfig().precision == "tf32"
    assert load_config(None, ["loss.precision=ieee"]).loss.precision == "ieee"
    with pytest.raises(ConfigError, match=r"loss\.precision: 'bf16' is refused: .*cosine of 0\.945"):
        load_config(None, ["loss.precision=bf16"])
    with pytest.raises(ConfigError, match=r"loss\.precision"):
        load_config(None, ["loss.precision=fp64"])


@pytest.mark.parametrize("mode", ["tf32", "ieee"])
def test_training_step_runs_in_the_configured_precision(mode, monkeypatch):
    seen = []
    model = build_model("resnet9", 3, in_channels=1, width=1 / 16)
    hook = model.register_forward_hook(lambda *_: seen.append(P.current_flags()))
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    cfg = LossConfig(preset="score_matching", precision=mode)
    before = P.current_flags()
    with precision(cfg, x.device):
        compute_loss(model, x, y, cfg)["total"].backward()
    hook.remove()
    assert seen and all(flags == P.flags_for(mode) for flags in seen)
    assert P.current_flags() == before
    # ce and the double-backward gradient norm have no finite difference: caller's precision;
    # the finite-difference gradient norm has one.
    assert isinstance(precision(LossConfig(kind="ce"), x.device), contextlib.nullcontext)
    assert isinstance(precision(LossConfig(kind="grad_norm"), x.device), contextlib.nullcontext)
    fd = LossConfig(kind="grad_norm", grad_norm_method="central_difference")
    assert not isinstance(precision(fd, x.device), contextlib.nullcontext)


def test_a_checkpoint_resumes_with_its_own_config_and_refuses_another(tmp_path):
    from trainer.train import run

    cfg = {
        "data": {"dataset": "synthetic", "train_size": 32, "test_size": 16},
        "model": {"arch": "resnet9", "width": 1 / 16},
        "loss": {"preset": "score_matching"},
        "epochs": 2, "batch_size": 16, "device": "cpu", "eval": {"enabled": False},
    }  # fmt: skip
    run({**cfg, "epochs": 1}, checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"epochs"):  # the epochs are part of the config it saved
        run(cfg, checkpoint_dir=tmp_path)
    # A real difference is still refused.
    with pytest.raises(ConfigError, match=r"loss\.stability"):
        run({**cfg, "epochs": 3, "loss": {"preset": "score_matching", "stability": "unbiased"}}, checkpoint_dir=tmp_path)
