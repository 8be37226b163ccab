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

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from sweep.config import SweepConfig
from sweep.points import POINT_SEED
from trainer import keys


class SpareReplicates(ASHAScheduler):
    """ASHA (Ray's public class) that never stops a replicate before ``max_t``."""

    def __init__(self, time_attr: str, max_t: int, **kwargs: Any) -> None:
        super().__init__(time_attr=time_attr, max_t=max_t, **kwargs)
        self.epoch_key, self.last_epoch = time_attr, max_t

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if POINT_SEED in (getattr(trial, "config", None) or {}):
            return TrialScheduler.STOP if result.get(self.epoch_key, 0) >= self.last_epoch else TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def spare_replicates(cfg: SweepConfig) -> SpareReplicates:
    """The sweep's ASHA as ``sweep.tune.scheduler`` builds it from ``cfg``, sparing replicates."""
    return SpareReplicates(time_attr=keys.EPOCH, max_t=cfg.max_epochs, grace_period=cfg.scheduler.grace_period,
                           reduction_factor=cfg.scheduler.reduction_factor)
