"""cluster.yaml: Ray's own offline validation, its safety settings, and a sweep on a fake cluster.

The fake cluster is Ray's ``fake_multinode`` provider (``RAY_FAKE_CLUSTER=1 ray start --head
--autoscaling-config=...``): the autoscaler launches "GPU" worker nodes as extra raylets on this
machine, with the node types, resources and limits of cluster.yaml. The sweep is submitted the way
the README says (``ray job submit``) and finds the tracking URI and storage path in the
environment the cluster's ``ray start`` had, as on the real cluster. Token authentication is on,
with a token file made for the test (nothing in ~/.ray is read or written).
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from helpers import stop_session

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
HEAD_TYPE = "ray.head.default"  # the fake provider knows the head only by this name
GPU_TYPE = "ray.worker.gpu"
FAKE_WORKERS = 2  # upper bound of fake GPU nodes: enough to prove trials spread over nodes
TRIALS = 4  # at 0.5 GPU each on 1-GPU nodes: one node holds 2, so 4 need both nodes
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"  # this venv's CLI
START_TIMEOUT_S = 90
SWEEP_TIMEOUT_S = 240
# Sections of a cluster config that hold lists of commands or paths.
LIST_SECTIONS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
    "cluster_synced_files",
    "rsync_exclude",
    "rsync_filter",
)


def load_cluster() -> dict:
    """cluster.yaml as written."""
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _commands(cfg: dict, *sections: str) -> str:
    """The commands of these sections, one per line."""
    return "\n".join(cmd for s in sections for cmd in cfg.get(s, []))


# --------------------------------------------------------------------------- offline checks


def test_cluster_yaml_passes_rays_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(load_cluster())
    validate_config(prepared)  # Ray's JSON schema and node-type rules; raises on any error
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] == HEAD_TYPE
    head = prepared["available_node_types"][HEAD_TYPE]
    gpu = prepared["available_node_types"][GPU_TYPE]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0
    assert gpu["resources"]["GPU"] >= 1 and gpu["node_config"]["InstanceType"].startswith("g")
    assert gpu["min_workers"] == 0 < gpu["max_workers"] <= prepared["max_workers"]
    # setup_commands run on both kinds of node: the project is installed everywhere.
    for section in ("head_setup_commands", "worker_setup_commands"):
        assert "pip install -q -e '.[aws]'" in _commands(prepared, section)


def test_cluster_yaml_keeps_services_private_and_authenticated():
    cfg = load_cluster()
    setup = _commands(cfg, "setup_commands", "head_setup_commands")
    head_start = _commands(cfg, "head_start_ray_commands")
    # No inbound rule beyond Ray's defaults (SSH + intra-cluster): nothing for 8265 or 5000.
    assert "IpPermissions" not in cfg["provider"].get("security_group", {})
    assert "--dashboard-host=127.0.0.1" in head_start
    mlflow = _mlflow_server_args(cfg)
    allowed = mlflow[mlflow.index("--allowed-hosts") + 1]
    assert "*" not in allowed.replace("localhost:*", "").replace("127.0.0.1:*", "")
    # Token auth on every node, with the token generated on the user's machine.
    assert "export RAY_AUTH_MODE=token" in setup
    assert cfg["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    # The bucket is named once; everything else refers to the variable.
    text = CLUSTER_YAML.read_text()
    assert text.count("SWEEP_S3_BUCKET=") == 1
    assert mlflow[mlflow.index("--artifacts-destination") + 1].startswith("s3://$SWEEP_S3_BUCKET/")
    # What the sweep reads (sweep.paths / sweep.preflight) is set for it.
    from sweep.paths import ENV_STORAGE, ENV_TRACKING
    from sweep.resources import ENV_NODE_RESOURCES

    assert f"export {ENV_STORAGE}=s3://$SWEEP_S3_BUCKET/" in setup
    assert f"export {ENV_TRACKING}=http://" in setup
    node = json.loads(_env_value(setup, ENV_NODE_RESOURCES))
    assert node == cfg["available_node_types"][GPU_TYPE]["resources"]


def _mlflow_server_args(cfg: dict) -> list[str]:
    """The words of the head's `mlflow server ...` command (it runs inside `setsid bash -c '...'`)."""
    start = next(c for c in cfg["head_start_ray_commands"] if "mlflow server" in c)
    inner = next(w for w in shlex.split(start) if "mlflow server" in w)
    words = shlex.split(inner.split(";")[-1])
    return words[words.index("mlflow") :]


def _env_value(commands: str, name: str) -> str:
    """The value a setup command exports for ``name`` (quotes removed)."""
    for word in shlex.split(commands.replace("\n", " ; ")):  # echo's argument is one word
        if word.startswith(f"export {name}="):
            return shlex.split(word)[1].split("=", 1)[1]
    raise AssertionError(f"cluster.yaml exports no {name}")


# --------------------------------------------------------------------------- fake cluster


def fake_cluster_config(cluster: dict, gcs_address: str, max_workers: int) -> dict:
    """cluster.yaml's node types (resources, min/max workers) on the fake_multinode provider."""
    types = {}
    for name, node_type in cluster["available_node_types"].items():
        types[name] = {
            "resources": copy.deepcopy(node_type["resources"]),
            "node_config": {},
            "min_workers": node_type.get("min_workers", 0),
            "max_workers": 0 if name == HEAD_TYPE else min(node_type["max_workers"], max_workers),
        }
    return {
        # Nothing to run or sync on fake nodes: they are raylets on this machine.
        **{section: [] for section in LIST_SECTIONS},
        "cluster_name": "fake-" + cluster["cluster_name"],
        "max_workers": max_workers,
        "upscaling_speed": cluster["upscaling_speed"],
        "idle_timeout_minutes": cluster["idle_timeout_minutes"],
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,  # the provider assumes port 6379 otherwise
            "launch_multiple": True,  # add all the nodes one autoscaler update asks for at once
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,  # no SSH setup of nodes
            "disable_launch_config_check": True,
        },
        "auth": {},
        "docker": {},
        "available_node_types": types,
        "head_node_type": cluster["head_node_type"],
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
    }


def test_fake_config_mirrors_cluster_node_types():
    from ray.autoscaler._private.util import validate_config

    cluster = load_cluster()
    fake = fake_cluster_config(cluster, "127.0.0.1:1", FAKE_WORKERS)
    # Complete as written (prepare_config cannot fill fake_multinode defaults: Ray 2.60 does
    # not ship that provider's defaults file).
    validate_config(fake)
    for name, node_type in cluster["available_node_types"].items():
        assert fake["available_node_types"][name]["resources"] == node_type["resources"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s")


def _http_status(url: str) -> int | None:
    """The HTTP status ``url`` answers with, or None when nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


@pytest.fixture
def auth_env(tmp_path: Path) -> dict[str, str]:
    """Token authentication with a fresh token, as `ray get-auth-token --generate` makes."""
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real MLflow server on a loopback port, set up like the head's (SQLite + proxied artifacts).

    Yields its URI and process without waiting for it, so it starts while Ray does.
    """
    port = _free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts-destination", str(tmp_path / "mlflow-artifacts"),
        "--allowed-hosts", "localhost:*,127.0.0.1:*",
    ]  # fmt: skip
    # No job runner: it serves MLflow's GenAI jobs, which a sweep never submits (saves startup).
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(tmp_path / "mlflow.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop_session(proc)


@pytest.fixture
def ray_temp_dir() -> Iterator[Path]:
    """Ray's session folder: short, since Ray's socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="ray-fake-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _start_fake_cluster(tmp_path: Path, temp_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """Start the head (``ray start --head --block``) in its own session; returns it and its dashboard."""
    import ray._private.services

    cluster = load_cluster()
    ip = ray._private.services.get_node_ip_address()
    # Free ports for everything that has a fixed default, so other Ray instances cannot clash.
    port, dashboard_port, agent_port = _free_port(), _free_port(), _free_port()
    config = tmp_path / "fake_cluster.yaml"
    config.write_text(yaml.safe_dump(fake_cluster_config(cluster, f"{ip}:{port}", FAKE_WORKERS)))
    head = cluster["available_node_types"][HEAD_TYPE]["resources"]
    cmd = [
        RAY, "start", "--head", "--block",
        f"--port={port}", f"--autoscaling-config={config}",
        f"--num-cpus={head['CPU']}", f"--num-gpus={head.get('GPU', 0)}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={agent_port}",
        f"--temp-dir={temp_dir}", "--disable-usage-stats",
    ]  # fmt: skip
    with open(tmp_path / "ray-head.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{dashboard_port}"


SWEEP = """
name: cluster-test
trainer:
  data: {dataset: digits, train_size: 256, test_size: 128}
  model: {arch: resnet9, width: 0.0625}
  loss: {preset: score_matching}
  epochs: 1
  batch_size: 64
  device: cpu
  eval: {samples: 16, steps: 5, density_images: 32, perturbation_images: 32, perturbation_points: 3, grid_images: 4}
search:
  method: grid
  grid: {loss.lam: [1.0e-3, 1.0e-4], loss.mu: [1.0e-3, 1.0e-4]}
objective: {name: weighted}
resources: {cpus: 1, gpus: 0.5}
judge: {arch: vgg11, width: 0.0625, epochs: 1, batch_size: 64}
analysis: false
"""


@pytest.mark.slow  # ~60-90 s idle, over 5 min on 2 loaded cores: a Ray head, two fake GPU nodes, a sweep
@pytest.mark.timeout(900)
def test_sweep_spreads_over_fake_gpu_nodes(tmp_path, auth_env, mlflow_server, ray_temp_dir):
    from mlflow.tracking import MlflowClient

    from sweep.paths import ENV_STORAGE, ENV_TRACKING
    from sweep.resources import ENV_NODE_RESOURCES

    mlflow_uri, mlflow_proc = mlflow_server
    cluster = load_cluster()
    gpu_node = cluster["available_node_types"][GPU_TYPE]["resources"]
    storage = tmp_path / "shared-storage"  # one disk for all fake nodes, as S3 is for real ones
    # What the head's ~/.sweep_env gives `ray start` on the real cluster, hence every Ray job.
    cluster_env = {
        ENV_TRACKING: mlflow_uri,
        ENV_STORAGE: storage.as_uri(),
        ENV_NODE_RESOURCES: json.dumps(gpu_node),
    }
    env = {**os.environ, **auth_env, **cluster_env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    head, dashboard = _start_fake_cluster(tmp_path, ray_temp_dir, env)
    try:
        client_env = {**os.environ, **auth_env}
        for key in cluster_env:  # the sweep must get these from the cluster, not from us
            client_env.pop(key, None)
        _wait_for(lambda: _http_status(dashboard + "/api/version") is not None or head.poll() is not None, START_TIMEOUT_S, "Ray head")
        assert head.poll() is None, (tmp_path / "ray-head.log").read_text()[-3000:]
        _wait_for(lambda: _http_status(mlflow_uri + "/health") == 200 or mlflow_proc.poll() is not None, START_TIMEOUT_S, "MLflow")
        assert mlflow_proc.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
        # Token auth is on: a client without the token is turned away.
        no_token = {k: v for k, v in client_env.items() if not k.startswith("RAY_AUTH")}
        denied = subprocess.run(
            [RAY, "job", "list", "--address", dashboard],
            env={**no_token, "HOME": str(tmp_path)},  # no ~/.ray/auth_token either
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert denied.returncode != 0 and "token" in denied.stderr.lower(), denied.stderr[-2000:]

        config = tmp_path / "sweep.yaml"
        config.write_text(SWEEP)
        submit = [
            RAY, "job", "submit", "--address", dashboard, "--",
            sys.executable, "-m", "sweep.run", "--config", str(config),
        ]  # fmt: skip
        deadline = time.monotonic() + SWEEP_TIMEOUT_S
        while True:  # the head's job agent starts a little after the dashboard answers
            job = subprocess.run(submit, env=client_env, cwd=tmp_path, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
            if "No available agent" not in job.stderr or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]

        # Every trial ran on a fake GPU node, and they used more than one: the process ids in
        # the trials' Tune results, looked up among the cluster's actors (Ray's state API keeps
        # dead ones).
        trial_dirs = [d for d in (storage / "cluster-test").iterdir() if (d / "result.json").is_file()]
        pids = {json.loads(line)["pid"] for d in trial_dirs for line in (d / "result.json").read_text().splitlines()}
        node_of = {a["pid"]: a["node_id"] for a in _ray_list("actors", dashboard, client_env)}
        nodes = {node_of[pid] for pid in pids}
        head_node = {n["node_id"] for n in _ray_list("nodes", dashboard, client_env) if n["is_head_node"]}
        assert len(trial_dirs) == TRIALS and len(nodes) >= 2 and not nodes & head_node, (pids, node_of)

        # Tracking went to the server: one parent, one finished child per point, with metrics.
        mc = MlflowClient(mlflow_uri)
        exp = mc.get_experiment_by_name("cluster-test")
        runs = mc.search_runs([exp.experiment_id])
        roles = [r.data.tags.get("sweep.role") for r in runs]
        children = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
        assert roles.count("parent") == 1 and len(children) == TRIALS
        assert {r.data.tags["trial.status"] for r in children} == {"finished"}
        assert all({"test/acc", "eval/gan_test"} <= set(r.data.metrics) for r in children)
        # The judge trained once, in a Ray task on a GPU node (the head has none), and trials fetched it.
        judges = mc.search_runs([mc.get_experiment_by_name("judges").experiment_id])
        assert len(judges) == 1 and "judge.pt" in [f.path for f in mc.list_artifacts(judges[0].info.run_id)]
        # Ray results landed in the shared storage, checkpoints included.
        assert all(list(d.glob("checkpoint_*")) for d in trial_dirs)
    finally:
        stop_session(head)


def _ray_list(what: str, dashboard: str, env: dict[str, str], *args: str) -> list[dict]:
    """``ray list WHAT`` (Ray's state API) as dicts; a CLI call keeps token auth out of pytest."""
    cmd = [RAY, "list", what, "--address", dashboard, "--detail", "--format", "json", "--limit", "1000", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)
