"""The pictures of the paper's evaluations (trainer.evaluation), as matplotlib figures.

- :func:`samples_figure` / :func:`write_samples`: the sample grid, each tile titled with its target
  class and the judge's verdict (Fig. 2).
- :func:`saliency_figure` / :func:`write_saliency`: each test image beside its input gradient (Fig. 4).
- :func:`density_ratios_figure` / :func:`plot_density_ratios`: density ratio against σ (Fig. 1).
- :func:`pixel_perturbation_figure` / :func:`plot_pixel_perturbation`: accuracy against the
  fraction of removed pixels (Fig. 3).
- :func:`write_all`: the four pictures of one evaluation, as trainer.evaluation.evaluate_all writes them.

Every picture can carry a ``label`` (e.g. the sweep's point name, ``sm λ1e-3 μ1e-4 s0``) in its
title, so a downloaded file still says which run it came from. The measurements themselves live in
trainer.evaluation, which imports no plotting.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from trainer.config import CONSTANT_FILL, EvalConfig

CURVE_SIZE = (5.0, 4.4)  # inches
# Fixed margins (fractions of the figure): tight_layout would double the cost of a curve, which
# matters when a small trial evaluates every other epoch.
# Room below the axes for the x label and the legend, above for a two-line title.
CURVE_MARGINS = dict(left=0.13, right=0.96, bottom=0.25, top=0.84)
CURVE_TITLE_FONT = 9  # points
# Characters of a run label per title line: the axes' centre is 0.545 of the figure's 5 inches
# wide, so a centred line has 2 · 0.455 · 5 in = 328 points, 57 characters of 0.64 em at 9 points.
CURVE_LABEL_CHARS = 50

# --- Pictures -------------------------------------------------------------------------------------
# Every picture is a matplotlib Figure built by a ``*_figure`` function (tests read its texts) and
# written by a ``write_*``/``plot_*`` function. The image grids are ONE image composed in numpy plus
# one text per tile title line: a subplot per tile would cost ~10 ms each, 64 of them most of a second.

MAX_TILES = 64  # tiles drawn per grid picture; the figure title says when more were available
TILE_INCHES = 0.85  # printed side of one image tile
FIGURE_DPI = 100  # grid figures are composed pixel by pixel at this resolution
TITLE_INCHES = 0.3  # band above each tile for its title (two lines of TILE_FONT)
GAP_INCHES = 0.1  # white space between tiles
PAIR_GAP_INCHES = 0.3  # between saliency pairs, clearly wider than the gap inside a pair
TILE_FONT = 7  # points
CHAR_EMS = 0.6  # mean width of a DejaVu Sans character, in font sizes (to fit titles to tiles)
HEADER_LINE_INCHES = 0.22  # height of one line of the figure's header
HEADER_FONTS = (10.0, 8.5)  # points: the header's first (bold) line, the others
# Mean width of a header character in font sizes, on the safe side (bold, symbols such as ∝ and
# ∇ₓ are wider than CHAR_EMS): header lines are wrapped to the figure's width with it, so that
# no title is cut at the edges (tests/test_figures.py measures the drawn boxes).
HEADER_EMS = (0.72, 0.64)
HEADER_MARGIN_PX = 20  # free on each side of a header line
MIN_FIGURE_INCHES = 7.0  # narrowest figure, so that the header fits on few tiles
AGREE, DISAGREE = "#1a7f37", "#c62828"  # colour of the judge's verdict: green ✓, red ✗
SALIENCY_CMAP = "RdBu_r"  # single-channel maps: red positive, blue negative, white 0
# torchvision's CIFAR-10 class names in label order (the dataset files carry them; data.Dataset does
# not). Other datasets show class indices; digits' indices are their names.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def class_names_of(data) -> Sequence[str] | None:
    """Names of ``data``'s classes in label order, or None where the classes have no names.

    ``data.classes`` when the dataset carries them, CIFAR-10's names by dataset name, else None.
    """
    names = getattr(data, "classes", None)
    if names:
        return list(names)
    return CIFAR10_CLASSES if getattr(data, "name", None) == "cifar10" else None


def _class_label(y: int, names: Sequence[str] | None) -> str:
    return names[y] if names is not None and 0 <= y < len(names) else str(y)


def _to_rgb(images: Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, H, W, 3) float array; one channel is shown in grey."""
    images = images.detach().float().cpu().clamp(0, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images[:, :3].permute(0, 2, 3, 1).numpy()


def scaled_saliency(gradients: Tensor) -> Tensor:
    """Each map ∇ₓf_y divided by its own largest |value|: (N, C, H, W) in [−1, 1], 0 stays 0.

    A map of zeros stays zero. Dividing by the maximum keeps the sign and where the gradient is
    zero, which a min-max rescaling would move to an arbitrary grey.
    """
    g = gradients.detach().float().cpu()
    peak = g.abs().flatten(1).amax(1).clamp_min(torch.finfo(torch.float32).tiny)
    return g / peak.view(-1, 1, 1, 1)


def _saliency_rgb(gradients: Tensor) -> np.ndarray:
    """Maps scaled by :func:`scaled_saliency` as colours: one channel through SALIENCY_CMAP
    (blue −1, white 0, red +1); three channels as an RGB image with mid-grey at 0."""
    from matplotlib import colormaps

    g = scaled_saliency(gradients)
    if g.shape[1] == 1:
        return colormaps[SALIENCY_CMAP]((g[:, 0].numpy() + 1) / 2)[..., :3]
    return _to_rgb((g + 1) / 2)


def _grid_figure(
    tiles: Sequence[np.ndarray],
    titles: Sequence[Sequence[tuple[str, str]]],
    header: Sequence[str],
    footer_inches: float = 0.0,
    gap_inches: float = GAP_INCHES,
) -> Figure:
    """A figure of ``tiles`` (each (H, W·k, 3) RGB in [0, 1], k images side by side) in a square-ish
    grid, each titled by its lines of (text, colour), under the ``header`` lines (first in bold).

    ``footer_inches`` are left free below for a colour bar; ``gap_inches`` of white separate tiles
    side by side. The tiles are upscaled (nearest) to about TILE_INCHES and placed as one uint8 RGBA
    image at the figure's own resolution (``figimage``): an axes' imshow of a float canvas, resampled
    and colour-converted at draw time, cost several times more on a 64-tile grid.
    """
    n = len(tiles)
    h, w = tiles[0].shape[:2]
    per_tile = w // h  # images side by side in one tile (saliency: input | map)
    scale = max(1, round(TILE_INCHES * FIGURE_DPI / h))  # output pixels per image pixel
    th, tw = h * scale, w * scale
    band, gap = round(TITLE_INCHES * FIGURE_DPI), round(GAP_INCHES * FIGURE_DPI)
    # White between tiles side by side, widened so that the longest tile title fits its cell.
    longest = max((len(text) for lines in titles for text, _ in lines), default=0)
    title_px = longest * TILE_FONT * CHAR_EMS / 72 * FIGURE_DPI
    gap_w = round(max(gap_inches * FIGURE_DPI, title_px - tw + gap))
    cols = max(1, math.ceil(math.sqrt(n / per_tile)))
    rows = math.ceil(n / cols)
    cell_w, cell_h = tw + gap_w, band + th + gap
    canvas = np.full((rows * cell_h, cols * cell_w, 4), 255, dtype=np.uint8)  # opaque white RGBA
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y0, x0 = r * cell_h + band, c * cell_w + gap_w // 2
        pixels = np.rint(np.clip(tile, 0, 1) * 255).astype(np.uint8)
        canvas[y0 : y0 + th, x0 : x0 + tw, :3] = pixels.repeat(scale, 0).repeat(scale, 1)

    footer_px = round(footer_inches * FIGURE_DPI) + 5
    fig_w = max(canvas.shape[1] + 30, round(MIN_FIGURE_INCHES * FIGURE_DPI))  # pixels
    wrapped = _wrap_header(header, fig_w - 2 * HEADER_MARGIN_PX)
    header_px = round(HEADER_LINE_INCHES * (len(wrapped) + 0.6) * FIGURE_DPI)
    fig_h = canvas.shape[0] + header_px + footer_px + 5
    fig = Figure(figsize=(fig_w / FIGURE_DPI, fig_h / FIGURE_DPI), dpi=FIGURE_DPI)
    left = (fig_w - canvas.shape[1]) // 2
    fig.figimage(canvas, xo=left, yo=footer_px, origin="upper")
    canvas_top = footer_px + canvas.shape[0]  # in figure pixels from the bottom
    for i, lines in enumerate(titles):
        r, c = divmod(i, cols)
        x = left + c * cell_w + gap_w // 2 + tw / 2
        for j, (text, colour) in enumerate(reversed(lines)):
            # Lines stacked upwards from the tile's top edge.
            y = canvas_top - (r * cell_h + band) + 2 + j * band / 2
            fig.text(x / fig_w, y / fig_h, text, color=colour, fontsize=TILE_FONT, ha="center", va="bottom")
    top = 1 - 5 / fig_h
    for j, (line, bold) in enumerate(wrapped):
        fig.text(
            0.5, top - j * HEADER_LINE_INCHES * FIGURE_DPI / fig_h, line, ha="center", va="top",
            fontsize=HEADER_FONTS[0 if bold else 1], fontweight="bold" if bold else "normal",
        )
    return fig


def _wrap_header(header: Sequence[str], width_px: float) -> list[tuple[str, bool]]:
    """The header's lines wrapped to ``width_px`` pixels, each with whether it is bold (the
    first header line and its continuations)."""
    out = []
    for j, line in enumerate(header):
        bold = j == 0
        size, ems = HEADER_FONTS[0 if bold else 1], HEADER_EMS[0 if bold else 1]
        chars = max(20, int(width_px / (size * ems / 72 * FIGURE_DPI)))
        out += [(part, bold) for part in textwrap.wrap(line, chars) or [""]]
    return out


def _titled(label: str, what: str) -> str:
    """``what`` preceded by the run's ``label`` (e.g. the sweep's point name), when there is one."""
    return f"{label}: {what}" if label else what[:1].upper() + what[1:]


def samples_figure(
    samples: Tensor,
    targets: Tensor,
    *,
    judged: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    steps: int | None = None,
    model: str = "the model",
    gan_test_value: float | None = None,
    total: int | None = None,
    label: str = "",
) -> Figure:
    """The figure of :func:`write_samples`: at most MAX_TILES samples, each titled with its target
    class and, with ``judged`` (the judge's classes), the verdict in green ✓ or red ✗; ``label``
    (the run's name) opens the title."""
    n = min(len(samples), MAX_TILES)
    total = len(samples) if total is None else total
    targets = targets[:n].tolist()
    verdicts = None if judged is None else judged[:n].tolist()
    titles = []
    for i, y in enumerate(targets):
        lines = [(_class_label(y, class_names), "black")]
        if verdicts is not None:
            ok = verdicts[i] == y
            verdict = f"judge: {_class_label(verdicts[i], class_names)} {'✓' if ok else '✗'}"
            lines.append((verdict, AGREE if ok else DISAGREE))
        titles.append(lines)
    how = f"{steps} steps of gradient ascent on f_y(x)" if steps is not None else "gradient ascent on f_y(x)"
    header = [
        _titled(label, f"samples of p(x|y) ∝ exp f_y(x), {model}") + f": {how} from noise",
        "Tile title: target class y"
        + ("; below it the judge's class (✓ agrees, ✗ disagrees)" if verdicts is not None else ""),
    ]
    shown = f"{n} of {total} samples shown" if n < total else f"all {n} samples shown"
    if gan_test_value is not None:
        header.append(
            f"GAN-test (fraction the judge assigns to their target): {gan_test_value:.3f} over {total} samples; {shown}"
        )
    else:
        header.append(f"No judge given, so no GAN-test; {shown}")
    return _grid_figure(list(_to_rgb(samples[:n])), titles, header)


def write_samples(samples: Tensor, targets: Tensor, path: str | Path, **kw) -> Path:
    """Write samples (N, C, H, W) in [0, 1] as a titled grid PNG; ``kw`` as :func:`samples_figure`."""
    path = Path(path)
    samples_figure(samples, targets, **kw).savefig(path, dpi=FIGURE_DPI)  # figimage is placed in pixels
    return path


def saliency_figure(
    images: Tensor,
    gradients: Tensor,
    labels: Tensor,
    *,
    class_names: Sequence[str] | None = None,
    model: str = "the model",
    total: int | None = None,
    label: str = "",
) -> Figure:
    """The figure of :func:`write_saliency`: at most MAX_TILES pairs (image | its ∇ₓf_y map scaled by
    :func:`scaled_saliency`), each titled with its true class y, with a colour bar or a note;
    ``label`` (the run's name) opens the title."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    n = min(len(images), MAX_TILES)
    total = len(images) if total is None else total
    inputs, maps = _to_rgb(images[:n]), _saliency_rgb(gradients[:n])
    h, w = inputs.shape[1:3]
    spacer = np.ones((h, max(1, w // 8), 3))  # thin white line between an image and its map
    tiles = [np.concatenate([a, spacer, b], axis=1) for a, b in zip(inputs, maps)]
    titles = [[(f"y = {_class_label(y, class_names)}", "black")] for y in labels[:n].tolist()]
    single = gradients.shape[1] == 1
    shown = f"{n} of {total} test images" if n < total else f"{n} test images"
    header = [
        _titled(label, f"saliency, {model}") + ": input gradient ∇ₓf_y(x) of the true-class logit",
        f"Each pair: test image x (left) | its map ∇ₓf_y(x) (right); title: true class y; {shown}",
        "Each map divided by its own max |∇ₓf_y| (per-map scale): "
        + ("red +, blue −, white 0, see colour bar" if single else "RGB channels, mid-grey = 0"),
    ]
    footer = 0.7 if single else 0.0  # inches for the colour bar and its label
    fig = _grid_figure(tiles, titles, header, footer_inches=footer, gap_inches=PAIR_GAP_INCHES)
    if single:
        fig_w, fig_h = fig.get_size_inches()
        cax = fig.add_axes((0.3, 0.42 / fig_h, 0.4, 0.1 / fig_h))
        scale = ScalarMappable(Normalize(-1, 1), colormaps[SALIENCY_CMAP])
        bar = fig.colorbar(scale, cax=cax, orientation="horizontal")
        bar.set_ticks([-1, 0, 1])
        bar.ax.tick_params(labelsize=7)
        bar.set_label("∇ₓf_y / max |∇ₓf_y| of its map", fontsize=7.5)
    return fig


def write_saliency(images: Tensor, gradients: Tensor, labels: Tensor, path: str | Path, **kw) -> Path:
    """Write each image beside its input-gradient map as a titled grid PNG (see :func:`saliency_figure`)."""
    path = Path(path)
    saliency_figure(images, gradients, labels, **kw).savefig(path, dpi=FIGURE_DPI)
    return path


def _curve_axes(title: Sequence[str], label: str) -> tuple[Figure, Axes]:
    """A curve figure and its axes, titled by the run's ``label`` (wrapped) over the ``title`` lines;
    the room above the axes grows with the number of lines, so that no title leaves the figure."""
    lines = (textwrap.wrap(label, CURVE_LABEL_CHARS) if label else []) + list(title)
    fig = Figure(figsize=CURVE_SIZE, dpi=100)
    # Each line takes 1.25 font sizes, plus the title's 6-point pad and 4 points to the edge.
    room = (len(lines) * 1.25 * CURVE_TITLE_FONT + 10) / 72 / CURVE_SIZE[1]  # fraction of the height
    fig.subplots_adjust(**{**CURVE_MARGINS, "top": min(CURVE_MARGINS["top"], 1 - room)})
    ax = fig.subplots()
    ax.set_title("\n".join(lines), fontsize=CURVE_TITLE_FONT)
    return fig, ax


def density_ratios_figure(
    ratios: dict[float, float], *, images: int | None = None, draws: int = 1, label: str = ""
) -> Figure:
    """The figure of :func:`plot_density_ratios`; ``label`` (the run's name) opens the title."""
    fig, ax = _curve_axes(
        ["Density ratio under Gaussian noise (paper's Fig. 1)",
         "ratio = exp(f_y(x+η) − f_y(x)); below 1: noise makes x less likely"], label,
    )  # fmt: skip
    sigmas = sorted(ratios)
    values = [ratios[s] for s in sigmas]
    over = f"mean over {images} test images" if images is not None else "mean over test images"
    each = "one draw" if draws == 1 else f"{draws} draws"
    lost = sum(not math.isfinite(v) for v in values)
    lost_note = f" ({lost} of {len(values)} σ not finite, not drawn)" if lost else ""
    ax.plot(sigmas, values, marker="o", label=f"{over}, {each} of η ~ N(0, σ²I) each{lost_note}")
    ax.axhline(1.0, color="gray", linewidth=0.8, linestyle="--", label="1: the noise leaves p(x|y) unchanged")
    ax.set_xscale("log")
    if sigmas:  # the σ axis from the σ measured, also when no ratio is finite (overflowed logits)
        ax.set_xlim(min(sigmas) / 1.5, max(sigmas) * 1.5)
    # A log axis for ratios spanning decades (1 included), only when every ratio can be drawn on it:
    # a ratio that underflowed to 0 (or a NaN) keeps the linear axis.
    finite = all(math.isfinite(v) and v > 0 for v in values)
    if finite and values and max(values + [1.0]) / min(values + [1.0]) > 100:
        ax.set_yscale("log")
    else:  # each tick says its value: no "1e-5+9.999e-1" offset above the axis, into the title
        ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel("noise standard deviation σ (pixel intensity, images in [0, 1])")
    ax.set_ylabel("density ratio p(x+η|y) / p(x|y)")
    # The legend sits below the axes, where it cannot cover a point.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7.5, frameon=False)
    _fit_left_margin(fig, ax)
    return fig


def _fit_left_margin(fig: Figure, ax: Axes, pad: float = 4.0) -> None:
    """Widen the left margin until the y axis' tick labels and label lie ``pad`` pixels inside the
    figure: ratios near 1 need long tick labels (0.99992), which the fixed margin cuts. Measures the
    axis alone (its tight box), not the whole figure as a layout engine would."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    left = ax.yaxis.get_tightbbox(renderer).x0
    if left < pad:
        margin = fig.subplotpars.left + (pad - left) / fig.bbox.width
        fig.subplots_adjust(left=min(margin, 0.5))


def plot_density_ratios(
    ratios: dict[float, float], path: str | Path, *, images: int | None = None, draws: int = 1, label: str = ""
) -> Path:
    """Density ratio against σ (log x axis), as in the paper's Fig. 1; ``images`` test images and
    ``draws`` noise draws per image were averaged (said in the legend); ``label`` names the run."""
    density_ratios_figure(ratios, images=images, draws=draws, label=label).savefig(path)
    return Path(path)


FILL_WORDS = {"image_mean": "each image's mean colour", "constant": f"grey {CONSTANT_FILL}"}


def pixel_perturbation_figure(
    accuracy: dict[float, float],
    fill: str = "image_mean",
    *,
    images: int | None = None,
    num_classes: int | None = None,
    label: str = "",
) -> Figure:
    """The figure of :func:`plot_pixel_perturbation`; ``label`` (the run's name) opens the title."""
    fig, ax = _curve_axes(
        ["Pixel perturbation (paper's Fig. 3a)",
         "pixel importance: |∇ₓf_y| (std over channels for colour images)",
         f"removed pixels set to {FILL_WORDS.get(fill, fill)}"], label,
    )  # fmt: skip
    fractions = sorted(f for f in accuracy if f > 0)  # 0 has no place on a log axis
    on = f"{images} test images" if images is not None else "test images"
    ax.plot(fractions, [accuracy[f] for f in fractions], marker="o", label=f"accuracy on {on}")
    if 0.0 in accuracy:
        ax.axhline(accuracy[0.0], color="black", linewidth=0.8, linestyle=":", label="no pixel removed")
    if num_classes:
        chance = f"chance: 1/{num_classes} classes"
        ax.axhline(1 / num_classes, color="gray", linewidth=0.8, linestyle="--", label=chance)
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("fraction of pixels removed, least important first")
    ax.set_ylabel("test accuracy (fraction correct)")
    # The legend sits below the axes, where it cannot cover a point.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7.5, frameon=False, ncol=1)
    return fig


def plot_pixel_perturbation(
    accuracy: dict[float, float],
    path: str | Path,
    fill: str = "image_mean",
    *,
    images: int | None = None,
    num_classes: int | None = None,
    label: str = "",
) -> Path:
    """Accuracy against the fraction of removed pixels (log x axis), as in the paper's Fig. 3;
    ``images``: test images used; ``num_classes``: draws the chance level 1/K; ``label`` names the run."""
    pixel_perturbation_figure(accuracy, fill, images=images, num_classes=num_classes, label=label).savefig(path)
    return Path(path)


def write_all(
    data,
    cfg: EvalConfig,
    *,
    samples: Tensor,
    targets: Tensor,
    saliency: Tensor,
    judged: Tensor | None,
    ratios: dict[float, float],
    accuracy: dict[float, float],
    gan_test_value: float | None,
    model_name: str,
    out_dir: Path,
) -> dict[str, Path]:
    """Write the four pictures of one evaluation under ``out_dir``: {"samples", "saliency",
    "density_ratios", "pixel_perturbation"} -> path.

    All are trainer.evaluation's results on ``data``'s test set: ``samples``/``targets``, the
    ``saliency`` maps of the first test images and the ``judged`` classes of the first samples
    (None: no judge), one per tile drawn (``len(saliency)``), ``ratios`` and ``accuracy``.
    Every title opens with ``cfg.label`` (the run's name).
    """
    label = cfg.label
    test_x, test_y = data.test_x, data.test_y
    n = len(saliency)  # tiles drawn; the titles say how many of how many
    names, described = class_names_of(data), f"model {model_name}"
    return {
        "samples": write_samples(
            samples[:n], targets[:n], out_dir / "samples.png", judged=judged, class_names=names,
            steps=cfg.steps, model=described, gan_test_value=gan_test_value, total=len(samples), label=label,
        ),
        "saliency": write_saliency(
            test_x[:n], saliency, test_y[:n], out_dir / "saliency.png", class_names=names, model=described,
            total=min(cfg.grid_images, len(test_x)), label=label,
        ),
        "density_ratios": plot_density_ratios(
            ratios, out_dir / "density_ratios.png", images=len(test_x[: cfg.density_images]), draws=cfg.density_draws,
            label=label,
        ),
        "pixel_perturbation": plot_pixel_perturbation(
            accuracy, out_dir / "pixel_perturbation.png", cfg.perturbation_fill,
            images=len(test_x[: cfg.perturbation_images]), num_classes=getattr(data, "num_classes", None),
            label=label,
        ),
    }
