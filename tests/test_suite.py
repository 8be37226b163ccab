"""The suite's own arrangement (tests/conftest.py): the tiny sweep's readers share one xdist group,
and slow tests are started first."""

from __future__ import annotations

import functools

import pytest

from conftest import TINY_SWEEP_GROUP


def _group(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return None
    return marker.args[0] if marker.args else marker.kwargs.get("name")


def test_every_reader_of_the_tiny_sweep_is_in_its_group_and_slow_tests_come_first(request):
    items = request.session.items
    assert request.node in items  # the session's collected tests were read
    readers = [i for i in items if "tiny_sweep" in getattr(i, "fixturenames", ())]
    assert all(_group(i) == TINY_SWEEP_GROUP for i in readers), [i.nodeid for i in readers if _group(i) != TINY_SWEEP_GROUP]
    assert all(_group(i) != TINY_SWEEP_GROUP for i in items if i not in readers)
    slow = [i.get_closest_marker("slow") is not None for i in items]
    assert slow == sorted(slow, reverse=True), "a slow test is collected after a fast one"


@functools.cache
def _cpu_by_process():
    """The CI folder's ``cpu-by-process`` script as a module (it has no ``.py`` suffix)."""
    import importlib.machinery
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / ".ci" / "cpu-by-process"
    loader = importlib.machinery.SourceFileLoader("cpu_by_process", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    sys.modules[loader.name] = module  # its dataclass looks its module up there
    loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name, kind",
    [
        ("/v/bin/python3 -m sweep.run --name x --set a=1", "sweep driver"),
        ("ray::IDLE", "Ray idle worker"),
        ("ray::ImplicitFunc.train", "Ray worker (trial, judge, task)"),
        ("/v/bin/python3 -u /v/ray/_private/workers/default_worker.py --node-ip-address=127.0.0.1", "Ray worker (trial, judge, task)"),
        ("/v/ray/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/x", "Ray services"),
        ("ray::DashboardAgent", "Ray services"),
        ("/v/bin/python3 /v/bin/ray job submit --address http://127.0.0.1:1 -- python -m sweep.run", "Ray services"),
        ("/v/bin/python3 -m mlflow server --host 127.0.0.1 --backend-store-uri sqlite:////tmp/pytest-of-u/m.db", "MLflow server"),
        ("/v/bin/python3 -u -c import sys;exec(eval(sys.stdin.readline()))", "pytest"),
        ("/usr/lib/chromium/chromium --type=renderer", "browser (Chromium, Playwright)"),
        ("/v/bin/python3 -c import trainer.evaluation", "other"),
        ("", "kernel threads"),
    ],
)  # fmt: skip
def test_cpu_by_process_names_each_kind_of_process(name, kind):
    assert _cpu_by_process().kind_of(name) == kind


def test_cpu_by_process_charges_a_child_its_cpu_and_passes_its_exit_status_on(tmp_path, capsys):
    import sys

    burn = "import time; t = time.process_time()\nwhile time.process_time() - t < 0.6: pass\nraise SystemExit(3)"
    saved = tmp_path / "samples.tsv"
    code = _cpu_by_process().main(["--every", "0.1", "--save", str(saved), "--", sys.executable, "-c", burn])
    assert code == 3
    # The child's samples: its CPU time grows to its 0.6 s of busy loop plus its interpreter's start.
    child = [float(line.split("\t")[2]) for line in saved.read_text().splitlines() if "process_time" in line]
    assert child and 0.5 <= max(child) <= 3, child
    report = capsys.readouterr().err
    other = next(line for line in report.splitlines() if line.startswith("other "))
    assert float(other.split()[2]) >= 0.5, report  # charged to its kind (other processes may add to it)
    assert "the machine (" in report and "% of that" in report
