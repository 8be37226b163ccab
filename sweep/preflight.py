"""Checks that run before any trial and before anything is written to MLflow.

Each failure is a :class:`PreflightError` whose message names the problem and how to fix it;
``sweep.run`` prints it and exits with status 2. The static checks here need neither Ray nor
MLflow writes (:func:`check_packing` imports torch to estimate a trial's memory on the CPU);
:func:`check_resources` runs once Ray is up, still before the judge and trials.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from sweep.config import SweepConfig
from sweep.points import apply_point, grid_points
from trainer.config import DataConfig, TrainConfig

# Largest node an autoscaler may add, e.g. '{"CPU": 4, "GPU": 1}'; set by the cluster so a
# trial may ask for more than the nodes up right now offer.
ENV_NODE_RESOURCES = "SWEEP_NODE_RESOURCES"
# Folders torchvision's CIFAR datasets unpack into under data_dir.
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


class PreflightError(RuntimeError):
    """The sweep cannot start; the message says why."""


def dataset_url(dataset: str) -> str:
    """Where torchvision downloads ``dataset`` (cifar10 or cifar100) from."""
    from torchvision.datasets import CIFAR10, CIFAR100  # imported only for a download

    return {"cifar10": CIFAR10, "cifar100": CIFAR100}[dataset].url


def reachable(url: str, timeout: float = 10.0) -> str | None:
    """None when ``url``'s host answers an HTTP HEAD request, else the reason it does not."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError as e:  # the host answered; torchvision's own request decides
        return None if e.code < 500 else f"HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        return str(getattr(e, "reason", e))


def check_dataset(data: DataConfig) -> None:
    """CIFAR must be on disk or downloadable; the other datasets ship with the code."""
    folder = CIFAR_FOLDERS.get(data.dataset)
    if folder is None:
        return
    path = Path(data.data_dir) / folder
    if path.is_dir():
        return
    if not data.download:
        raise PreflightError(
            f"trainer.data: {data.dataset} not found at {path.resolve()} and trainer.data.download "
            f"is false; put the dataset there, set trainer.data.data_dir, or --set trainer.data.download=true"
        )
    url = dataset_url(data.dataset)
    reason = reachable(url)
    if reason is not None:
        root = Path(data.data_dir).resolve()
        raise PreflightError(
            f"trainer.data: {data.dataset} is not at {path.resolve()} and cannot be downloaded from {url} "
            f"({reason}); fetch that file on a machine with network and unpack it into {root} "
            f"(tar xzf {url.rsplit('/', 1)[-1]} -C {root} makes {folder}/), or set trainer.data.data_dir"
        )


def check_tracking(uri: str) -> None:
    """An http(s) tracking server must answer; a sqlite file's folder must exist."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as resp:
                if resp.status != 200:
                    raise PreflightError(f"MLflow tracking server {uri} answered HTTP {resp.status} on /health")
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise PreflightError(
                f"MLflow tracking server {uri} is not reachable ({reason}); start it or fix "
                "tracking.uri / MLFLOW_TRACKING_URI"
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise PreflightError(f"tracking.uri: folder {folder} of the MLflow database does not exist")


def check_ray_address(address: str | None) -> None:
    """A HOST:PORT Ray address must accept connections (ray.init would retry for many minutes)."""
    if not address or address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise PreflightError(f"--address {address!r} must be auto, local or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise PreflightError(f"--address: no Ray cluster answers at {address} ({e}); start it or fix the address") from None


# Ray's longest socket path under its temp root: <root>/ray/session_<date>_<microseconds>_<pid>/
# sockets/plasma_store, with a 7-digit pid (Linux's largest) -- 68 bytes after the root.
RAY_SOCKET_TAIL = len("/ray/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
SOCKET_PATH_MAX = 107  # bytes of an AF_UNIX socket path on Linux (108 with the final NUL)
# The folder of the user's own the sweep puts Ray's temp root in (sweep.engine.session._private_temp_root):
# /ray-<uid>, or /ray-XXXXXXXX from mkdtemp where that name is taken.
RAY_PRIVATE_ROOT = len("/ray-") + max(len(str(os.getuid())), 8)
# SQLAlchemy's driver module per MLflow database URI scheme -> the pip package that provides it
DB_DRIVERS = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "MySQLdb": "mysqlclient",
              "pymysql": "PyMySQL", "pyodbc": "pyodbc", "pymssql": "pymssql"}  # fmt: skip


def check_ray_local(address: str | None, environ: Mapping[str, str] | None = None) -> None:
    """A local Ray (no ``--address``) must be able to start: its socket paths under the temp
    folder must fit AF_UNIX's 107 bytes, and its auth token must be writable under HOME."""
    if address and address != "local":
        return
    env = os.environ if environ is None else environ
    limit = env.get("SWEEP_RAY_START_TIMEOUT", "").strip()
    try:
        if limit and not 0 < float(limit) < math.inf:
            raise ValueError(limit)
    except ValueError:
        raise PreflightError(f"SWEEP_RAY_START_TIMEOUT={limit}: must be a positive number of seconds (the "
                             "longest a local Ray may take to start; unset: 300)") from None
    var = "RAY_TMPDIR" if "RAY_TMPDIR" in env else "TMPDIR" if "TMPDIR" in env else None
    root = env[var] if var else "/tmp"
    tail = RAY_PRIVATE_ROOT + RAY_SOCKET_TAIL
    length = len(root.encode()) + tail
    if var and length > SOCKET_PATH_MAX:
        raise PreflightError(
            f"{var}={root} is too long for Ray: its socket paths would be {length} bytes, over the "
            f"{SOCKET_PATH_MAX} a Unix socket allows; set RAY_TMPDIR to a folder of at most "
            f"{SOCKET_PATH_MAX - tail} bytes (e.g. export RAY_TMPDIR=/tmp) or a shorter TMPDIR"
        )
    if env.get("RAY_AUTH_MODE", "token").lower() != "token" or env.get("RAY_AUTH_TOKEN"):
        return
    token = Path(env.get("RAY_AUTH_TOKEN_PATH") or Path(env.get("HOME") or Path.home()) / ".ray" / "auth_token")
    if token.is_file():
        return
    here = token.parent
    while not here.exists() and here != here.parent:
        here = here.parent
    try:  # a probe, not os.access: root passes that on read-only mounts and immutable folders
        os.rmdir(tempfile.mkdtemp(prefix=".sweep-probe-", dir=here))
    except OSError as e:
        raise PreflightError(
            f"Ray writes its auth token to {token}, but {here} is not writable ({e.strerror}); make it "
            "writable, or set HOME to a writable folder"
        ) from None


def check_db_driver(uri: str) -> None:
    """A database tracking URI (postgresql://, mysql://, mssql://) needs its Python driver installed."""
    if not uri.startswith(("postgresql", "mysql", "mssql")):
        return
    try:
        from sqlalchemy.engine import make_url

        make_url(uri).get_dialect().import_dbapi()
    except ModuleNotFoundError as e:
        module = (e.name or "").split(".")[0]
        package = DB_DRIVERS.get(module, module)
        raise PreflightError(
            f"tracking.uri: {uri.split(':', 1)[0]} needs the Python package {package!r}, which is not installed "
            f"(pip install '{package}')"
        ) from None
    except Exception as e:  # noqa: BLE001 - a malformed URL
        raise PreflightError(f"tracking.uri: {uri.split('@')[-1]!r} is not a database URL MLflow can use ({e})") from None


def sqlite_missing(uri: str) -> bool:
    """True when ``uri`` is a sqlite store whose file does not exist yet (so it holds no runs)."""
    return uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists()


def check_name(name: str, resume: bool, ray_state: bool, parent_id: str | None, where: str) -> None:
    """A new sweep must not reuse a name; ``--resume`` needs something to resume.

    ``ray_state``: Ray results exist or a driver ever took the sweep's lock (``sweep.lock``).
    """
    if not resume and (ray_state or parent_id):
        found = "Ray results at " + where if ray_state else f"MLflow parent run {parent_id}"
        raise PreflightError(
            f"sweep {name!r} already exists ({found}); continue it with --resume or choose "
            "another --name"
        )
    if resume and not ray_state and not parent_id:  # a parent alone: killed before Tune saved state
        raise PreflightError(f"--resume: no sweep {name!r} to resume (no Ray results at {where})")


# Keys a resumed sweep may change. Each says where results go or how the end is reported, never
# what a trial computes or how Tune schedules it:
# - tracking.*: the MLflow store the parent run was just found in (a server's new address, an
#   artifact root moved); the runs continued are the ones found there.
# - analysis: whether Table 2 / the Pareto front are written at the end; the trials are unaffected.
# - confirm.*: the confirmation runs after every trial has ended and selects nothing; a finalist
#   confirmed with other settings (sample seed, samples) is measured again, and its run's tags say
#   what each number was measured on (the parent's params keep the values the sweep started with).
# Everything else is refused: the trainer, search, objective and judge decide what each trial
# computes (mixed results), and Tune restores scheduler, resources and retries from its own saved
# state, so a changed value there would be silently ignored.
RESUMABLE_CHANGES = ("tracking.", "analysis", "confirm.")
NOT_RECORDED = "(not recorded)"


def config_changes(stored: Mapping[str, str], current: Mapping[str, object]) -> list[str]:
    """``key: old -> new`` for every key of the flattened config whose value differs from the
    stored one (the parent run's params: strings, cut at MLflow's 6000 characters)."""
    changes = []
    defaults = _default_config()
    for key in sorted(set(stored) | set(current)):
        if key.startswith(RESUMABLE_CHANGES):
            continue
        if key not in stored and key in defaults and current.get(key) == defaults[key]:
            continue  # a setting added to the schema after the sweep started, left at its default
        old = stored.get(key, NOT_RECORDED)
        new = str(current[key])[:6000] if key in current else NOT_RECORDED
        if old != new:
            changes.append(f"{key}: {old} -> {new}")
    return changes


def _default_config() -> dict[str, Any]:
    """The flattened defaults of every sweep setting (as the parent run's params flatten a config)."""
    from trainer.config import flatten

    return flatten(SweepConfig().model_dump(mode="json"))


def check_resume_config(name: str, parent_id: str, stored: Mapping[str, str], current: Mapping[str, object]) -> None:
    """``--resume`` continues the sweep it started: a changed config would mix trials trained with
    different settings under one parent, so any difference refuses it before a trial is touched."""
    if not stored:  # a driver killed between the parent's creation and its params: nothing to compare
        return
    changes = config_changes(stored, current)
    if changes:
        raise PreflightError(
            f"--resume: the config of sweep {name!r} differs from the one it started with (MLflow parent "
            f"run {parent_id}): {'; '.join(changes)}. Resume with the original settings, or start a new "
            "sweep with another --name"
        )


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


_ESTIMATES: dict[str, Any] = {}  # memory_key -> trainer.memory's estimate, kept for this process


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
