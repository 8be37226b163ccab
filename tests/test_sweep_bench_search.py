"""The search benchmark's bookkeeping: epochs to reach a target and the hypervolume of a method."""

from __future__ import annotations

import pandas as pd
import pytest

from sweep.bench.live_search import _outcome, against_table, replay_size
from sweep.bench.replay.table import Table


def trials(rows) -> pd.DataFrame:
    """(status, epochs reached, accuracy, GAN-test, objective) per trial, in start order."""
    return pd.DataFrame({
        "run_id": [f"r{i}" for i in range(len(rows))], "status": [r[0] for r in rows],
        "epochs": pd.array([2] * len(rows), dtype="Int64"), "epochs_done": pd.array([r[1] for r in rows], dtype="Int64"),
        "test_acc": [r[2] for r in rows], "gan_test": [r[3] for r in rows], "objective": [r[4] for r in rows],
    })  # fmt: skip


def test_outcome_counts_epochs_in_start_order_until_the_target():
    coarse = trials([("finished", 2, 0.5, 0.1, 0.3), ("diverged", 1, None, None, 0.0)])
    search = trials([("stopped", 1, 0.2, 0.2, 0.2), ("finished", 2, 0.4, 0.6, 0.5), ("finished", 2, 0.9, 0.9, 0.9)])
    out = _outcome([coarse, search], target=0.5)
    assert out.epochs == 8
    assert out.to_best == 2 + 1 + 1 + 2  # the coarse grid's epochs count first
    assert out.best == pytest.approx(0.9)
    # Front of the finished trials: (0.9, 0.9) dominates the others; the stopped one is no candidate.
    assert out.hypervolume == pytest.approx(0.81)
    assert _outcome([search], target=0.95).to_best is None


def _table() -> Table:
    rows = [
        {"lam": 1e-3, "mu": 1e-4, "seed": 0, "status": "finished", "acc": [0.5, 0.75], "gan": {"2": 0.25}},
        {"lam": 1e-2, "mu": 1e-4, "seed": 0, "status": "finished", "acc": [0.5, 0.5], "gan": {"2": 0.5}},
        {"lam": 1e-3, "mu": 1e-4, "seed": 1, "status": "finished", "acc": [0.5, 1.0], "gan": {"2": 0.75}},
    ]
    meta = {"command": "python -m sweep.bench.replay record --seeds 0 1 --set trainer.epochs=2 --set 'trainer.eval.samples=4'"
            " --set trainer.eval.every=2", "val_images": 4, "samples": 4}
    return Table.from_rows(rows, epochs=2, eval_every=2, meta=meta)


def test_the_replay_size_is_the_tables_own_settings():
    sets, epochs, every = replay_size(_table())
    assert sets == ["trainer.eval.samples=4", "trainer.epochs=2", "trainer.eval.every=2"]
    assert (epochs, every) == (2, 2)


def test_live_cells_are_compared_with_the_recorded_ones_of_their_seed():
    live = pd.DataFrame({"lam": [1e-2, 1e-3, 1e-5, 1e-4], "mu": [1e-4, 1e-4, 1e-4, 1e-4],
                         "status": ["finished", "finished", "finished", "diverged"],
                         "val_acc": [0.5, 0.5, 0.9, 0.25], "gan_test": [0.5, 0.75, 0.1, 0.0]})  # fmt: skip
    table = _table()
    table.cells[(1e-4, 1e-4)] = {0: {"status": "finished", "acc": [0.25, 0.5], "gan": {2: 0.5}}}
    lines = against_table(live, table, seed=0)
    # 1e-5 is not in the table; 1e-4 diverged live only (compared by status, not by value); of the two
    # finished in both, one accuracy agrees (1e-2) and one GAN-test (1e-2), the other off by 2 of 4 samples
    assert lines[-1] == ("  seed 0: 3 cells, status the same in 2; of the 2 finished in both, validation accuracy "
                         "identical in 1, GAN-test identical in 1; GAN-test differs by at most 2 of 4 samples (mean 1.0)")
    assert "2 /   3 of 4" in lines[2] and lines[2].endswith("of 4")  # λ=1e-3: 2 of 4 images live, 3 recorded
    assert lines[1].endswith("diverged / finished")  # λ=1e-4, sorted first
    assert "not in the recorded table" in against_table(live, table, seed=7)[0]


def test_the_goals_share_of_seeds_carries_its_wilson_interval():
    from sweep.bench.live_search import _share
    from trainer.stats import wilson

    w = wilson(2, 3)
    assert _share(2, 3) == f"2/3 seeds (67 % [{100 * w.lo:.0f}, {100 * w.hi:.0f}])"
    assert _share(0, 2).startswith("0/2 seeds (0 % [0, ") and not _share(0, 2).endswith("[0, 0])")


def test_the_summary_reports_each_methods_hypervolume_and_ratio_with_intervals(monkeypatch, tmp_path, capsys):
    import sweep.bench.live_search as bench

    # Every sweep answers with the same two finished trials (its sweeps are stood in for: this
    # checks the summary the benchmark prints, not the sweeps, which the sweep's own tests run).
    frame = trials([("finished", 2, 0.9, 0.5, 0.7), ("finished", 2, 0.6, 0.8, 0.7)])
    frame["run_name"] = ["a", "b"]
    monkeypatch.setattr(bench, "_sweep", lambda root, name, sets: frame.copy())
    bench.main(["--seeds", "0", "1", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and "[" in line}
    for method in ("grid", "cold", "warm"):
        assert "[" in rows[method] and "1.000 [1.000, 1.000]" in rows[method], out  # identical sweeps: ratio 1
    assert "in 2/2 seeds (100 % [" in out, out
