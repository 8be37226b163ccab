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

The finalists, their numbers and the verdict on them are :mod:`sweep.finalists`.

With ``confirm.train_seeds: N`` each finalist is also trained again from scratch with N new seeds
(:meth:`sweep.config.SweepConfig.confirm_train_seeds`): each retrain is one more trial of the same
point (its own :attr:`sweep.points.Point.key`, its own MLflow child run), run to the end as a Ray
task with a trial's resources, and confirmed like the finalist. The verdict then rests on the mean over
the new seeds (:func:`sweep.finalists.decide`). These means are logged in the finalist's run as ``confirm/*_seeds``.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep import kill_points, stopping, tracking
from sweep.config import SweepConfig
from sweep.finalists import (
    Candidate,
    Confirmation,
    Confirmed,
    candidates,
    decide,
    describe,
    diverged_retrain,
    finalists,
    measured,
    metrics_of,
    over_retrains,
    pooled_over,
    retrain_name,
    reused,
    seeds_metrics_of,
)
from sweep.judge_stage import fetch_judge
from sweep.objective import accuracy_key
from sweep.points import Point
from sweep.record import RETRAIN_TRIAL_PREFIX, Status, Tag, items_tag
from sweep.rows import best_row
from sweep.trial import POINT_KEY, SweepContext, run_trial
from trainer import items as item_codes
from trainer import keys

Task = Callable[[], str]  # one measurement or retrain; returns JSON


@dataclass(frozen=True)
class ConfirmInput:
    """The sweep the stage confirms: its config, its MLflow runs, its judge, and what its trials
    were given (``ctx``; the retrains of ``confirm.train_seeds`` run with it, their points added)."""

    cfg: SweepConfig
    uri: str
    experiment_id: str
    parent_id: str
    judge_run: str | None
    ctx: SweepContext | None = None


@dataclass(frozen=True)
class Where:
    """Where the stage's work runs: ``one`` runs a measurement (None: here, on the driver), ``many``
    runs the retrains in parallel. :meth:`on_ray` is the sweep's: a GPU sweep's measurements as Ray
    tasks with a trial's resources (the head is often CPU-only), the retrains always as tasks."""

    one: Callable[[Task], str] | None = None
    many: Callable[[list[Task]], list[str | Exception]] | None = None

    @classmethod
    def on_ray(cls, cfg: SweepConfig) -> Where:
        from sweep.engine import session

        one = (lambda fn: session.run_task(fn, cfg)) if cfg.resources.gpus > 0 else None
        return cls(one, lambda fns: session.run_tasks(fns, cfg))


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


def run_stage(sweep: ConfirmInput, rows: Sequence[Mapping[str, Any]], where: Where | None = None) -> Confirmation:
    """Confirm the finalists among Tune's result ``rows`` (:func:`sweep.finalists.finalists`, the
    selection's best first) and decide the best point (:func:`sweep.finalists.decide`); the work
    runs ``where`` says (default :meth:`Where.on_ray`)."""
    cfg, where = sweep.cfg, where or Where.on_ray(sweep.cfg)
    mc = tracking.client(sweep.uri)
    found = tracking.child_runs(mc, sweep.experiment_id, sweep.parent_id)
    runs = {run.info.run_id: run for run in found}
    best = best_row(rows)
    chosen = finalists(candidates(rows, found, cfg.objective), best and best["trial_id"], cfg.confirm.top_k)
    if not chosen:
        print("confirm: no finished trial to confirm", flush=True)
        return Confirmation([], None, None, retrained=False)
    print(
        f"confirm: re-scoring {len(chosen)} finalist(s) (the best point and the accuracy/GAN-test front) on fresh "
        f"draws: {cfg.confirm.samples} new samples with seed {cfg.confirm_sample_seed}, and the test set ...",
        flush=True,
    )
    out = []
    for finalist in chosen:
        stopping.check()
        done = _confirm_one(sweep, runs.get(finalist.run_id), finalist, where)
        if done is not None:
            out.append(done)
    retrained = bool(cfg.confirm.train_seeds and out)
    if retrained:
        if sweep.ctx is None or where.many is None:
            raise ValueError("confirm.train_seeds needs the sweep's context and a way to run tasks")
        out = _with_retrains(sweep, rows, out, where)
    result = decide(out, cfg.objective, retrained)
    if retrained:
        _log_means(mc, result)
    return result


def _confirm_one(sweep: ConfirmInput, run: Any | None, finalist: Candidate, where: Where) -> Confirmed | None:
    """One run's confirmation: read back from ``run`` when measured with this sample seed, else
    measured and logged in it. None when the run names no checkpoint."""
    cfg, uri, judge_run = sweep.cfg, sweep.uri, sweep.judge_run
    seed, mc = cfg.confirm_sample_seed, tracking.client(uri)
    device = "cpu" if cfg.resources.gpus == 0 else cfg.trainer.device
    done = reused(run, finalist, seed, cfg.confirm.samples) if run is not None else None
    if done is None:
        if finalist.checkpoint is None:
            print(f"confirm: {finalist.point}: its run names no checkpoint; not confirmed", flush=True)
            return None
        work = functools.partial(
            rescore, uri, finalist.run_id, finalist.checkpoint, judge_run, cfg.confirm.samples, seed, device,
            cfg.trial_threads,
        )  # fmt: skip
        done = measured(json.loads(where.one(work) if where.one else work()), finalist, cfg.objective, seed)
        tracking.log_confirmation(
            mc, finalist.run_id, metrics_of(done),
            {Tag.CONFIRM_SAMPLE_SEED: seed, Tag.CONFIRM_SAMPLES: done.samples,
             Tag.CONFIRM_TEST_IMAGES: done.test_images, **{items_tag(k): v for k, v in done.items.items()}},
        )  # fmt: skip
        kill_points.kill_point("confirm")
    earlier = " (confirmed earlier)" if done.reused else ""
    print(f"confirm: {finalist.point}: {describe(done)}{earlier}", flush=True)
    return done


def retrain(ctx: SweepContext, key: str) -> str:
    """Train the point ``ctx.points[key]`` to the end in its own child run (a Ray task, or here);
    returns its final status as JSON. No scheduler watches it: the report keeps the last metrics."""
    last: dict[str, Any] = {}
    final = run_trial(ctx, {POINT_KEY: key}, RETRAIN_TRIAL_PREFIX + key, None, lambda m, _ckpt: last.update(m))
    return json.dumps({"status": str(final.get(keys.STATUS, last.get(keys.STATUS, "")))})


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
    sweep: ConfirmInput, rows: Sequence[Mapping[str, Any]], confirmed: list[Confirmed], where: Where
) -> list[Confirmed]:
    """Retrain each confirmed finalist with the new training seeds, confirm each retrain, and
    return the finalists with their numbers as the mean over their new seeds."""
    cfg, uri, experiment_id, parent_id, judge_run = sweep.cfg, sweep.uri, sweep.experiment_id, sweep.parent_id, sweep.judge_run
    ctx, run_many = sweep.ctx, where.many
    assert ctx is not None and run_many is not None  # run_stage checked
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
    stopping.check()
    results = run_many([functools.partial(retrain, dataclasses.replace(ctx, points=points, names=names), key)
                        for key in todo]) if todo else []  # fmt: skip
    for key, result in zip(todo, results):
        if isinstance(result, Exception):
            reason = str(result).strip().splitlines()[-1] if str(result).strip() else type(result).__name__
            print(f"confirm: {names[key]}: retraining failed ({reason})", flush=True)
    stopping.check()
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
            stopping.check()
            done = _confirm_one(sweep, run, retrained_candidate, where)
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
