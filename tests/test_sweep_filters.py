"""No MLflow search filter is built from a user value: sweep and point names holding quotes,
backslashes or non-ASCII characters are found again, and a finished sweep's best run is tagged."""

from __future__ import annotations

import pytest

from sweep import tracking
from sweep.record import Role, Tag

NAMES = ["it's", 'say "hi"', "a\\b", "λ-ünï€", "both ' and \"", "x' or '1'='1"]


@pytest.fixture()
def store(tmp_path):
    mc = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracking.ensure_experiment(mc, "filters", (tmp_path / "artifacts").as_uri())
    (tmp_path / "sweep.yaml").write_text("x: 1\n")
    return mc, exp, tmp_path / "sweep.yaml"


def test_every_sweep_name_is_found_as_itself_and_no_other(store):
    mc, exp, config = store
    ids = {name: tracking.start_parent(mc, exp, name, {"a": 1}, config) for name in NAMES}
    for name, run_id in ids.items():
        assert tracking.find_parent(mc, "filters", name) == run_id
    assert tracking.find_parent(mc, "filters", "it") is None and tracking.find_parent(mc, "filters", "a\\\\b") is None
    assert tracking.find_parent(mc, "no-such-experiment", "it's") is None


def test_the_best_point_is_found_whatever_its_name_holds(store):
    mc, exp, config = store
    parent = tracking.start_parent(mc, exp, "s", {"a": 1}, config)
    children = {}
    for name in [f"sm λ1e-3 μ1e-3 data.data_dir=/tmp/{n} s0" for n in NAMES]:
        run = mc.create_run(exp, run_name=name, tags={str(Tag.PARENT): parent, str(Tag.POINT): name,
                                                      str(Tag.ROLE): str(Role.TRIAL)})  # fmt: skip
        children[name] = run.info.run_id
    for name, run_id in children.items():  # each in turn the best: tags overwritten, the run closed again
        tracking.finish_parent(mc, parent, trials=len(children), failed=0, best={"point": name, "eval/objective": 0.5},
                               best_run=run_id)  # identity by run id; the name is only shown
        run = mc.get_run(parent)
        assert run.info.status == "FINISHED"
        assert run.data.tags[str(Tag.BEST_POINT)] == name and run.data.tags[str(Tag.BEST_RUN)] == run_id
