"""Helpers shared by several test modules: the tiny sweep's overrides, running the driver in
process, reading a sweep's child runs, a free port, and a PNG check.

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
