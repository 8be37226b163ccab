"""A what-if of the replay benchmark, not the live sweep's scheduler: ASHA that spares replicates.

The sweep's ASHA treats a replicate (``search.replicate``) as any trial and cuts it at a rung when
its early objective trails, about a third of them on the recorded table. :class:`SpareReplicates`
lets every replicate (a trial whose Tune config carries ``point_seed``) train to ``max_t``; its
early results are not recorded in the rungs, so the cutoffs the other trials face are plain ASHA's,
and its final result is recorded as any trial's. On the recorded table it did not choose better
than plain ASHA (docs/results.md, "Search"), so the sweep keeps plain ASHA.
"""

from __future__ import annotations

from typing import Any

from sweep.config import SweepConfig
from sweep.engine import tuner
from sweep.points import POINT_SEED
from trainer import keys


class SpareReplicates:
    """The sweep's ASHA (``asha``, on the epochs) that never stops a replicate before ``max_t``; every other call
    goes to ``asha`` itself. A wrapper, not a subclass, so that Ray stays imported in the engine
    and the search only."""

    def __init__(self, asha: Any, max_t: int) -> None:
        self.asha, self.last_epoch = asha, max_t

    def __getattr__(self, name: str) -> Any:
        return getattr(self.asha, name)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if POINT_SEED in (getattr(trial, "config", None) or {}):
            return tuner.STOP if result.get(keys.EPOCH, 0) >= self.last_epoch else tuner.CONTINUE
        return self.asha.on_trial_result(tune_controller, trial, result)


def spare_replicates(cfg: SweepConfig) -> SpareReplicates:
    """The sweep's ASHA as ``sweep.engine.tuner.scheduler`` builds it from ``cfg``, sparing replicates."""
    if cfg.scheduler.kind != "asha":
        raise ValueError("spare_replicates: the what-if spares replicates from ASHA (scheduler.kind: asha)")
    return SpareReplicates(tuner.scheduler(cfg), cfg.max_epochs)
