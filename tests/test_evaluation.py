"""Tests of trainer.evaluation against naive references and closed forms, on tiny seeded models."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from trainer import evaluation as ev
from trainer import items, keys
from trainer.config import EvalConfig, LossConfig
from trainer.stats import proportion


class Linear(nn.Module):
    """f(x) = W·flatten(x) + b: its input gradient is W_y and its log-ratios are W_y·η."""

    def __init__(self, shape: tuple[int, int, int], classes: int, scale: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.linear = nn.Linear(math.prod(shape), classes)
        with torch.no_grad():
            self.linear.weight.copy_(scale * torch.randn(self.linear.weight.shape, generator=gen))
            self.linear.bias.copy_(torch.randn(classes, generator=gen))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))


def smooth_net(channels: int, classes: int, seed: int = 0) -> nn.Module:
    """A small conv net with BatchNorm (so eval mode matters) and softplus (smooth)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.Softplus(beta=10),
        nn.Conv2d(8, 8, 3, padding=1, stride=2),
        nn.Softplus(beta=10),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    )
    # Non-trivial running statistics, so eval and train mode differ.
    with torch.no_grad():
        net(torch.rand(64, channels, 8, 8) * 2)
    return net


def rand_images(n: int, shape: tuple[int, int, int], seed: int = 0) -> Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def test_generate_samples_follows_the_update_rule_and_raises_target_logits():
    model = smooth_net(3, 5).train()
    targets = torch.arange(20) % 5
    shape = (3, 8, 8)
    x0 = ev.generate_samples(model, targets, shape=shape, steps=0, seed=3)
    assert x0.shape == (20, 3, 8, 8) and x0.min() >= 0 and x0.max() <= 1
    assert abs(x0.mean().item() - 0.5) < 0.05  # N(0.5, 0.2²) start

    # One step against a per-sample reference of x ← clamp(x + lr·(∇f_y − prior·(x − 0.5)), 0, 1).
    one = ev.generate_samples(model, targets, shape=shape, steps=1, lr=0.3, prior=0.5, seed=3)
    model.eval()
    for i in range(len(targets)):
        x = x0[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x)[0, targets[i]], x)
        expected = (x0[i] + 0.3 * (g[0] - 0.5 * (x0[i] - 0.5))).clamp(0, 1)
        torch.testing.assert_close(one[i], expected, atol=1e-6, rtol=1e-5)
    model.train()

    samples = ev.generate_samples(model, targets, shape=shape, steps=30, lr=0.5, seed=3)
    chunked = ev.generate_samples(model, targets, shape=shape, steps=30, lr=0.5, seed=3, batch_size=7)
    assert model.training  # the caller's mode is restored
    assert samples.min() >= 0 and samples.max() <= 1
    torch.testing.assert_close(samples, chunked)  # chunking does not change the result
    model.eval()
    with torch.no_grad():
        before = model(x0).gather(1, targets[:, None])
        after = model(samples).gather(1, targets[:, None])
    assert (after > before).all(), (after - before).min()
    # For linear logits the ascent ends where w_y's positive pixels are 1: the target wins.
    linear = Linear(shape, 5)
    samples = ev.generate_samples(linear, targets, shape=shape, steps=30, lr=0.5, seed=3)
    assert (linear(samples).argmax(1) == targets).all()


def test_gan_test_is_the_judge_accuracy_on_real_images():
    judge = smooth_net(1, 4, seed=1)
    images = rand_images(50, (1, 8, 8))
    labels = torch.arange(50) % 4
    judge.eval()
    naive = sum(int(judge(images[i : i + 1]).argmax(1).item() == labels[i]) for i in range(50)) / 50
    judge.train()
    assert ev.gan_test(images, labels, judge, batch_size=16) == pytest.approx(naive, abs=1e-9)
    assert 0 < naive < 1  # a non-trivial case


def test_density_ratios_of_linear_logits_match_the_closed_form():
    # f_y(x+η) − f_y(x) = w_y·η ~ N(0, σ²‖w_y‖²), so E exp(·) = exp(σ²‖w_y‖²/2) per image.
    shape, classes, n, draws = (1, 4, 4), 3, 3000, 2
    model = Linear(shape, classes, scale=1.5)
    images = rand_images(n, shape)
    labels = torch.arange(n) % classes
    sigmas = [1e-3, 0.1, 0.3]
    ratios = ev.density_ratios(model, images, labels, sigmas, draws=draws, seed=0, batch_size=1000)
    w2 = model.linear.weight.detach().double().square().sum(1)[labels]  # ‖w_y‖² per image, ~36
    for sigma in sigmas:
        s2 = sigma**2 * w2
        expected = torch.exp(s2 / 2).mean().item()
        # Standard error of the mean of exp(Z), Z ~ N(0, s²): Var = (e^{s²} − 1)·e^{s²}.
        stderr = math.sqrt(((torch.exp(s2) - 1) * torch.exp(s2)).mean().item() / (n * draws))
        assert abs(ratios[sigma] - expected) < 4 * stderr + 1e-9, (sigma, ratios[sigma], expected, stderr)
    assert ratios[0.3] > 1.5  # the largest σ is far from 1: the test has teeth


def test_density_ratios_do_not_overflow():
    # Log-ratios of several hundred overflow exp in float32; the log-mean-exp stays finite.
    shape = (1, 4, 4)
    model = Linear(shape, 2, scale=20.0)
    images, labels = rand_images(64, shape), torch.zeros(64, dtype=torch.long)
    (ratio,) = ev.density_ratios(model, images, labels, [1.0], seed=1).values()
    gen = torch.Generator().manual_seed(1)
    eta = torch.randn((64, *shape), generator=gen)
    log_r = (model(images + eta) - model(images))[:, 0].double()
    assert log_r.max() > 100  # exp(100) overflows float32
    expected = torch.logsumexp(log_r, 0).item() - math.log(64)
    assert math.isfinite(ratio) and math.log(ratio) == pytest.approx(expected, rel=1e-5)


def test_density_ratios_tend_to_one_for_a_smooth_model():
    model = smooth_net(3, 5)
    images, labels = rand_images(64, (3, 8, 8)), torch.arange(64) % 5
    ratios = ev.density_ratios(model, images, labels, [1e-4, 1e-3, 1e-1], draws=2)
    assert abs(ratios[1e-4] - 1) < 1e-3
    assert abs(ratios[1e-3] - 1) < 1e-2
    assert abs(ratios[1e-4] - 1) < abs(ratios[1e-1] - 1)
    assert list(ev.density_ratios(model, images[:4], labels[:4])) == EvalConfig().density_sigmas


def test_remove_pixels_replaces_exactly_the_requested_pixels_with_the_fill():
    images = rand_images(5, (3, 6, 6))
    importance = torch.rand(5, 36, generator=torch.Generator().manual_seed(1))
    order = importance.argsort(1)
    for fill in ev.FILLS:
        fills = ev.fill_values(images, fill)
        expected_fill = images.mean((2, 3)) if fill == "image_mean" else torch.full((5, 3), 0.5)
        for count in (0, 1, 10, 36):
            out = ev.remove_pixels(images, order, count, fills)
            changed = (out != images).any(1).flatten(1)  # (N, H·W): pixels changed in any channel
            assert (changed.sum(1) == count).all()
            for i in range(5):
                assert set(changed[i].nonzero().flatten().tolist()) == set(order[i, :count].tolist())
                pixels = out[i].flatten(1)[:, changed[i]]  # (C, count)
                torch.testing.assert_close(pixels, expected_fill[i, :, None].expand_as(pixels))


class Recorder(nn.Module):
    """Wraps a model and keeps every batch it is asked to classify."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return self.model(x)


def test_pixel_perturbation_fraction_zero_is_clean_accuracy_and_counts_are_exact():
    shape = (3, 8, 8)
    model = Recorder(smooth_net(3, 4, seed=2))
    images, labels = rand_images(40, shape, seed=5), torch.arange(40) % 4
    clean = (ev.predict(model, images) == labels).float().mean().item()
    fractions = [0.0, 0.1, 0.5, 1.0]
    model.seen.clear()
    acc = ev.pixel_perturbation(model, images, labels, fractions=fractions, fill="constant")
    assert list(acc) == fractions
    assert acc[0.0] == pytest.approx(clean, abs=1e-9)
    # Every batch the model classified: [gradient pass, then one per fraction] per chunk of images.
    batches = model.seen[1:]
    for fraction, batch in zip(fractions, batches):
        removed = (batch != images).any(1).flatten(1)
        assert (removed.sum(1) == round(fraction * 64)).all()
        assert (batch.permute(0, 2, 3, 1)[removed.view(40, 8, 8)] == 0.5).all()
    # Image-mean fill: everything removed leaves each image its own constant mean colour.
    model.seen.clear()
    ev.pixel_perturbation(model, images, labels, fractions=[1.0], fill="image_mean")
    torch.testing.assert_close(model.seen[-1], images.mean((2, 3), keepdim=True).expand_as(images))


def test_pixel_perturbation_ranks_pixels_by_the_explainers_gradients():
    shape, classes = (3, 4, 4), 2
    model = Recorder(Linear(shape, classes, seed=0))
    # A linear explainer whose gradient w_y has channel std equal to a chosen importance map.
    importance = torch.randperm(16, generator=torch.Generator().manual_seed(0)).float() + 1
    explainer = Linear(shape, classes, seed=1)
    with torch.no_grad():
        w = importance.view(1, 1, 4, 4) * torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)
        explainer.linear.weight.copy_(w.flatten(1).expand(classes, -1))
    images, labels = rand_images(10, shape, seed=2), torch.arange(10) % classes
    model.seen.clear()
    ev.pixel_perturbation(model, images, labels, explainer=explainer, fractions=[0.25], fill="constant")
    removed = (model.seen[-1] != images).any(1).flatten(1)
    least = set(importance.argsort()[:4].tolist())
    for i in range(10):
        assert set(removed[i].nonzero().flatten().tolist()) == least
    # The model's own gradients would have chosen other pixels.
    own = ev.pixel_importance(model.model.linear.weight.detach()[labels].view(10, *shape))
    assert any(set(own[i].flatten().argsort()[:4].tolist()) != least for i in range(10))


def test_pixel_importance_is_channel_std_or_magnitude():
    g = torch.tensor([[[[1.0]], [[3.0]]]])  # (1, 2, 1, 1)
    assert ev.pixel_importance(g).item() == pytest.approx(math.sqrt(2))
    assert ev.pixel_importance(-g[:, :1]).item() == 1.0


@dataclass
class TinyData:
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    density: object | None = None


def _small_eval(**kw) -> EvalConfig:
    return EvalConfig(
        samples=12, steps=5, density_images=20, perturbation_images=20, perturbation_points=4, grid_images=9, **kw
    )


def test_evaluate_all_returns_the_keys_and_writes_valid_images(tmp_path):
    data = TinyData(rand_images(20, (1, 8, 8)), torch.arange(20) % 3, 3)
    model, judge = smooth_net(1, 3).train(), smooth_net(1, 3, seed=1)
    cfg = _small_eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics, files = ev.evaluate_all(model, data, cfg, judge=judge, out_dir=tmp_path / "eval", seed=0)
    # Evaluating changes nothing in the model: weights, BatchNorm statistics, gradients, mode.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(p.grad is None for p in model.parameters())
    expected = {keys.GAN_TEST, keys.lo_key(keys.GAN_TEST), keys.hi_key(keys.GAN_TEST), keys.EVAL_SECONDS}
    curve = [keys.density_ratio_key(s) for s in cfg.density_sigmas]
    curve += [keys.pixel_perturbation_key(f) for f in np.logspace(-2, 0, 4)]
    expected |= {k for key in curve for k in (key, keys.lo_key(key), keys.hi_key(key))}  # each with its interval
    assert set(metrics) == expected
    for key in curve:
        assert metrics[keys.lo_key(key)] <= metrics[key] <= metrics[keys.hi_key(key)], key
    # A pixel-perturbation accuracy's interval: Wilson over the images it was measured on.
    point = keys.pixel_perturbation_key(1.0)
    images = min(cfg.perturbation_images, 20)
    wilson_pp = proportion(metrics[point], images)
    assert (metrics[keys.lo_key(point)], metrics[keys.hi_key(point)]) == (wilson_pp.lo, wilson_pp.hi)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert set(files) == {"samples", "saliency", "density_ratios", "pixel_perturbation", "eval", "items"}
    # Per-sample verdicts, kept for paired comparisons: as many as samples, their mean the GAN-test.
    verdicts = items.decode(json.loads(open(files["items"]).read())[keys.GAN_TEST])
    assert len(verdicts) == cfg.samples and verdicts.mean() == pytest.approx(metrics[keys.GAN_TEST])
    for name in ("samples", "saliency", "density_ratios", "pixel_perturbation"):
        assert files[name].endswith(".png")
        with Image.open(files[name]) as img:
            img.verify()
        with Image.open(files[name]) as img:
            pixels = np.asarray(img.convert("L"))
        assert pixels.std() > 0, name
    raw = json.loads(open(files["eval"]).read())
    assert len(raw["pixel_perturbation"]["accuracy"]) == 4
    assert raw["density_ratios"]["sigma"] == cfg.density_sigmas

    no_judge, _ = ev.evaluate_all(model, data, cfg, judge=None, out_dir=tmp_path / "b", seed=0)
    assert keys.GAN_TEST not in no_judge
    # GAN-test's Wilson interval over its 12 samples, logged beside it.
    wilson = proportion(metrics[keys.GAN_TEST], cfg.samples)
    assert (metrics[keys.lo_key(keys.GAN_TEST)], metrics[keys.hi_key(keys.GAN_TEST)]) == (wilson.lo, wilson.hi)


def test_evaluate_all_merges_groundtruth_metrics_when_the_density_is_known(tmp_path, monkeypatch):
    calls = []

    def fake_groundtruth(model, data, samples, targets, loss=None, start=None, flat=None):
        calls.append((samples.shape, targets.tolist(), loss))
        controls.append((start, flat))
        return {keys.SCORE_ALIGNMENT: 0.25}

    controls = []
    monkeypatch.setattr(ev, "groundtruth_metrics", fake_groundtruth)
    data = TinyData(rand_images(5, (1, 8, 8)), torch.arange(5) % 3, 3, density=object())
    loss = LossConfig(kind="score_matching")
    metrics, _ = ev.evaluate_all(smooth_net(1, 3), data, _small_eval(), judge=None, out_dir=tmp_path, seed=0, loss=loss)
    assert metrics[keys.SCORE_ALIGNMENT] == 0.25
    # 12 samples whose targets are the 5 test labels in order, cycled; the run's loss passed on
    # (for the Fisher-divergence floor).
    assert calls == [((12, 1, 8, 8), [0, 1, 2, 0, 1, 0, 1, 2, 0, 1, 0, 1], loss)]
    # Sample likelihood's controls: the sampler's start and what a flat model makes of it.
    cfg = _small_eval()
    start, flat = controls[0]
    expected = ev.generate_samples(smooth_net(1, 3), torch.zeros(12, dtype=torch.long), shape=(1, 8, 8), steps=0,
                                   init_mean=cfg.init_mean, init_std=cfg.init_std, seed=0)
    assert torch.equal(start, expected)  # the start does not depend on the model or the targets
    assert torch.allclose(flat, 0.5 + (1 - cfg.step_size * cfg.prior) ** cfg.steps * (start - 0.5), atol=1e-6)


def test_evaluate_cli_prints_every_metric_and_rejects_bad_paths(tmp_path, capsys):
    from trainer.evaluate import main
    from trainer.judge import JudgeConfig, train_judge
    from trainer.train import run

    data = {"dataset": "digits", "train_size": 128, "test_size": 40}
    run(
        {"data": data, "model": {"arch": "resnet9", "width": 0.0625}, "epochs": 1, "batch_size": 64,
         "device": "cpu", "eval": {"enabled": False}},
        checkpoint_dir=tmp_path / "run",
    )
    judge = train_judge(JudgeConfig(data=data, width=0.0625, epochs=1, batch_size=64), tmp_path / "judges", "cpu")
    checkpoint = tmp_path / "run" / "last.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:300])
    errors = []

    out = tmp_path / "eval"
    bad = [
        ["--checkpoint", str(tmp_path / "missing.pt"), "--judge", str(judge)],
        ["--checkpoint", str(checkpoint), "--judge", str(tmp_path / "missing.pt")],
        ["--checkpoint", str(judge), "--judge", str(judge)],  # a judge is not a training checkpoint
        ["--checkpoint", str(checkpoint), "--set", "model.width=2"],  # not an evaluation setting
        ["--checkpoint", str(checkpoint), "--set", "eval.samples=0"],
        ["--checkpoint", str(checkpoint), "--judge", str(checkpoint)],  # a checkpoint is not a judge
        ["--checkpoint", str(truncated), "--judge", str(judge)],
    ]
    for argv in bad:
        assert main([*argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error" in err and "Traceback" not in err, err
        errors.append(err.strip())
    assert not out.exists()
    # The messages name the file and the problem, in the CLI's own words.
    assert errors[0] == f"python -m trainer.evaluate: error: checkpoint {str(tmp_path / 'missing.pt')!r} does not exist"
    assert errors[2].endswith("is not a training checkpoint (no model and config)")
    assert errors[5].endswith("is not a judge file (see python -m trainer.judge)")
    assert errors[6].endswith(f"checkpoint {str(truncated)!r} cannot be read as a torch file: RuntimeError")

    argv = ["--checkpoint", str(checkpoint), "--judge", str(judge), "--out", str(out)]
    small = ["eval.samples=8", "eval.steps=3", "eval.density_images=16", "eval.perturbation_images=16",
             "eval.perturbation_points=3", "eval.grid_images=4"]
    assert main(argv + [a for s in small for a in ("--set", s)]) == 0
    printed = capsys.readouterr().out
    for key in (keys.GAN_TEST, keys.EVAL_SECONDS, keys.density_ratio_key(0.1), keys.pixel_perturbation_key(1.0)):
        assert key in printed
    assert {p.name for p in out.iterdir()} == {
        "samples.png", "saliency.png", "density_ratios.png", "pixel_perturbation.png", "eval.json", "items.json"
    }


def test_a_density_ratios_interval_is_the_mean_of_the_ratios_with_its_normal_interval():
    # Ratios 1, 2, 3: mean 2, sd 1, half-width 1.96 / √3 = 1.1316; a huge log-ratio does not overflow.
    interval = ev.ratio_interval(torch.log(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)))
    assert interval.value == pytest.approx(2.0) and interval.half_width == pytest.approx(1.959964 / math.sqrt(3))
    assert ev.ratio_interval(torch.tensor([0.0, 0.0])).lo == 1.0  # no spread: a point
    big = ev.ratio_interval(torch.tensor([600.0, 601.0], dtype=torch.float64))
    assert math.isfinite(big.value) and big.lo < big.value < big.hi
    assert ev.ratio_interval(torch.tensor([0.0, 5.0], dtype=torch.float64)).lo == 0.0  # a ratio is never below 0
