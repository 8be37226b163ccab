"""Helpers shared by several test modules: the tiny sweep's overrides, running the driver in
process, reading a sweep's child runs, a free port, a PNG check, and the texts of a picture that
leave its canvas or overlap.

Fixtures stay in ``conftest.py``; plain functions and constants live here so test modules import
them from one place instead of from each other.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from PIL import Image

# A miniature of the quickstart: a digits subset, a 1/16-width ResNet-9, 2 epochs, a tiny
# evaluation and a tiny judge. Each sweep test starts from these overrides.
TINY = [
    "trainer.data.train_size=256",
    "trainer.data.augment=false",
    "trainer.data.test_size=96",
    "trainer.epochs=2",
    "trainer.batch_size=64",
    "trainer.eval.every=1",
    "trainer.eval.samples=16",
    "trainer.eval.steps=5",
    "trainer.eval.density_images=32",
    "trainer.eval.perturbation_images=32",
    "trainer.eval.perturbation_points=3",
    "trainer.eval.grid_images=16",
    "judge.width=0.0625",
    "judge.epochs=1",
    "search.grid.loss.lam=[1.0e-3, 1.0e-4]",
    "search.grid.loss.mu=[1.0e-4]",
    "confirm.train_seeds=0",  # the quickstart retrains its finalists; the retrains have tests of their own
    "confirm.samples=128",  # more than the 96 test images: their labels are cycled as the samples' targets
]
# Two extra points: the baseline, and one whose learning rate makes the loss overflow.
TINY_POINTS = "search.points=[{loss.preset: baseline}, {loss.preset: baseline, optim.lr: 1.0e+12}]"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sweep(args: list[str]) -> int:
    """Run ``python -m sweep.run`` in this process; returns its exit status."""
    from sweep.run import main

    return main(args)


def child_runs(uri: str, experiment: str, parent_id: str) -> list:
    """Every child run of ``parent_id``."""
    import mlflow

    from sweep.record import Tag

    mc = mlflow.MlflowClient(uri)
    exp = mc.get_experiment_by_name(experiment)
    return mc.search_runs([exp.experiment_id], f"tags.`{Tag.PARENT}` = '{parent_id}'", max_results=1000)


def assert_png(path: Path | str) -> None:
    """A valid PNG of reasonable size that is not a single colour."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        assert image.width >= 200 and image.height >= 150
        extrema = image.convert("RGB").getextrema()
    assert any(lo < hi for lo, hi in extrema), f"{path} is a single colour"


def stop_session(proc: subprocess.Popen) -> None:
    """End a process started with start_new_session=True and everything it spawned.

    Ray gives raylets and workers their own process groups, but they stay in the session, so the
    session id finds exactly the processes this test started (``ray stop`` would also end any
    other Ray on the machine).
    """

    def members() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[3]) == proc.pid:  # field 6: session id
                    found.append(int(entry.name))
        return found

    # SIGKILL, as `ray stop --force` does (a graceful Ray shutdown takes tens of seconds); again
    # until none is left, since a raylet may start a worker while its siblings die.
    deadline = time.monotonic() + 15
    while (alive := [p for p in members() if is_alive(p)]) and time.monotonic() < deadline:
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    proc.wait(5)
    assert not alive, f"processes of the session survived: {alive}"


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; its parent just has not reaped it


def drawn_texts(fig) -> list[tuple[str, object]]:
    """Every non-empty visible text ``fig`` draws, with its box in pixels, measured by the Agg renderer
    after a full draw (titles, labels, legends, annotations, cell texts, the drawn tick labels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    # An axis keeps tick labels for ticks outside its view, which are not drawn: of the tick
    # labels, take those of the ticks the axis draws (Axis._update_ticks, what Axis.draw uses).
    axes = [axis for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)]
    ticks = {id(t) for axis in axes for tick in axis.majorTicks + axis.minorTicks for t in (tick.label1, tick.label2)}
    # Text artists only: a legend's TextArea wraps a Text and would count it twice.
    drawn = [t for t in fig.findobj(lambda a: isinstance(a, Text)) if id(t) not in ticks]
    drawn += [t for axis in axes for tick in axis._update_ticks() for t in (tick.label1, tick.label2)]
    seen, out = set(), []
    for text in drawn:
        if id(text) in seen or not text.get_text().strip() or not text.get_visible():
            continue
        seen.add(id(text))
        out.append((text.get_text(), text.get_window_extent(renderer)))
    return out


def texts_outside(fig, texts: list | None = None) -> list[str]:
    """Every drawn text whose box leaves the canvas (a clipped title or label); ``texts``: those of
    :func:`drawn_texts`, when already measured."""
    width, height = fig.bbox.width, fig.bbox.height
    return [f"{text!r} at x {box.x0:.0f}..{box.x1:.0f} of {width:.0f}, y {box.y0:.0f}..{box.y1:.0f} of {height:.0f}"
            for text, box in (drawn_texts(fig) if texts is None else texts)
            if box.x0 < 0 or box.y0 < 0 or box.x1 > width or box.y1 > height]


def texts_overlapping(fig, tolerance: float = 1.0, texts: list | None = None) -> list[str]:
    """Every pair of drawn texts whose boxes share more than ``tolerance`` pixels² (one runs into the other)."""
    texts = drawn_texts(fig) if texts is None else texts
    found = []
    for i, (a, box_a) in enumerate(texts):
        for b, box_b in texts[i + 1:]:
            w = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            h = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if w > 0 and h > 0 and w * h > tolerance:
                found.append(f"{a!r} overlaps {b!r} ({w:.0f}x{h:.0f} px)")
    return found


def text_problems(fig) -> list[str]:
    """:func:`texts_outside` and :func:`texts_overlapping` of ``fig`` from one draw."""
    texts = drawn_texts(fig)
    return texts_outside(fig, texts) + texts_overlapping(fig, texts=texts)
