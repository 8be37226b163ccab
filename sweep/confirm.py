"""The confirmation stage: the finalists re-scored on draws that selection never saw.

Selection (ASHA, Optuna, ``best.pt``, the best point, the front) ranks trials by numbers measured
on one draw: one set of generated samples per trial. With many trials, the highest of those noisy
numbers is biased upwards (the winner's curse), so the number that chose a point is not an honest
measurement of it. After the trials and before the analysis this stage takes the finalists (the
best point by the selection objective, then the points on the accuracy/GAN-test front by the
selection numbers, at most ``confirm.top_k``, finished trials only) and, for each, loads the
checkpoint its run names (``best.pt``) and measures:

- ``confirm/gan_test``: GAN-test on ``confirm.samples`` new samples drawn with another seed
  (``confirm.sample_seed``), judged by the sweep's judge;
- ``confirm/test_acc``: test accuracy of that checkpoint;
- ``confirm/objective``: the sweep's objective of those two (the accuracy the objective reads is
  the confirmed test accuracy here, not the validation accuracy that selected),

each with its 95 % interval (``_lo``/``_hi``: Wilson over its n; the objective's propagated from
its parts), logged in the finalist's own MLflow run with the tags ``confirm.sample_seed``,
``confirm.samples`` and ``confirm.test_images``. The point that selection chose stays the best
point; the confirmed numbers are what the sweep reports about it, and the finalists whose
confirmed objective intervals overlap the best's are named as not separable from it.

With ``confirm.train_seeds: N`` each finalist is also trained again from scratch with N new
training seeds (:meth:`sweep.config.SweepConfig.confirm_train_seeds`): each retrain is one more
trial of the same point with another seed (its own :attr:`sweep.points.Point.key`, its own MLflow
child run under the parent), run to the end as a Ray task with a trial's resources, and confirmed
exactly like the finalist. The finalist is then reported by the mean over its training seeds (its
own and the retrains') with Student's t interval (``trainer.stats.seeds_interval``), logged in
its run as ``confirm/*_seeds``.

A finalist whose run already holds its ``confirm/*`` numbers from the same sample seed is not
measured again, and a retrain whose run ended is not trained again, so a sweep killed during the
stage resumes it where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from sweep import ctrlc, seams, tracking
from sweep.config import CONFIRM_SAMPLES, ObjectiveConfig, SweepConfig
from sweep.judge_stage import fetch_judge
from sweep.objective import OBJECTIVES, accuracy_key
from sweep.objective import objective_interval as sweep_objective_interval
from sweep.points import Point
from sweep.record import Role, Status, Tag
from sweep.trial import POINT_KEY, SweepContext, run_trial
from trainer import keys
from trainer.stats import Interval, not_separable_from, proportion, seeds_interval

# The metrics this stage logs in a finalist's run, each with its _lo/_hi.
CONFIRM_KEYS = (keys.CONFIRM_GAN_TEST, keys.CONFIRM_TEST_ACC, keys.CONFIRM_OBJECTIVE)
# With confirm.train_seeds: the same over the finalist's training seeds (mean, t interval).
SEEDS_KEYS = {keys.CONFIRM_GAN_TEST: keys.CONFIRM_GAN_TEST_SEEDS, keys.CONFIRM_TEST_ACC: keys.CONFIRM_TEST_ACC_SEEDS,
              keys.CONFIRM_OBJECTIVE: keys.CONFIRM_OBJECTIVE_SEEDS}  # fmt: skip
# Tag trial.id of a retrain (it is no Tune trial): settling Tune's statuses leaves its run alone.
RETRAIN_TRIAL_PREFIX = "confirm-"


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
    # The training seeds the three intervals are over: () for the finalist's own run alone (Wilson
    # and propagated intervals); with confirm.train_seeds, its own seed and the retrains' that
    # finished (the mean over them, Student's t interval), and ``own`` its own run's confirmation.
    train_seeds: tuple[int, ...] = ()
    own: Confirmed | None = None


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
    """The best point, then the accuracy/GAN-test front by selection objective, at most ``top_k``,
    each run once (by run id)."""
    from analysis.pareto import front_mask  # the front's one definition (both coordinates maximized)

    ordered = sorted(pool.values(), key=lambda c: -c.objective)  # stable: ties keep Tune's order
    measured = [c for c in ordered if c.accuracy is not None and c.gan_test is not None]
    mask = front_mask([float(c.accuracy) for c in measured], [float(c.gan_test) for c in measured]) if measured else []
    on_front = [c for c, keep in zip(measured, mask) if keep]
    chosen: list[Candidate] = []
    for c in ([pool[best_trial]] if best_trial in pool else []) + on_front:
        if c.run_id not in {f.run_id for f in chosen} and len(chosen) < top_k:
            chosen.append(c)
    return chosen


def rescore(
    uri: str,
    run_id: str,
    checkpoint: str,
    judge_run: str | None,
    samples: int | None,
    sample_seed: int,
    device: str,
    threads: int = 1,
) -> str:
    """Measure one finalist's checkpoint on fresh draws; returns JSON counts (a Ray task's result).

    ``samples``: None means CONFIRM_SAMPLES or the test set's size where smaller. The samples'
    targets are the test labels in order, cycled, and their generation follows the trial's own
    eval config (steps, step size, prior, start), as the trial's evaluation did: only the seed and
    the number differ. ``threads``: torch threads, as a trial gets (``trial_threads``): on a
    shared CPU, more threads than cores one's own are many times slower, not faster.
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
    uri: str, run_id: str, checkpoint: str, judge_run: str | None, samples: int | None, sample_seed: int, device: str
) -> str:
    import torch

    from trainer.checkpoint import judge_from_info, read_judge
    from trainer.evaluate import model_from_checkpoint
    from trainer.evaluation import gan_test, generate_samples
    from trainer.train import measure

    with tempfile.TemporaryDirectory(prefix="sweep-confirm-") as tmp:
        path = tracking.download(tracking.client(uri), run_id, checkpoint, Path(tmp))
        model, tcfg, data = model_from_checkpoint(path, device=device)
    test_x, test_y = data.test_x, data.test_y
    acc, _ = measure(model, test_x, test_y)
    out: dict[str, Any] = {"test_acc": acc, "test_images": len(test_y)}
    if judge_run is not None:
        n = samples if samples is not None else min(CONFIRM_SAMPLES, len(test_y))
        targets = test_y[torch.arange(n, device=test_y.device) % len(test_y)]
        drawn = generate_samples(
            model, targets, shape=tuple(test_x.shape[1:]), steps=tcfg.eval.steps, lr=tcfg.eval.step_size,
            prior=tcfg.eval.prior, init_mean=tcfg.eval.init_mean, init_std=tcfg.eval.init_std, seed=sample_seed,
        )  # fmt: skip
        judge = judge_from_info(read_judge(fetch_judge(uri, judge_run)), next(model.parameters()).device)
        out.update(gan_test=gan_test(drawn, targets, judge), samples=n)
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
    return Confirmed(
        finalist, acc, interval(keys.CONFIRM_GAN_TEST), interval(keys.CONFIRM_OBJECTIVE),
        samples=int(tags.get(Tag.CONFIRM_SAMPLES, 0)), test_images=int(tags.get(Tag.CONFIRM_TEST_IMAGES, 0)),
        sample_seed=sample_seed, reused=True,
    )  # fmt: skip


def measured(result: Mapping[str, Any], finalist: Candidate, cfg: ObjectiveConfig, sample_seed: int) -> Confirmed:
    """A :class:`Confirmed` from :func:`rescore`'s counts: Wilson intervals over each n."""
    acc = proportion(result["test_acc"], result["test_images"])
    gan = proportion(result["gan_test"], result["samples"]) if "gan_test" in result else None
    return Confirmed(
        finalist, acc, gan, objective_interval(cfg, acc, gan), samples=int(result.get("samples", 0)),
        test_images=int(result["test_images"]), sample_seed=sample_seed,
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
) -> list[Confirmed]:
    """Confirm the finalists among Tune's result ``rows`` (see :func:`candidates` and
    :func:`finalists`; ``best_trial``: the best point's Tune trial id); returns them in finalist
    order, with ``confirm.train_seeds`` as the mean over their training seeds.

    ``remote`` runs ``fn() -> str`` as a Ray task with a trial's resources (a GPU sweep); without
    it the measurements run here, on the driver. With ``confirm.train_seeds``: ``ctx`` is the
    trials' context (the retrains run with it, their points added) and ``run_many`` runs several
    ``fn() -> str`` as Ray tasks in parallel (:func:`sweep.tune.run_tasks`).
    """
    seed, mc = cfg.confirm_sample_seed, tracking.client(uri)
    found = tracking.child_runs(mc, experiment_id, parent_id)
    runs = {run.info.run_id: run for run in found}
    chosen = finalists(candidates(rows, found, cfg.objective, objective_of, point_of), best_trial, cfg.confirm.top_k)
    if not chosen:
        print("confirm: no finished trial to confirm", flush=True)
        return []
    samples = cfg.confirm.samples
    print(
        f"confirm: re-scoring {len(chosen)} finalist(s) (the best point and the accuracy/GAN-test front) on fresh "
        f"draws: {samples or f'up to {CONFIRM_SAMPLES}'} new samples with seed {seed}, and the test set ...",
        flush=True,
    )
    out = []
    for finalist in chosen:
        ctrlc.check()
        done = _confirm_one(cfg, uri, runs.get(finalist.run_id), finalist, judge_run, remote)
        if done is not None:
            out.append(done)
    if cfg.confirm.train_seeds and out:
        if ctx is None or run_many is None:
            raise ValueError("confirm.train_seeds needs the sweep's context and a way to run tasks")
        out = _with_retrains(cfg, uri, experiment_id, parent_id, rows, out, ctx, judge_run, remote, run_many)
    return out


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
             Tag.CONFIRM_TEST_IMAGES: done.test_images},
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


def over_seeds(confirmations: Sequence[Confirmed], seeds: Sequence[int]) -> Confirmed:
    """The first (the finalist's own) confirmation with its three numbers replaced by the mean over
    ``confirmations`` (one per training seed, ``seeds`` in the same order) and Student's t 95 %
    interval (``trainer.stats.seeds_interval``); a part is None unless every seed has it."""

    def mean(part: Callable[[Confirmed], Interval | None]) -> Interval | None:
        values = [part(c) for c in confirmations]
        return None if any(v is None for v in values) else seeds_interval([v.value for v in values if v is not None])

    own = confirmations[0]
    acc = mean(lambda c: c.test_acc)
    assert acc is not None  # every confirmation has a test accuracy
    return dataclasses.replace(
        own, test_acc=acc, gan_test=mean(lambda c: c.gan_test), objective=mean(lambda c: c.objective),
        train_seeds=tuple(seeds), own=own,
    )  # fmt: skip


def seeds_metrics_of(c: Confirmed) -> dict[str, float]:
    """The ``confirm/*_seeds`` metrics of an aggregate over seeds, each with its ``_lo``/``_hi``."""
    return {k.replace(key, SEEDS_KEYS[key], 1): v for key in CONFIRM_KEYS for k, v in metrics_of(c).items()
            if k in (key, keys.lo_key(key), keys.hi_key(key))}  # fmt: skip


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
    return the finalists with their numbers as the mean over their seeds."""
    mc, seeds = tracking.client(uri), cfg.confirm_train_seeds()
    configs = {row["trial_id"]: row.get("config") for row in rows}
    planned: dict[str, list[Point]] = {}  # finalist run id -> its retrain points
    points: dict[str, Point] = {}
    names: dict[str, str] = {}
    own_seed: dict[str, int] = {}
    for c in confirmed:
        config = configs.get(c.finalist.trial_id)
        if config is None:
            print(f"confirm: {c.finalist.point}: Tune kept no config for its trial; not retrained", flush=True)
            continue
        own = ctx.point_of(config)
        own_seed[c.finalist.run_id] = own.seed
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
    out = []
    for c in confirmed:
        confirmations, used = [c], [own_seed.get(c.finalist.run_id)]
        for p in planned.get(c.finalist.run_id, []):
            run = by_key.get(p.key)
            status = run.data.tags.get(Tag.STATUS) if run is not None else "not run"
            if run is None or status != Status.FINISHED:
                print(f"confirm: {names[p.key]}: {status}; left out of the mean over seeds", flush=True)
                continue
            m, tags = run.data.metrics, run.data.tags
            retrained = Candidate(
                run_id=run.info.run_id, trial_id=tags.get(Tag.TRIAL_ID, ""), key=p.key, point=names[p.key],
                checkpoint=tags.get(Tag.CHECKPOINT), objective=float(m.get(keys.OBJECTIVE, float("nan"))),
                accuracy=m.get(accuracy_key(cfg.objective)), gan_test=m.get(keys.GAN_TEST),
            )  # fmt: skip
            ctrlc.check()
            done = _confirm_one(cfg, uri, run, retrained, judge_run, remote)
            if done is not None:
                confirmations.append(done)
                used.append(p.seed)
        if len(confirmations) < 2:
            out.append(c)
            continue
        agg = over_seeds(confirmations, [s for s in used if s is not None])
        logged = mc.get_run(c.finalist.run_id).data.metrics
        metrics = seeds_metrics_of(agg)
        if any(logged.get(k) != v for k, v in metrics.items()):  # once: a resumed stage logs no second point
            seeds_tag = {Tag.CONFIRM_TRAIN_SEEDS: ",".join(map(str, agg.train_seeds))}
            tracking.log_confirmation(mc, c.finalist.run_id, metrics, seeds_tag)
        print(f"confirm: {c.finalist.point}: {describe(agg)}", flush=True)
        out.append(agg)
    return out


def describe(c: Confirmed) -> str:
    """``objective 0.800 [0.760, 0.830], test acc …, GAN-test … (selected by 0.812)``."""
    parts = []
    if c.objective is not None:
        parts.append(f"objective {c.objective}")
    if c.train_seeds:
        parts.append(f"test acc {c.test_acc}")
        if c.gan_test is not None:
            parts.append(f"GAN-test {c.gan_test}")
        return ", ".join(parts) + f" ({seeds_phrase(c)}); selection objective {c.finalist.objective:.3f}"
    parts.append(f"test acc {c.test_acc} (n={c.test_images})")
    if c.gan_test is not None:
        parts.append(f"GAN-test {c.gan_test} (n={c.samples})")
    return ", ".join(parts) + f"; selection objective {c.finalist.objective:.3f}"


def seeds_phrase(c: Confirmed) -> str:
    """``mean of 2 training seeds (0, 1000), t interval`` for an aggregate over seeds."""
    return f"mean of {len(c.train_seeds)} training seeds ({', '.join(map(str, c.train_seeds))}), t interval"


def not_separable(best: Confirmed, others: Sequence[Confirmed]) -> list[str] | None:
    """Display names of the other finalists whose confirmed objective interval overlaps the best's;
    None when the best has no confirmed objective."""
    if best.objective is None:
        return None
    # keyed by run id: display names may repeat
    pool = {c.finalist.run_id: c for c in others if c is not best and c.objective is not None}
    overlapping = not_separable_from(best.objective, {r: c.objective for r, c in pool.items()})
    return [pool[r].finalist.point for r in overlapping]
