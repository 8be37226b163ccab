"""Preflight of resources: whether each trial, the judge and the confirmation fit the nodes,
hosts and GPUs they are packed onto, estimated from each config (exit 2 when not).

:func:`check_packing` runs before Ray starts (trials per GPU × each trial's estimated memory);
:func:`check_resources` once Ray's nodes are known (CPUs, GPUs, host memory). Each refusal names
its largest part and the setting that shrinks it, so a refused sweep says what to change.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from sweep.config import SweepConfig
from sweep.points import apply_point, grid_points
from sweep.preflight import PreflightError
from trainer.config import DataConfig, TrainConfig

# Largest node an autoscaler may add, e.g. '{"CPU": 4, "GPU": 1}'; set by the cluster so a
# trial may ask for more than the nodes up right now offer.
ENV_NODE_RESOURCES = "SWEEP_NODE_RESOURCES"


def node_limits(nodes: list[Mapping[str, float]]) -> dict[str, float]:
    """Per resource, the most any single node (up now, or addable per SWEEP_NODE_RESOURCES) offers."""
    limits: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
    extra = os.environ.get(ENV_NODE_RESOURCES)
    if extra:
        try:
            nodes = [*nodes, json.loads(extra)]
        except json.JSONDecodeError:
            raise PreflightError(f"{ENV_NODE_RESOURCES} must be JSON like '{{\"CPU\": 4, \"GPU\": 1}}'") from None
    for node in nodes:
        for res in limits:
            limits[res] = max(limits[res], float(node.get(res, 0.0)))
    return limits


def check_resources(cfg: SweepConfig, nodes: list[Mapping[str, float]]) -> None:
    """Each trial must fit on one node, or Ray would leave it pending forever."""
    limits = node_limits(nodes)
    asked = {"CPU": cfg.resources.cpus, "GPU": cfg.resources.gpus}
    for res, amount in asked.items():
        if amount > limits[res]:
            field = "resources.cpus" if res == "CPU" else "resources.gpus"
            raise PreflightError(
                f"{field}: each trial asks for {amount:g} {res}(s) but the largest node in the Ray "
                f"cluster has {limits[res]:g}; lower {field} (e.g. --set {field}={limits[res]:g})"
                + (" or set trainer.device=cpu" if res == "GPU" else "")
            )
    if cfg.trainer.device.startswith("cuda") and cfg.resources.gpus == 0:
        raise PreflightError("trainer.device is cuda but resources.gpus is 0; Ray would hide every GPU")
    node_bytes = max((float(n.get("memory", 0.0)) for n in nodes), default=0.0)
    if cfg.resources.gpus == 0 or cfg.trainer.device.startswith("cpu"):
        check_host_memory(cfg, node_bytes)
    else:
        check_host_samples(cfg, node_bytes)


_ESTIMATES: dict[str, Any] = {}  # memory_key -> trainer.memory's estimate, kept for this process


def check_host_samples(cfg: SweepConfig, node_bytes: float) -> None:
    """A GPU sweep's generated samples start as noise drawn on the CPU (all at once, so that a seed
    gives the same samples on every device): a trial's evaluation and a finalist's confirmation
    must fit that in the largest node's memory (``node_bytes``; 0: unknown, not checked)."""
    if node_bytes <= 0:
        return
    from trainer.memory import GIB, image_bytes

    for c in _trial_configs(cfg):
        for n, key in ((c.eval.samples if c.eval.enabled else 0, "trainer.eval.samples"),
                       (confirm_samples(cfg, c), "confirm.samples")):  # fmt: skip
            need = n * image_bytes(c.data)
            if need > node_bytes:
                raise PreflightError(
                    f"{key}={n}: the starting noise of {n:,} generated samples, drawn at once on the CPU, needs "
                    f"{need / GIB:,.1f} GiB but the largest Ray node has {node_bytes / GIB:,.1f} GiB of memory; "
                    f"lower {key}"
                )


def _estimate(cfg: TrainConfig) -> Any:
    """trainer.memory's estimate of ``cfg``, made once per process for each memory key: it is a
    pure function of the key (seeded probes on the meta device), and takes seconds for a CIFAR
    ResNet-18."""
    from trainer.memory import estimate_memory, memory_key

    key = memory_key(cfg)
    if key not in _ESTIMATES:
        _ESTIMATES[key] = estimate_memory(cfg)
    return _ESTIMATES[key]


def _trial_configs(cfg: SweepConfig) -> list[TrainConfig]:
    """The distinct trial configs by trainer.memory's key: the base and each grid point (for
    Optuna, the points the search is seeded with)."""
    from trainer.memory import memory_key  # torch

    base = cfg.trainer.model_dump()
    configs = {memory_key(c): c for c in [cfg.trainer, *(apply_point(base, p) for p in grid_points(cfg.search))]}
    return list(configs.values())


def confirm_samples(cfg: SweepConfig, trial: TrainConfig) -> int:
    """The samples the confirmation generates per finalist (0 without a judge): ``confirm.samples``,
    else CONFIRM_SAMPLES or the test set's size where smaller (as :func:`sweep.confirm.rescore`)."""
    from sweep.config import CONFIRM_SAMPLES
    from trainer.memory import dataset_shape

    if cfg.judge is None or not cfg.confirm.enabled:
        return 0
    return cfg.confirm.samples or min(CONFIRM_SAMPLES, dataset_shape(trial.data)[1])


def sample_bytes(data: DataConfig, samples: int) -> int:
    """Bytes ``samples`` generated images take at once where they are made
    (trainer.evaluation.generate_samples draws the whole start at once): the start, the result and
    the int64 targets."""
    from trainer.memory import BYTES_PER_LABEL, image_bytes

    return samples * (2 * image_bytes(data) + BYTES_PER_LABEL)


def evaluation_bytes(trial: TrainConfig) -> dict[str, int]:
    """What one evaluation of ``trial`` holds at once beyond its dataset and model, by the setting
    that sizes it: the generated samples (``trainer.eval.samples``) and the density ratios'
    log-ratios, a float64 per test image, noise draw and σ (``trainer.eval.density_draws``). The
    other evaluation sizes take test images, so the dataset bounds them."""
    if not trial.eval.enabled:
        return {}
    from trainer.memory import dataset_shape

    images = min(trial.eval.density_images, dataset_shape(trial.data)[1])
    return {
        "trainer.eval.samples": sample_bytes(trial.data, trial.eval.samples),
        "trainer.eval.density_draws": images * trial.eval.density_draws * len(trial.eval.density_sigmas) * 8,
    }


def _largest(parts: dict[str, int], trial: TrainConfig) -> str:
    """``key=value`` of the evaluation setting that holds the most (:func:`evaluation_bytes`)."""
    key = max(parts, key=lambda k: parts[k])
    return f"{key}={getattr(trial.eval, key.rsplit('.', 1)[1])}"


def check_host_memory(cfg: SweepConfig, node_bytes: float) -> None:
    """Each stage that runs on a CPU must fit the memory of the largest node (``node_bytes``: Ray's
    ``memory`` resource, bytes; 0: unknown, not checked): every trial, the judge's training and the
    confirmation of a finalist, each with what it holds at once (``trainer.eval.samples``,
    ``trainer.eval.density_draws``, ``confirm.samples``).

    Each is bounded from below by trainer.memory (dataset and model, no activations; milliseconds)
    plus its generated samples; where that bound is above a tenth of the node, the full estimate
    (with activations, ``peak_bytes``, seconds) decides for the stages that train.
    """
    if node_bytes <= 0:
        return
    from trainer.memory import GIB, data_bytes, resident_bytes  # torch

    for c in _trial_configs(cfg):
        try:
            need, what = resident_bytes(c), "dataset and model alone"
        except RuntimeError as e:  # a tensor size beyond 64 bits: far beyond any node
            raise PreflightError(f"trainer.model.width={c.model.width:g}: the model is too large to build ({e}); "
                                 "lower trainer.model.width") from None  # fmt: skip
        parts = evaluation_bytes(c)
        extra = sum(parts.values())
        if 10 * (need + extra) > node_bytes and need + extra <= node_bytes:
            need, what = _estimate(c).peak_bytes, "with its activations"
        if need + extra > node_bytes:
            by_eval = extra > need
            held = f", and what its evaluation holds at once ({_largest(parts, c)})" if by_eval else ""
            raise PreflightError(
                f"a CPU trial needs about {(need + extra) / GIB:,.1f} GiB ({what}{held}; trainer.model.width="
                f"{c.model.width:g}, trainer.batch_size={c.batch_size}) but the largest Ray node has "
                f"{node_bytes / GIB:,.1f} GiB of memory; lower "
                + (_largest(parts, c).split("=")[0] if by_eval else "trainer.model.width or trainer.batch_size")
            )
        n = confirm_samples(cfg, c)
        need = data_bytes(c.data) + sample_bytes(c.data, n)  # a lower bound: the finalist's model not counted
        if need > node_bytes:
            raise PreflightError(
                _confirm_too_large(cfg, c, n, need, node_bytes, "the largest Ray node has {:,.1f} GiB of memory"))
    judge = _judge_config(cfg)
    if judge is not None:
        try:
            need, what = resident_bytes(judge), "dataset and model alone"
        except RuntimeError as e:
            raise PreflightError(f"judge.width={judge.model.width:g}: the judge is too large to build ({e}); lower "
                                 "judge.width") from None  # fmt: skip
        if 10 * need > node_bytes and need <= node_bytes:
            need, what = _estimate(judge).peak_bytes, "with its activations"
        if need > node_bytes:
            raise PreflightError(
                f"the judge's training needs about {need / GIB:,.1f} GiB ({what}; judge.width={judge.model.width:g}, "
                f"judge.batch_size={judge.batch_size}) but the largest Ray node has {node_bytes / GIB:,.1f} GiB of "
                "memory; lower judge.width or judge.batch_size"
            )


def _confirm_too_large(cfg: SweepConfig, trial: TrainConfig, n: int, need: float, limit: float, where: str) -> str:
    from trainer.memory import GIB, data_bytes

    room = int((limit - data_bytes(trial.data)) // sample_bytes(trial.data, 1))
    fits = f" (at most about {room:,} fit)" if room >= 1 else ""
    return (f"the confirmation needs at least {need / GIB:,.1f} GiB for one finalist (the dataset and its {n:,} "
            f"generated samples at once, confirm.samples={cfg.confirm.samples}) but {where.format(limit / GIB)}; "
            f"lower confirm.samples{fits}")


def _judge_config(cfg: SweepConfig) -> TrainConfig | None:
    """The trainer config the judge trains with (trainer.judge.train_config), or None without one."""
    if cfg.judge is None:
        return None
    from sweep.config import judge_config
    from trainer.judge import train_config

    return train_config(judge_config(cfg), "cpu")


def trials_per_gpu(gpus: float) -> int:
    """Trials Ray places on one GPU when each asks for ``gpus`` of one (a trial asking for a
    whole GPU or more has it to itself)."""
    return max(1, math.floor(1 / gpus + 1e-9)) if gpus > 0 else 0


def check_packing(cfg: SweepConfig) -> None:
    """The trials packed onto one GPU (``resources.gpus`` = 1/N) must fit its memory.

    Each distinct trial config among the base and the grid's points (for Optuna, the points it is
    seeded with) is estimated by trainer.memory on the CPU; the largest counts. Skipped, with a
    note, when ``resources.gpu_memory_gib`` is unknown.
    """
    res = cfg.resources
    if res.gpus == 0 or cfg.trainer.device.startswith(("cpu", "mps")):
        return
    per_gpu = trials_per_gpu(res.gpus)
    if res.gpu_memory_gib is None:
        print(
            f"preflight: resources.gpus={res.gpus:g} packs {per_gpu} trial(s) per GPU; not checked against "
            "GPU memory (set resources.gpu_memory_gib to check it)"
        )
        return
    from trainer.memory import GIB  # torch: only for GPU sweeps

    configs = _trial_configs(cfg)
    estimate = max((_estimate(c) for c in configs), key=lambda e: e.footprint_bytes)
    need = per_gpu * estimate.footprint_bytes / GIB
    if need <= res.gpu_memory_gib:
        _check_gpu_stages(cfg, configs, per_gpu, res.gpu_memory_gib * GIB)
        return
    fits = math.floor(res.gpu_memory_gib * GIB / estimate.footprint_bytes)
    fix = (
        f"use --set resources.gpus={math.floor(100 / fits) / 100:g} ({fits} per GPU)"
        if fits >= 1
        else "one trial does not fit: lower trainer.batch_size or use GPUs with more memory"
    )
    raise PreflightError(
        f"resources.gpus={res.gpus:g} packs {per_gpu} trials per GPU, {need:.1f} GiB in all, but "
        f"resources.gpu_memory_gib is {res.gpu_memory_gib:g}; trainer.memory estimates "
        f"{estimate.describe()}; {fix}"
    )


def _check_gpu_stages(cfg: SweepConfig, configs: list[TrainConfig], per_gpu: int, gpu_bytes: float) -> None:
    """Beyond the trials' packing (which fits): each trial's generated samples, the judge's training
    and a finalist's confirmation must fit the GPU's ``gpu_bytes`` too. The judge and the
    confirmation run one at a time, before and after the trials, so each may use the whole card."""
    from trainer.memory import CUDA_CONTEXT_BYTES, GIB, data_bytes

    for c in configs:
        parts = evaluation_bytes(c)
        need = per_gpu * (_estimate(c).footprint_bytes + sum(parts.values()))
        if need > gpu_bytes:
            setting = _largest(parts, c)
            raise PreflightError(
                f"{setting}: {per_gpu} trial(s) per GPU with what their evaluations hold at once need "
                f"{need / GIB:,.1f} GiB but resources.gpu_memory_gib is {gpu_bytes / GIB:g}; lower {setting.split('=')[0]}"
            )
        k = confirm_samples(cfg, c)
        need = data_bytes(c.data) + sample_bytes(c.data, k) + CUDA_CONTEXT_BYTES
        if need > gpu_bytes:
            raise PreflightError(
                _confirm_too_large(cfg, c, k, need, gpu_bytes, "one GPU has {:g} GiB (resources.gpu_memory_gib)"))
    judge = _judge_config(cfg)
    try:
        too_large = judge is not None and _estimate(judge).footprint_bytes > gpu_bytes
    except RuntimeError as e:  # a tensor size beyond 64 bits
        raise PreflightError(f"judge.width: the judge is too large to build ({e}); lower judge.width") from None
    if judge is not None and too_large:
        raise PreflightError(
            f"the judge's training needs about {_estimate(judge).footprint_bytes / GIB:,.1f} GiB of GPU memory "
            f"(judge.width={judge.model.width:g}, judge.batch_size={judge.batch_size}) but resources.gpu_memory_gib "
            f"is {gpu_bytes / GIB:g}; lower judge.width or judge.batch_size"
        )
