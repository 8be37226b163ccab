"""The finalists of a sweep and the verdict on them: which trials are confirmed, their confirmed
numbers, the best point by the confirmation's rule and best − each other finalist.

Pure functions of Tune's rows, the MLflow runs and measured counts (no MLflow client, no torch,
no Ray), so the statistics are tested on their own; :mod:`sweep.confirm` runs the stage with them.

**Finalists** (:func:`finalists`): the best point by the selection objective, then the points on
the accuracy/GAN-test front by the selection numbers, then the next best by the selection
objective, at most ``confirm.top_k``, finished trials only, each tied to its MLflow run by the
run's tag ``trial.id`` (never its display name).

**The verdict** (:func:`decide`). Without retrains the best point stays the one selection chose;
its confirmed numbers are fresh draws of the same checkpoint, so they remove the evaluation's part
of the winner's curse only, and the others are compared with it paired over the shared items,
Holm-corrected over the k − 1 comparisons (:func:`trainer.compare.versus_best`).

With retrains a finalist is reported by the mean over its *new* seeds only (a diverged retrain
counts as the objective's worst value); its own selected run is shown beside it and never averaged
in. The interval uses the run-to-run variance pooled over every finalist's confirmed seeds
(:mod:`trainer.pooled`; the selected runs are in the variance, where their selection can only
widen it). The best point is the finalist with the best mean, and since it is picked from the
numbers it is compared on, Holm corrects over every pair.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sweep.config import ObjectiveConfig
from sweep.objective import OBJECTIVES, accuracy_key, worst_value
from sweep.objective import objective_interval as sweep_objective_interval
from sweep.points import Point
from sweep.record import Role, Status, Tag, items_tag
from sweep.rows import objective_of, point_of
from trainer import compare, keys
from trainer import items as item_codes
from trainer.compare import Difference, VersusBest
from trainer.pooled import Pooled, pooled
from trainer.stats import Interval, proportion, seeds_interval


# The metrics this stage logs in a finalist's run, each with its _lo/_hi.
CONFIRM_KEYS = (keys.CONFIRM_GAN_TEST, keys.CONFIRM_TEST_ACC, keys.CONFIRM_OBJECTIVE)


# With confirm.train_seeds: the same as the mean over the finalist's new seeds (pooled interval).
SEEDS_KEYS = {keys.CONFIRM_GAN_TEST: keys.CONFIRM_GAN_TEST_SEEDS, keys.CONFIRM_TEST_ACC: keys.CONFIRM_TEST_ACC_SEEDS,
              keys.CONFIRM_OBJECTIVE: keys.CONFIRM_OBJECTIVE_SEEDS}  # fmt: skip


# The parts a confirmation keeps per item, by metric key, and the name rescore() returns them under.
ITEM_KEYS = {keys.CONFIRM_TEST_ACC: "test_acc", keys.CONFIRM_GAN_TEST: "gan_test"}


@dataclass(frozen=True)
class Candidate:
    """A finished trial as selection saw it, with the MLflow run that holds it (its identity)."""

    run_id: str
    trial_id: str  # Tune's trial id (tag trial.id)
    key: str  # the point's key (tag trial.key)
    point: str  # display name
    checkpoint: str | None  # artifact path tag trial.checkpoint names (best.pt, else last.pt)
    objective: float  # the selection objective (final eval/objective)
    accuracy: float | None  # the accuracy the objective reads (val/acc, or test/acc with split: test)
    gan_test: float | None  # eval/gan_test, the selection draw


@dataclass(frozen=True)
class Confirmed:
    """A finalist's confirmed numbers (95 % intervals) beside what selected it."""

    finalist: Candidate
    test_acc: Interval
    gan_test: Interval | None  # None without a judge
    objective: Interval | None  # None for a ground-truth objective (not made of these parts)
    samples: int  # n of gan_test
    test_images: int  # n of test_acc
    sample_seed: int
    reused: bool = False  # read back from its run (measured by an earlier attempt of the stage)
    # Per-item outcomes (trainer.items) by confirm metric key, for paired comparisons.
    items: Mapping[str, str] = field(default_factory=dict)
    diverged: bool = False  # a retrain that diverged: its numbers are the worst values
    # With confirm.train_seeds: the numbers above are the mean over ``retrains`` (the new seeds
    # ``train_seeds``, pooled interval), and ``own`` is the finalist's own run's confirmation.
    train_seeds: tuple[int, ...] = ()
    own: Confirmed | None = None
    retrains: tuple[Confirmed, ...] = ()
    pooled_sd: float | None = None  # the pooled run-to-run sd of the objective behind the interval
    pooled_df: int | None = None


@dataclass(frozen=True)
class Confirmation:
    """What the stage found: the finalists, the best point by the stage's rule, and the verdict."""

    finalists: list[Confirmed]  # in finalist order (the selection's best first)
    best: Confirmed | None  # with retrains: the best mean over new seeds; else the selection's best
    verdict: VersusBest[str] | None  # the others against the best, keyed by run id (None: nothing to compare)
    retrained: bool  # the best was decided on new training seeds
    pooled: Mapping[str, Pooled] = field(default_factory=dict)  # by confirm metric key, over the finalists' seeds

    def against_best(self) -> list[tuple[Confirmed, Difference, bool]]:
        """Each other finalist in the verdict: (finalist, best − it, separable)."""
        if self.verdict is None:
            return []
        by_run = {c.finalist.run_id: c for c in self.finalists}
        return [(by_run[r], d, self.verdict.separable[r]) for r, d in self.verdict.differences.items()]

    def not_separable(self) -> list[Confirmed]:
        return [c for c, _, separable in self.against_best() if not separable]


def objective_interval(cfg: ObjectiveConfig, acc: Interval, gan: Interval | None) -> Interval | None:
    """The objective of confirmed parts with its 95 % interval, by :func:`sweep.objective.objective_interval`
    (one definition for the selection and the confirmed objective): the confirmed test accuracy
    stands in for the accuracy the objective reads. None where the objective is not a function of
    accuracy and GAN-test (the ground-truth objectives) or lacks its GAN-test part.
    """
    if cfg.name not in OBJECTIVES or (gan is None and cfg.name != "accuracy"):
        return None
    metrics: dict[str, object] = {}
    for key, part in ((accuracy_key(cfg), acc), (keys.GAN_TEST, gan)):
        if part is not None:
            metrics.update({key: part.value, keys.lo_key(key): part.lo, keys.hi_key(key): part.hi})
    return sweep_objective_interval(cfg, metrics)


def candidates(
    rows: Sequence[Mapping[str, Any]],
    runs: Sequence[Any],
    cfg: ObjectiveConfig,
) -> dict[str, Candidate]:
    """The finished trials with a selection objective, by Tune trial id, each tied to its MLflow
    run through the run's tag ``trial.id`` (never through its display name)."""
    by_trial = {
        run.data.tags.get(Tag.TRIAL_ID): run for run in runs if run.data.tags.get(Tag.ROLE) == Role.TRIAL
    }
    out = {}
    for row in rows:
        run, value = by_trial.get(row["trial_id"]), objective_of(row)
        if row["status"] != Status.FINISHED or value is None or run is None:
            continue
        m = row["metrics"]
        out[row["trial_id"]] = Candidate(
            run_id=run.info.run_id,
            trial_id=row["trial_id"],
            key=run.data.tags.get(Tag.KEY, run.info.run_id),
            point=point_of(row),
            checkpoint=run.data.tags.get(Tag.CHECKPOINT),
            objective=float(value),
            accuracy=m.get(accuracy_key(cfg)),
            gan_test=m.get(keys.GAN_TEST),
        )
    return out


def finalists(pool: Mapping[str, Candidate], best_trial: str | None, top_k: int) -> list[Candidate]:
    """The best point, then the accuracy/GAN-test front, then the next best by selection objective
    (the runners-up a verdict on the best needs), at most ``top_k``, each run once (by run id)."""
    from analysis.pareto import front_mask  # the front's one definition (both coordinates maximized)

    ordered = sorted(pool.values(), key=lambda c: -c.objective)  # stable: ties keep Tune's order
    measured = [c for c in ordered if c.accuracy is not None and c.gan_test is not None]
    mask = front_mask([float(c.accuracy) for c in measured], [float(c.gan_test) for c in measured]) if measured else []
    on_front = [c for c, keep in zip(measured, mask) if keep]
    chosen: list[Candidate] = []
    for c in ([pool[best_trial]] if best_trial in pool else []) + on_front + ordered:
        if c.run_id not in {f.run_id for f in chosen} and len(chosen) < top_k:
            chosen.append(c)
    return chosen


def reused(run: Any, finalist: Candidate, sample_seed: int, samples: int | None = None) -> Confirmed | None:
    """The finalist's confirmation as its run holds it, when it was measured with this seed (and
    this many samples, when ``confirm.samples`` is set: a resume may change it)."""
    tags, m = run.data.tags, run.data.metrics
    if tags.get(Tag.CONFIRM_SAMPLE_SEED) != str(sample_seed) or keys.CONFIRM_TEST_ACC not in m:
        return None
    if samples is not None and keys.CONFIRM_GAN_TEST in m and tags.get(Tag.CONFIRM_SAMPLES) != str(samples):
        return None

    def interval(key: str) -> Interval | None:
        if key not in m:
            return None
        return Interval(m[key], m.get(keys.lo_key(key), m[key]), m.get(keys.hi_key(key), m[key]))

    acc = interval(keys.CONFIRM_TEST_ACC)
    assert acc is not None  # checked above
    codes = {key: tags[items_tag(key)] for key in ITEM_KEYS if items_tag(key) in tags}
    return Confirmed(
        finalist, acc, interval(keys.CONFIRM_GAN_TEST), interval(keys.CONFIRM_OBJECTIVE),
        samples=int(tags.get(Tag.CONFIRM_SAMPLES, 0)), test_images=int(tags.get(Tag.CONFIRM_TEST_IMAGES, 0)),
        sample_seed=sample_seed, reused=True, items=codes,
    )  # fmt: skip


def measured(result: Mapping[str, Any], finalist: Candidate, cfg: ObjectiveConfig, sample_seed: int) -> Confirmed:
    """A :class:`Confirmed` from :func:`rescore`'s counts: Wilson intervals over each n."""
    acc = proportion(result["test_acc"], result["test_images"])
    gan = proportion(result["gan_test"], result["samples"]) if "gan_test" in result else None
    by_name = result.get("items", {})
    codes = {key: by_name[name] for key, name in ITEM_KEYS.items() if name in by_name}
    return Confirmed(
        finalist, acc, gan, objective_interval(cfg, acc, gan), samples=int(result.get("samples", 0)),
        test_images=int(result["test_images"]), sample_seed=sample_seed, items=codes,
    )  # fmt: skip


def metrics_of(c: Confirmed) -> dict[str, float]:
    """The ``confirm/*`` metrics of a confirmation, each with its ``_lo``/``_hi``."""
    out: dict[str, float] = {}
    for key, iv in ((keys.CONFIRM_TEST_ACC, c.test_acc), (keys.CONFIRM_GAN_TEST, c.gan_test),
                    (keys.CONFIRM_OBJECTIVE, c.objective)):  # fmt: skip
        if iv is not None:
            out.update({key: iv.value, keys.lo_key(key): iv.lo, keys.hi_key(key): iv.hi})
    return out


def retrain_name(name: str, point: Point, seed: int) -> str:
    """The finalist's display name with its seed replaced: ``sm λ1e-3 μ1e-4 s0`` -> ``… s1000``."""
    head, sep, tail = name.rpartition(f" s{point.seed}")
    return f"{head} s{seed}{tail}" if sep else f"{name} s{seed}"


def diverged_retrain(finalist: Candidate, cfg: ObjectiveConfig, has_judge: bool) -> Confirmed:
    """A retrain that diverged, counted as the objective counts it: every number at its worst."""
    low = worst_value(cfg)
    zero = Interval(0.0, 0.0, 0.0)
    objective = Interval(low, low, low) if cfg.name in OBJECTIVES else None
    return Confirmed(finalist, zero, zero if has_judge else None, objective, samples=0, test_images=0,
                     sample_seed=-1, diverged=True)  # fmt: skip


_PARTS: dict[str, Callable[[Confirmed], Interval | None]] = {
    keys.CONFIRM_TEST_ACC: lambda c: c.test_acc,
    keys.CONFIRM_GAN_TEST: lambda c: c.gan_test,
    keys.CONFIRM_OBJECTIVE: lambda c: c.objective,
}


def seed_values(c: Confirmed, key: str) -> list[float]:
    """The values of confirm metric ``key`` over a retrained finalist's new seeds (diverged ones at
    their worst value); [] when a seed lacks it."""
    values = [_PARTS[key](r) for r in c.retrains]
    return [] if any(v is None for v in values) else [v.value for v in values if v is not None]


def pooled_over(finalists_: Sequence[Confirmed]) -> dict[str, Pooled]:
    """Per confirm metric, the run-to-run variance pooled over each retrained finalist's confirmed
    seeds that finished: its own run and its retrains (analysis.verdicts pools the same runs)."""
    out = {}
    for key, part in _PARTS.items():
        groups = []
        for c in finalists_:
            runs = [c.own or c, *(r for r in c.retrains if not r.diverged)]
            values = [part(r) for r in runs]
            groups.append([v.value for v in values if v is not None])
        found = pooled(groups)
        if found is not None:
            out[key] = found
    return out


def over_retrains(own: Confirmed, retrains: Sequence[Confirmed], seeds: Sequence[int], pools: Mapping[str, Pooled]) -> Confirmed:
    """``own`` (the finalist's own run's confirmation) with its three numbers replaced by the mean
    over its ``retrains`` (the new seeds ``seeds``, in the same order), each with the pooled 95 %
    interval (Student's t over the retrains' own spread where no pooled variance exists); a part
    is None unless every retrain has it."""
    agg = dataclasses.replace(own, train_seeds=tuple(seeds), own=own, retrains=tuple(retrains))

    def mean(key: str) -> Interval | None:
        values = seed_values(agg, key)
        if not values:
            return None
        iv = pools[key].interval(values) if key in pools else seeds_interval(values)
        return Interval(iv.value, max(iv.lo, 0.0), min(iv.hi, 1.0))  # fractions, and objectives of fractions

    acc = mean(keys.CONFIRM_TEST_ACC)
    assert acc is not None  # every retrain has a test accuracy
    sd = pools.get(keys.CONFIRM_OBJECTIVE)
    return dataclasses.replace(
        agg, test_acc=acc, gan_test=mean(keys.CONFIRM_GAN_TEST), objective=mean(keys.CONFIRM_OBJECTIVE),
        pooled_sd=sd.sd if sd else None, pooled_df=sd.df if sd else None,
    )  # fmt: skip


def decide(confirmed: Sequence[Confirmed], cfg: ObjectiveConfig, retrained: bool) -> Confirmation:
    """The best point and the verdict on the others (module docstring).

    Retrained: among finalists with at least one new seed, the best mean objective over the new
    seeds; A − B of means with the pooled variance; Holm over every pair. Not retrained: the
    selection's best (the first finalist) keeps its place; A − B paired over the shared items
    (unpaired where a run kept none); Holm over the k − 1 comparisons with it.
    """
    confirmed = list(confirmed)
    if not confirmed:
        return Confirmation([], None, None, retrained)
    with_seeds = [c for c in confirmed if c.retrains]
    if retrained and with_seeds:  # no retrain finished anywhere: the verdict without them, below
        pools = pooled_over(with_seeds)
        if with_seeds[0].objective is None:  # a ground-truth objective: not made of these parts
            return Confirmation(confirmed, with_seeds[0], None, True, pools)
        by_run = {c.finalist.run_id: c for c in with_seeds}
        values = {r: c.objective.value for r, c in by_run.items() if c.objective is not None}
        pool = pools.get(keys.CONFIRM_OBJECTIVE)

        def of_means(a: str, b: str) -> Difference:
            va, vb = seed_values(by_run[a], keys.CONFIRM_OBJECTIVE), seed_values(by_run[b], keys.CONFIRM_OBJECTIVE)
            if pool is not None:
                return pool.difference(va, vb)
            return compare.unpaired(seeds_interval(va), seeds_interval(vb))

        verdict = compare.versus_best(values, of_means) if len(values) > 1 else None
        best = by_run[verdict.best] if verdict else with_seeds[0]
        return Confirmation(confirmed, best, verdict, True, pools)
    best = confirmed[0]
    scored = {c.finalist.run_id: c for c in confirmed if c.objective is not None}
    if best.finalist.run_id not in scored or len(scored) < 2:
        return Confirmation(confirmed, best, None, False)
    parts, formula = _objective_parts(cfg)

    def paired(a: str, b: str) -> Difference:
        ca, cb = scored[a], scored[b]
        if all(k in ca.items and k in cb.items for k in parts):
            xa = [item_codes.decode(ca.items[k]) for k in parts]
            xb = [item_codes.decode(cb.items[k]) for k in parts]
            if [len(x) for x in xa] == [len(x) for x in xb]:
                return compare.paired(xa, xb, formula)
        assert ca.objective is not None and cb.objective is not None
        return compare.unpaired(ca.objective, cb.objective)

    values = {r: c.objective.value for r, c in scored.items() if c.objective is not None}
    verdict = compare.versus_best(values, paired, best=best.finalist.run_id, picked_here=False)
    return Confirmation(confirmed, best, verdict, False)


def _objective_parts(cfg: ObjectiveConfig) -> tuple[list[str], Callable[..., float]]:
    """The confirm metrics the objective is made of (in its arguments' order) and its formula."""
    formula = OBJECTIVES[cfg.name]
    if cfg.name == "accuracy":
        return [keys.CONFIRM_TEST_ACC], lambda acc: formula(acc, acc, cfg.weight)
    if cfg.name == "gan_test":
        return [keys.CONFIRM_GAN_TEST], lambda gan: formula(gan, gan, cfg.weight)
    return [keys.CONFIRM_TEST_ACC, keys.CONFIRM_GAN_TEST], lambda acc, gan: formula(acc, gan, cfg.weight)


def seeds_metrics_of(c: Confirmed) -> dict[str, float]:
    """The ``confirm/*_seeds`` metrics of an aggregate over seeds, each with its ``_lo``/``_hi``."""
    return {k.replace(key, SEEDS_KEYS[key], 1): v for key in CONFIRM_KEYS for k, v in metrics_of(c).items()
            if k in (key, keys.lo_key(key), keys.hi_key(key))}  # fmt: skip


def describe(c: Confirmed) -> str:
    """``objective 0.800 [0.760, 0.830], test acc …, GAN-test … (selected by 0.812)``."""
    parts = []
    if c.objective is not None:
        parts.append(f"objective {c.objective}")
    if c.retrains:
        parts.append(f"test acc {c.test_acc}")
        if c.gan_test is not None:
            parts.append(f"GAN-test {c.gan_test}")
        own = f"; its own selected run: objective {c.own.objective}" if c.own and c.own.objective else ""
        return ", ".join(parts) + f" ({seeds_phrase(c)}){own}; selection objective {c.finalist.objective:.3f}"
    parts.append(f"test acc {c.test_acc} (n={c.test_images})")
    if c.gan_test is not None:
        parts.append(f"GAN-test {c.gan_test} (n={c.samples})")
    return ", ".join(parts) + f"; selection objective {c.finalist.objective:.3f}"


def seeds_phrase(c: Confirmed) -> str:
    """``mean of 2 new training seeds (1000, 1001), pooled sd 0.035 on 6 d.f.`` for a retrained finalist."""
    how = (f"pooled sd {c.pooled_sd:.3f} on {c.pooled_df} d.f." if c.pooled_sd is not None
           else "Student's t over its seeds")  # fmt: skip
    return f"mean of {len(c.train_seeds)} new training seed(s) ({', '.join(map(str, c.train_seeds))}), {how}"
