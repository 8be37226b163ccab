"""The recorded table of the replay benchmark: learning curves of a λ×μ grid, per training seed.

A cell is one (λ, μ, seed) training run: its validation accuracy after every epoch, GAN-test at
its evaluation epochs, and whether it finished, diverged or failed (the trainer raised; then
``acc`` holds the epochs reported before the divergence or the failure). :meth:`Table.metrics` returns what the trainer reported at an epoch, in the
trainer's keys, so a replayed trial feeds the same numbers to the same objective code as a live
one.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import keys


@dataclass
class Table:
    """Recorded curves: ``cells[(lam, mu)][seed]`` is a row (status, acc, gan)."""

    lams: list[float]
    mus: list[float]
    seeds: list[int]
    epochs: int  # epochs of a full run
    eval_every: int  # GAN-test every k epochs (and at the last)
    cells: dict[tuple[float, float], dict[int, dict[str, Any]]]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], epochs: int, eval_every: int, meta: dict[str, Any]) -> Table:
        cells: dict[tuple[float, float], dict[int, dict[str, Any]]] = {}
        for row in rows:
            gan = {int(k): float(v) for k, v in row["gan"].items()}
            cells.setdefault((row["lam"], row["mu"]), {})[int(row["seed"])] = {
                "status": row["status"], "acc": [float(a) for a in row["acc"]], "gan": gan}
        return cls(
            lams=sorted({r["lam"] for r in rows}),
            mus=sorted({r["mu"] for r in rows}),
            seeds=sorted({int(r["seed"]) for r in rows}),
            epochs=epochs,
            eval_every=eval_every,
            cells=cells,
            meta=meta,
        )

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"lam": lam, "mu": mu, "seed": seed, "status": row["status"], "acc": row["acc"],
             "gan": {str(k): v for k, v in row["gan"].items()}}
            for (lam, mu), by_seed in self.cells.items()
            for seed, row in by_seed.items()
        ]

    def last_epoch(self, lam: float, mu: float, seed: int) -> int:
        """The last epoch the run reported: ``epochs``, or the one it diverged at."""
        row = self.cells[(lam, mu)][seed]
        return self.epochs if row["status"] == keys.Status.FINISHED else len(row["acc"]) + 1  # the epoch it ended in

    def metrics(self, lam: float, mu: float, seed: int, epoch: int) -> dict[str, Any]:
        """What the trainer reported after ``epoch`` (1-based) of this cell."""
        row = self.cells[(lam, mu)][seed]
        if row["status"] in (keys.Status.DIVERGED, keys.Status.FAILED) and epoch > len(row["acc"]):
            # diverged: the trainer's report of that epoch; failed: the trial raised during it
            return {keys.EPOCH: epoch, keys.STATUS: row["status"]}
        out: dict[str, Any] = {
            keys.EPOCH: epoch,
            keys.STATUS: (keys.Status.FINISHED if epoch == self.epochs else keys.Status.RUNNING).value,
            self.meta.get("accuracy", keys.VAL_ACC): row["acc"][epoch - 1],
        }
        if epoch in row["gan"]:
            out[keys.GAN_TEST] = row["gan"][epoch]
        return out


def write_table(table: Table, path: Path) -> None:
    """Gzipped JSON, written atomically."""
    blob = {"lams": table.lams, "mus": table.mus, "seeds": table.seeds, "epochs": table.epochs,
            "eval_every": table.eval_every, "meta": table.meta, "rows": table.rows()}
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt") as f:
        json.dump(blob, f, separators=(",", ":"))
    tmp.replace(path)


def read_table(path: Path) -> Table:
    with gzip.open(path, "rt") as f:
        blob = json.load(f)
    return Table.from_rows(blob["rows"], blob["epochs"], blob["eval_every"], blob["meta"])
