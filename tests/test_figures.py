"""Tests of trainer.figures: the evaluations' pictures say what they show, keep their orientation and
size, and the evaluation draws what it measured."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import text_problems, texts_outside, texts_overlapping
from test_evaluation import TinyData, _small_eval, rand_images, smooth_net
from trainer import evaluation as ev
from trainer import figures
from trainer import keys


def _texts(fig) -> list[tuple[str, str]]:
    """Every text drawn on ``fig`` (figure texts, axes titles, labels, legend entries) with its colour."""
    from matplotlib.colors import to_hex

    found = [(t.get_text(), to_hex(t.get_color())) for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return [(text, colour) for text, colour in found if text]


def test_samples_figure_titles_each_tile_with_its_target_and_the_judges_verdict():
    targets = torch.tensor([0, 1, 2, 3, 4, 5])
    judged = torch.tensor([0, 9, 2, 2, 4, 5])
    fig = figures.samples_figure(
        rand_images(6, (1, 8, 8)), targets, judged=judged, steps=50, model="model Net", gan_test_value=4 / 6, total=6
    )
    texts = _texts(fig)
    tile_titles = [text for text, _ in texts if text in {str(i) for i in range(10)}]
    assert tile_titles == [str(y) for y in targets.tolist()]
    verdicts = [(text, colour) for text, colour in texts if text.startswith("judge:")]
    agree, disagree = figures.AGREE.lower(), figures.DISAGREE.lower()
    assert verdicts == [
        ("judge: 0 ✓", agree), ("judge: 9 ✗", disagree), ("judge: 2 ✓", agree),
        ("judge: 2 ✗", disagree), ("judge: 4 ✓", agree), ("judge: 5 ✓", agree),
    ]
    header = " ".join(text for text, _ in texts)
    assert "50 steps of gradient ascent on f_y(x)" in header and "model Net" in header
    assert "GAN-test" in header and "0.667 over 6 samples" in header and "all 6 samples shown" in header


def test_samples_figure_names_classes_caps_tiles_and_says_so_without_a_judge():
    targets = torch.arange(100) % 10
    fig = figures.samples_figure(rand_images(100, (3, 8, 8)), targets, class_names=figures.CIFAR10_CLASSES, total=1024)
    texts = [text for text, _ in _texts(fig)]
    names = [t for t in texts if t in figures.CIFAR10_CLASSES]
    assert names == [figures.CIFAR10_CLASSES[y] for y in targets[: figures.MAX_TILES].tolist()]
    assert not any(t.startswith("judge:") for t in texts)
    assert any("No judge given, so no GAN-test" in t and f"{figures.MAX_TILES} of 1024 samples shown" in t for t in texts)


def test_class_names_come_from_the_dataset_or_cifar10_else_indices():
    assert figures.class_names_of(TinyData(torch.zeros(1), torch.zeros(1), 3)) is None
    named = TinyData(torch.zeros(1), torch.zeros(1), 2)
    named.classes = ["cat", "dog"]
    assert figures.class_names_of(named) == ["cat", "dog"]
    cifar = TinyData(torch.zeros(1), torch.zeros(1), 10)
    cifar.name = "cifar10"
    assert figures.class_names_of(cifar)[1] == "automobile" and len(figures.class_names_of(cifar)) == 10


def test_scaled_saliency_divides_each_map_by_its_largest_magnitude():
    g = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    g[2] = 0  # a map of zeros stays zero instead of dividing by zero
    expected = torch.stack([m / m.abs().max() if m.abs().max() > 0 else m for m in g])
    scaled = figures.scaled_saliency(g)
    assert torch.allclose(scaled, expected) and scaled.abs().max() == 1
    assert torch.equal(scaled.sign(), g.sign())


def test_saliency_figure_pairs_images_with_maps_and_states_the_scale():
    labels = torch.tensor([3, 1, 4])
    gray = figures.saliency_figure(rand_images(3, (1, 8, 8)), torch.randn(3, 1, 8, 8), labels, model="model Net")
    texts = [text for text, _ in _texts(gray)]
    assert [t for t in texts if t.startswith("y = ")] == ["y = 3", "y = 1", "y = 4"]
    header = " ".join(texts)
    assert "∇ₓf_y" in header and "test image x (left)" in header and "per-map scale" in header
    assert "model Net" in header
    # One channel: a colour bar on [-1, 1] labelled with the scaling; colour images: a note instead.
    (bar,) = gray.axes  # the tiles are one figure image, so the only axes is the colour bar's
    assert bar.get_xlim() == (-1.0, 1.0) and "max |∇ₓf_y|" in bar.get_xlabel()
    colour = figures.saliency_figure(rand_images(3, (3, 8, 8)), torch.randn(3, 3, 8, 8), labels, class_names=list("abcde"))
    assert not colour.axes
    texts = [text for text, _ in _texts(colour)]
    assert "mid-grey = 0" in " ".join(texts)
    assert [t for t in texts if t.startswith("y = ")] == ["y = d", "y = b", "y = e"]


def _rgb(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(int)


def test_grid_pictures_keep_orientation_and_put_each_map_right_of_its_image(tmp_path):
    # Top half pure red, bottom half pure blue: no text colour is pure red or blue.
    image = torch.zeros(1, 3, 8, 8)
    image[:, 0, :4], image[:, 2, 4:] = 1, 1
    pixels = _rgb(figures.write_samples(image, torch.tensor([0]), tmp_path / "samples.png"))
    red = np.nonzero((pixels == [255, 0, 0]).all(-1))
    blue = np.nonzero((pixels == [0, 0, 255]).all(-1))
    assert len(red[0]) > 0 and red[0].max() < blue[0].min()  # red rows above blue rows
    # Saliency: a pure green image left of its map, whose gradient (+1 in red, −1 in green and
    # blue) is drawn as pure red (each map scaled to [−1, 1], shown as 0.5 + map / 2).
    maps = torch.ones(1, 3, 8, 8) * torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
    green = torch.zeros(1, 3, 8, 8)
    green[:, 1] = 1
    pixels = _rgb(figures.write_saliency(green, maps, torch.tensor([0]), tmp_path / "saliency.png"))
    image_cols = np.nonzero((pixels == [0, 255, 0]).all(-1))[1]
    map_cols = np.nonzero((pixels == [255, 0, 0]).all(-1))[1]
    assert image_cols.size == map_cols.size > 0 and image_cols.max() < map_cols.min()


def test_grid_pictures_have_a_bounded_size(tmp_path):
    # 64 tiles of 8x8 digits: about 8 columns of ~1 inch at 100 dpi, a header and titles.
    targets = torch.arange(64) % 10
    with Image.open(figures.write_samples(rand_images(64, (1, 8, 8)), targets, tmp_path / "s.png", judged=targets)) as img:
        width, height = img.size
    assert 600 <= width <= 1200 and 700 <= height <= 1400
    # More images than MAX_TILES draw no more tiles: the picture keeps its size.
    with Image.open(figures.write_samples(rand_images(500, (1, 8, 8)), torch.arange(500) % 10, tmp_path / "b.png")) as img:
        assert img.size[0] <= 1200 and img.size[1] <= 1400
    maps = figures.write_saliency(rand_images(64, (1, 32, 32)), torch.randn(64, 1, 32, 32), targets, tmp_path / "m.png")
    with Image.open(maps) as img:
        width, height = img.size
    assert 800 <= width <= 1800 and 900 <= height <= 2000


def _legend_below_the_axes(fig) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    (ax,) = fig.axes
    box = ax.get_legend().get_window_extent(renderer)
    return box.y1 < ax.get_window_extent(renderer).y0 and box.y0 >= 0


def test_density_ratio_curve_has_a_title_units_and_a_defined_reference_line():
    fig = figures.density_ratios_figure({1e-3: 1.0, 1e-2: 0.99, 1e-1: 0.8}, images=256)
    (ax,) = fig.axes
    assert "Density ratio" in ax.get_title() and "exp(f_y(x+η) − f_y(x))" in ax.get_title()
    assert "σ" in ax.get_xlabel() and "pixel intensity" in ax.get_xlabel()
    assert "p(x+η|y) / p(x|y)" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("256 test images, one draw of η ~ N(0, σ²I) each" in t for t in labels) and any(t.startswith("1: ") for t in labels)
    assert _legend_below_the_axes(fig)
    # Ratios spanning decades are drawn on a log axis, near-one ratios on a linear one.
    assert ax.get_yscale() == "linear"
    assert figures.density_ratios_figure({1e-3: 1.0, 1e-1: 1e6}).axes[0].get_yscale() == "log"
    three = figures.density_ratios_figure({1e-3: 1.0}, images=8, draws=3).axes[0].get_legend().get_texts()[0].get_text()
    assert three == "mean over 8 test images, 3 draws of η ~ N(0, σ²I) each"


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_density_ratios_that_all_overflowed_still_draw_and_say_so(tmp_path, bad):
    # Seen in a live sweep: a badly trained model's logits overflowed exp() at every σ; the
    # figure's log σ axis had no finite point to scale by, savefig raised, and the trial failed.
    sigmas = [1e-4, 1e-3, 1e-2, 1e-1]
    fig = figures.density_ratios_figure(dict.fromkeys(sigmas, bad), images=4)
    fig.savefig(tmp_path / "ratios.png")
    (ax,) = fig.axes
    low, high = ax.get_xlim()
    assert low < 1e-4 and high > 1e-1
    assert "(4 of 4 σ not finite, not drawn)" in ax.get_legend().get_texts()[0].get_text()
    mixed = figures.density_ratios_figure({1e-4: 1.0, 1e-1: bad}, images=4)
    mixed.savefig(tmp_path / "mixed.png")
    assert "(1 of 2 σ not finite" in mixed.axes[0].get_legend().get_texts()[0].get_text()


def test_pixel_perturbation_curve_has_a_title_the_fill_and_the_chance_level():
    fig = figures.pixel_perturbation_figure({0.0: 0.9, 0.1: 0.8, 1.0: 0.1}, "constant", images=100, num_classes=10)
    (ax,) = fig.axes
    title = ax.get_title()
    assert "Pixel perturbation" in title and "|∇ₓf_y|" in title and "grey 0.5" in title
    assert "fraction of pixels removed" in ax.get_xlabel() and "accuracy" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["accuracy on 100 test images", "no pixel removed", "chance: 1/10 classes"]
    assert [line.get_ydata()[0] for line in ax.get_lines()[1:]] == [0.9, 0.1]
    assert _legend_below_the_axes(fig)
    assert "each image's mean colour" in figures.pixel_perturbation_figure({0.1: 0.5}).axes[0].get_title()


def test_evaluate_all_draws_the_judges_verdicts_and_gan_test_on_the_samples(tmp_path, monkeypatch):
    drawn = {}
    real = figures.samples_figure

    def recording(*args, **kw):
        drawn["fig"] = fig = real(*args, **kw)
        drawn["args"], drawn["kw"] = args, kw
        return fig

    monkeypatch.setattr(figures, "samples_figure", recording)
    data = TinyData(rand_images(20, (1, 8, 8)), torch.arange(20) % 3, 3)
    model, judge = smooth_net(1, 3), smooth_net(1, 3, seed=1)
    cfg = _small_eval()
    metrics, files = ev.evaluate_all(model, data, cfg, judge=judge, out_dir=tmp_path, seed=0)
    samples, targets = drawn["args"]
    assert len(samples) == cfg.grid_images and torch.equal(targets, data.test_y[: cfg.grid_images])
    assert torch.equal(drawn["kw"]["judged"].cpu(), ev.predict(judge, samples).cpu())
    header = " ".join(text for text, _ in _texts(drawn["fig"]))
    assert f"GAN-test (fraction the judge assigns to their target): {metrics[keys.GAN_TEST]:.3f}" in header
    assert f"over {cfg.samples} samples" in header and f"{cfg.grid_images} of {cfg.samples} samples shown" in header
    assert f"{cfg.steps} steps" in header and "Sequential" in header
    verdicts = [text for text, _ in _texts(drawn["fig"]) if text.startswith("judge:")]
    assert len(verdicts) == cfg.grid_images


def test_the_measurements_import_no_plotting():
    import subprocess
    import sys

    code = "import sys, trainer.evaluation; print(any(m.split('.')[0] == 'matplotlib' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- Every text inside the picture, at every preset's image size ---------------------------------


def _preset_pictures(preset: str):
    """The four per-run figures at ``preset``'s image size, classes, grid size and longest point name."""
    from sweep.config_files import load_sweep_config
    from sweep.points import apply_point, grid_points, point_name

    cfg = load_sweep_config(preset)
    data = cfg.trainer.data
    channels = {"cifar10": 3, "cifar100": 3, "digits": 1}.get(data.dataset, data.channels)
    classes = {"cifar10": 10, "cifar100": 100, "digits": 10}.get(data.dataset, data.num_classes)
    size = data.resolved_image_size()
    base = cfg.trainer.model_dump()
    names = [point_name(apply_point(base, p), p) for p in grid_points(cfg.search)] or ["sm λ3.16e-04 μ1.78e-05 s0"]
    label = max(names, key=len)
    n = min(cfg.trainer.eval.grid_images, figures.MAX_TILES)
    images = rand_images(n, (channels, size, size))
    targets = torch.arange(n) % classes
    # Class names as long as CIFAR-100's longest ("aquarium_fish"), so tile titles are at their widest.
    long_names = [f"class_{i:02d}_name" for i in range(classes)]
    sigmas = cfg.trainer.eval.density_sigmas
    fractions = np.logspace(-2, 0, cfg.trainer.eval.perturbation_points)
    return label, {
        "samples": figures.samples_figure(
            images, targets, judged=(targets + 1) % classes, class_names=long_names, steps=cfg.trainer.eval.steps,
            model="model ResNet", gan_test_value=0.5, total=cfg.trainer.eval.samples, label=label,
        ),
        "saliency": figures.saliency_figure(
            images, torch.randn(images.shape), targets, class_names=long_names, model="model ResNet",
            total=cfg.trainer.eval.grid_images, label=label,
        ),
        "density_ratios": figures.density_ratios_figure(
            {s: 1 - s for s in sigmas}, images=cfg.trainer.eval.density_images, label=label
        ),
        "pixel_perturbation": figures.pixel_perturbation_figure(
            {0.0: 0.9, **{float(f): 0.9 - 0.8 * f for f in fractions}}, cfg.trainer.eval.perturbation_fill,
            images=cfg.trainer.eval.perturbation_images, num_classes=classes, label=label,
        ),
    }


@pytest.mark.parametrize("preset", __import__("sweep.config_files", fromlist=["preset_names"]).preset_names())
def test_no_title_is_clipped_and_every_picture_names_its_run(preset):
    label, pictures = _preset_pictures(preset)
    for name, fig in pictures.items():
        assert text_problems(fig) == [], (preset, name)
        # The run's label opens the title: the axes title of a curve, the top line of a grid.
        curve = name in ("density_ratios", "pixel_perturbation")
        title = fig.axes[0].get_title() if curve else max(fig.texts, key=lambda t: t.get_position()[1]).get_text()
        assert title.startswith(f"{label}: " if not curve else f"{label}\n"), (preset, name, title)


def test_the_checks_above_catch_a_clipped_title():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2), dpi=100)
    fig.text(0.5, 0.99, "a title far wider than a figure of three inches can hold", ha="center", va="top")
    assert len(texts_outside(fig)) == 1
    fig.text(0.5, 0.5, "one line", ha="center")
    fig.text(0.5, 0.5, "another line", ha="center")
    assert len(texts_overlapping(fig)) == 1


@pytest.mark.parametrize("ratios", [
    {1e-3: 0.9999912, 1e-2: 0.9999231, 1e-1: 0.9998402},  # near one: long tick labels, or an offset
    {1e-4: 1.0, 1e-3: 3.2e3, 1e-2: 8.1e7, 1e-1: 2.4e12},  # decades: a log axis
    {1e-3: 1.0, 1e-2: 0.37, 1e-1: 0.0021},
])
def test_the_density_ratio_picture_keeps_its_y_label_and_ticks_on_the_canvas(ratios):
    fig = figures.density_ratios_figure(ratios, images=128, label="sm λ1e-3 μ1e-4 s0")
    assert text_problems(fig) == []
    (ax,) = fig.axes
    assert not ax.yaxis.get_offset_text().get_text()  # each tick says its own value
