"""The confirmation stage: the finalists re-scored on draws that selection never saw, and the verdict.

Selection (ASHA, Optuna, ``best.pt``, the best point, the front) ranks trials by numbers measured
on one draw, and with many trials the highest of those noisy numbers is biased upwards (the
winner's curse). Two noises make it: the evaluation's (which images, which samples) and the
training seed's (on the digits table about 2.7 times larger, docs/results.md). After the trials
this stage takes the finalists (the best point by the selection objective, then the points on the
accuracy/GAN-test front by the selection numbers, then the next best by the selection objective,
at most ``confirm.top_k``, finished trials only) and, for each, loads the checkpoint its run names (``best.pt``) and measures:

- ``confirm/gan_test``: GAN-test on ``confirm.samples`` new samples drawn with another seed
  (``confirm.sample_seed``; targets the test labels in order, cycled), judged by the sweep's judge;
- ``confirm/test_acc``: test accuracy of that checkpoint;
- ``confirm/objective``: the sweep's objective of those two (the confirmed test accuracy stands in
  for the accuracy the objective reads),

each with its 95 % interval (``_lo``/``_hi``), logged in the finalist's own MLflow run with the tags
``confirm.sample_seed``, ``confirm.samples``, ``confirm.test_images`` and the per-item outcomes
(``items.confirm/test_acc``, ``items.confirm/gan_test``: every finalist is scored on the same test
images and the same samples' targets and starting noise, so two finalists compare paired).

**The verdict** (:class:`Confirmation`). Without retrains the best point stays the one selection
chose; its confirmed numbers are fresh draws of the same checkpoint, so they remove the
evaluation's part of the winner's curse only, and the others are compared with it paired over the
shared items, Holm-corrected over the k − 1 comparisons (:func:`trainer.compare.versus_best`).

With ``confirm.train_seeds: N`` each finalist is also trained again from scratch with N new seeds
(:meth:`sweep.config.SweepConfig.confirm_train_seeds`): each retrain is one more trial of the same
point (its own :attr:`sweep.points.Point.key`, its own MLflow child run), run to the end as a Ray
task with a trial's resources, and confirmed like the finalist. A finalist is then reported by the
mean over its *new* seeds only (a diverged retrain counts as the objective's worst value); its own
selected run is shown beside it and never averaged in. The interval uses the run-to-run variance
pooled over every finalist's confirmed seeds (:mod:`trainer.pooled`; the selected runs are in the
variance, where their selection can only widen it). The best point is the finalist with the best
mean, and since it is picked from the numbers it is compared on, Holm corrects over every pair.
These means are logged in the finalist's run as ``confirm/*_seeds``.

A finalist whose run already holds its ``confirm/*`` numbers from the same sample seed is not
measured again, and a retrain whose run ended is not trained again, so a sweep killed during the
stage resumes it where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep import ctrlc, seams, tracking
from sweep.config import ObjectiveConfig, SweepConfig
from sweep.judge_stage import fetch_judge
from sweep.objective import OBJECTIVES, accuracy_key, worst_value
from sweep.objective import objective_interval as sweep_objective_interval
from sweep.points import Point
from sweep.record import RETRAIN_TRIAL_PREFIX, Role, Status, Tag, items_tag
from sweep.trial import POINT_KEY, SweepContext, run_trial
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
    objective_of: Callable[[Mapping[str, Any]], float | None],
    point_of: Callable[[Mapping[str, Any]], str],
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


def rescore(
    uri: str,
    run_id: str,
    checkpoint: str,
    judge_run: str | None,
    samples: int,
    sample_seed: int,
    device: str,
    threads: int = 1,
) -> str:
    """Measure one finalist's checkpoint on fresh draws; returns JSON counts and per-item outcomes
    (a Ray task's result).

    ``samples`` samples are generated whatever the test set's size: their targets are the test
    labels in order, cycled, and their generation follows the trial's own eval config (steps, step
    size, prior, start), as the trial's evaluation did: only the seed and the number differ.
    ``threads``: torch threads, as a trial gets (``trial_threads``): on a shared CPU, more threads
    than cores one's own are many times slower, not faster.
    """
    import os

    import torch

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per finalist is enough
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _rescore(uri, run_id, checkpoint, judge_run, samples, sample_seed, device)
    finally:
        torch.set_num_threads(previous)  # the driver's own setting, when it ran here


def _rescore(
    uri: str, run_id: str, checkpoint: str, judge_run: str | None, samples: int, sample_seed: int, device: str
) -> str:
    import torch

    from trainer.checkpoint import judge_from_info, read_judge
    from trainer.evaluate import model_from_checkpoint
    from trainer.evaluation import gan_test_items, generate_samples
    from trainer.train import outcomes

    with tempfile.TemporaryDirectory(prefix="sweep-confirm-") as tmp:
        path = tracking.download(tracking.client(uri), run_id, checkpoint, Path(tmp))
        model, tcfg, data = model_from_checkpoint(path, device=device)
    test_x, test_y = data.test_x, data.test_y
    correct, _ = outcomes(model, test_x, test_y)
    out: dict[str, Any] = {"test_acc": correct.sum().item() / max(len(test_y), 1), "test_images": len(test_y),
                           "items": {"test_acc": item_codes.encode(correct.cpu().numpy())}}  # fmt: skip
    if judge_run is not None:
        targets = test_y[torch.arange(samples, device=test_y.device) % len(test_y)]
        drawn = generate_samples(
            model, targets, shape=tuple(test_x.shape[1:]), steps=tcfg.eval.steps, lr=tcfg.eval.step_size,
            prior=tcfg.eval.prior, init_mean=tcfg.eval.init_mean, init_std=tcfg.eval.init_std, seed=sample_seed,
        )  # fmt: skip
        judge = judge_from_info(read_judge(fetch_judge(uri, judge_run)), next(model.parameters()).device)
        accepted = gan_test_items(drawn, targets, judge)
        out.update(gan_test=accepted.sum().item() / samples, samples=samples)
        out["items"]["gan_test"] = item_codes.encode(accepted.cpu().numpy())
    return json.dumps(out)


def _reused(run: Any, finalist: Candidate, sample_seed: int, samples: int | None = None) -> Confirmed | None:
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


def run_stage(
    cfg: SweepConfig,
    uri: str,
    experiment_id: str,
    parent_id: str,
    rows: Sequence[Mapping[str, Any]],
    best_trial: str | None,
    objective_of: Callable[[Mapping[str, Any]], float | None],
    point_of: Callable[[Mapping[str, Any]], str],
    judge_run: str | None,
    remote: Callable[[Callable[[], str]], str] | None = None,
    ctx: SweepContext | None = None,
    run_many: Callable[[list[Callable[[], str]]], list[str | Exception]] | None = None,
) -> Confirmation:
    """Confirm the finalists among Tune's result ``rows`` (see :func:`candidates` and
    :func:`finalists`; ``best_trial``: the best point's Tune trial id) and decide the best point
    (:func:`decide`).

    ``remote`` runs ``fn() -> str`` as a Ray task with a trial's resources (a GPU sweep); without
    it the measurements run here, on the driver. With ``confirm.train_seeds``: ``ctx`` is the
    trials' context (the retrains run with it, their points added) and ``run_many`` runs several
    ``fn() -> str`` as Ray tasks in parallel (:func:`sweep.engine.session.run_tasks`).
    """
    seed, mc = cfg.confirm_sample_seed, tracking.client(uri)
    found = tracking.child_runs(mc, experiment_id, parent_id)
    runs = {run.info.run_id: run for run in found}
    chosen = finalists(candidates(rows, found, cfg.objective, objective_of, point_of), best_trial, cfg.confirm.top_k)
    if not chosen:
        print("confirm: no finished trial to confirm", flush=True)
        return Confirmation([], None, None, retrained=False)
    print(
        f"confirm: re-scoring {len(chosen)} finalist(s) (the best point and the accuracy/GAN-test front) on fresh "
        f"draws: {cfg.confirm.samples} new samples with seed {seed}, and the test set ...",
        flush=True,
    )
    out = []
    for finalist in chosen:
        ctrlc.check()
        done = _confirm_one(cfg, uri, runs.get(finalist.run_id), finalist, judge_run, remote)
        if done is not None:
            out.append(done)
    retrained = bool(cfg.confirm.train_seeds and out)
    if retrained:
        if ctx is None or run_many is None:
            raise ValueError("confirm.train_seeds needs the sweep's context and a way to run tasks")
        out = _with_retrains(cfg, uri, experiment_id, parent_id, rows, out, ctx, judge_run, remote, run_many)
    result = decide(out, cfg.objective, retrained)
    if retrained:
        _log_means(mc, result)
    return result


def _confirm_one(
    cfg: SweepConfig,
    uri: str,
    run: Any | None,
    finalist: Candidate,
    judge_run: str | None,
    remote: Callable[[Callable[[], str]], str] | None,
) -> Confirmed | None:
    """One run's confirmation: read back from ``run`` when measured with this sample seed, else
    measured and logged in it. None when the run names no checkpoint."""
    seed, mc = cfg.confirm_sample_seed, tracking.client(uri)
    device = "cpu" if cfg.resources.gpus == 0 else cfg.trainer.device
    done = _reused(run, finalist, seed, cfg.confirm.samples) if run is not None else None
    if done is None:
        if finalist.checkpoint is None:
            print(f"confirm: {finalist.point}: its run names no checkpoint; not confirmed", flush=True)
            return None
        work = functools.partial(
            rescore, uri, finalist.run_id, finalist.checkpoint, judge_run, cfg.confirm.samples, seed, device,
            cfg.trial_threads,
        )  # fmt: skip
        done = measured(json.loads(remote(work) if remote else work()), finalist, cfg.objective, seed)
        tracking.log_confirmation(
            mc, finalist.run_id, metrics_of(done),
            {Tag.CONFIRM_SAMPLE_SEED: seed, Tag.CONFIRM_SAMPLES: done.samples,
             Tag.CONFIRM_TEST_IMAGES: done.test_images, **{items_tag(k): v for k, v in done.items.items()}},
        )  # fmt: skip
        seams.kill_point("confirm")
    earlier = " (confirmed earlier)" if done.reused else ""
    print(f"confirm: {finalist.point}: {describe(done)}{earlier}", flush=True)
    return done


def retrain_name(name: str, point: Point, seed: int) -> str:
    """The finalist's display name with its seed replaced: ``sm λ1e-3 μ1e-4 s0`` -> ``… s1000``."""
    head, sep, tail = name.rpartition(f" s{point.seed}")
    return f"{head} s{seed}{tail}" if sep else f"{name} s{seed}"


def retrain(ctx: SweepContext, key: str) -> str:
    """Train the point ``ctx.points[key]`` to the end in its own child run (a Ray task, or here);
    returns its final status as JSON. No scheduler watches it: the report keeps the last metrics."""
    last: dict[str, Any] = {}
    final = run_trial(ctx, {POINT_KEY: key}, RETRAIN_TRIAL_PREFIX + key, None, lambda m, _ckpt: last.update(m))
    return json.dumps({"status": str(final.get(keys.STATUS, last.get(keys.STATUS, "")))})


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


def _log_means(mc: Any, result: Confirmation) -> None:
    """Log each retrained finalist's means over its new seeds in its run, once: a resumed stage
    that finds the same numbers logs no second point."""
    for c in result.finalists:
        if not c.retrains:
            continue
        metrics = seeds_metrics_of(c)
        logged = mc.get_run(c.finalist.run_id).data.metrics
        if any(logged.get(k) != v for k, v in metrics.items()):
            tracking.log_confirmation(mc, c.finalist.run_id, metrics,
                                      {Tag.CONFIRM_TRAIN_SEEDS: ",".join(map(str, c.train_seeds))})  # fmt: skip


def _ended(run: Any | None) -> bool:
    return run is not None and run.data.tags.get(Tag.STATUS) in (Status.FINISHED, Status.DIVERGED)


def _with_retrains(
    cfg: SweepConfig,
    uri: str,
    experiment_id: str,
    parent_id: str,
    rows: Sequence[Mapping[str, Any]],
    confirmed: list[Confirmed],
    ctx: SweepContext,
    judge_run: str | None,
    remote: Callable[[Callable[[], str]], str] | None,
    run_many: Callable[[list[Callable[[], str]]], list[str | Exception]],
) -> list[Confirmed]:
    """Retrain each confirmed finalist with the new training seeds, confirm each retrain, and
    return the finalists with their numbers as the mean over their new seeds."""
    mc, seeds = tracking.client(uri), cfg.confirm_train_seeds()
    configs = {row["trial_id"]: row.get("config") for row in rows}
    planned: dict[str, list[Point]] = {}  # finalist run id -> its retrain points
    points: dict[str, Point] = {}
    names: dict[str, str] = {}
    for c in confirmed:
        config = configs.get(c.finalist.trial_id)
        if config is None:
            print(f"confirm: {c.finalist.point}: Tune kept no config for its trial; not retrained", flush=True)
            continue
        own = ctx.point_of(config)
        for seed in seeds:
            p = Point(own.overrides, seed)  # the same point, another seed: its own key and run
            points[p.key], names[p.key] = p, retrain_name(c.finalist.point, own, seed)
            planned.setdefault(c.finalist.run_id, []).append(p)
    by_key = {run.data.tags.get(Tag.KEY): run for run in tracking.child_runs(mc, experiment_id, parent_id)}
    todo = [k for k in points if not _ended(by_key.get(k))]
    earlier = len(points) - len(todo)
    print(
        f"confirm: retraining {len(planned)} finalist(s) with {len(seeds)} new training seed(s) "
        f"({', '.join(map(str, seeds))}): {len(todo)} trial(s) to train"
        + (f", {earlier} trained before" if earlier else "") + " ...",
        flush=True,
    )
    ctrlc.check()
    results = run_many([functools.partial(retrain, dataclasses.replace(ctx, points=points, names=names), key)
                        for key in todo]) if todo else []  # fmt: skip
    for key, result in zip(todo, results):
        if isinstance(result, Exception):
            reason = str(result).strip().splitlines()[-1] if str(result).strip() else type(result).__name__
            print(f"confirm: {names[key]}: retraining failed ({reason})", flush=True)
    ctrlc.check()
    by_key = {run.data.tags.get(Tag.KEY): run for run in tracking.child_runs(mc, experiment_id, parent_id)}
    collected: list[tuple[Confirmed, list[Confirmed], list[int]]] = []
    for c in confirmed:
        retrained, used = [], []
        for p in planned.get(c.finalist.run_id, []):
            run = by_key.get(p.key)
            status = run.data.tags.get(Tag.STATUS) if run is not None else "not run"
            tags = run.data.tags if run is not None else {}
            m = run.data.metrics if run is not None else {}
            retrained_candidate = Candidate(
                run_id=run.info.run_id if run is not None else "", trial_id=tags.get(Tag.TRIAL_ID, ""), key=p.key,
                point=names[p.key], checkpoint=tags.get(Tag.CHECKPOINT),
                objective=float(m.get(keys.OBJECTIVE, float("nan"))), accuracy=m.get(accuracy_key(cfg.objective)),
                gan_test=m.get(keys.GAN_TEST),
            )  # fmt: skip
            if status == Status.DIVERGED:
                print(f"confirm: {names[p.key]}: diverged; counts at the objective's worst value", flush=True)
                retrained.append(diverged_retrain(retrained_candidate, cfg.objective, judge_run is not None))
                used.append(p.seed)
                continue
            if run is None or status != Status.FINISHED:
                print(f"confirm: {names[p.key]}: {status}; left out of the mean over seeds", flush=True)
                continue
            ctrlc.check()
            done = _confirm_one(cfg, uri, run, retrained_candidate, judge_run, remote)
            if done is not None:
                retrained.append(done)
                used.append(p.seed)
        collected.append((c, retrained, used))
    pools = pooled_over([dataclasses.replace(c, own=c, retrains=tuple(r)) for c, r, _ in collected if r])
    out = []
    for c, retrained, used in collected:
        if not retrained:
            out.append(c)
            continue
        agg = over_retrains(c, retrained, used, pools)
        print(f"confirm: {c.finalist.point}: {describe(agg)}", flush=True)
        out.append(agg)
    return out


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
