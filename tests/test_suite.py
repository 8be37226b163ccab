"""The suite's own arrangement (tests/conftest.py): the tiny sweep's readers share one xdist group,
and slow tests are started first."""

from __future__ import annotations

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
