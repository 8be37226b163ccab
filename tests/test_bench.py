"""trainer.bench.measures (measurements) and trainer.bench (its command line), tiny, on CPU: figures are
not asserted."""

import json

import pytest
import torch

from trainer import keys
from trainer.bench.cli import format_throughput, main
from trainer.bench.measures import LAYOUT_VARIANTS, bench, grad_norm_check, precision_check, throughput, trial_config
from trainer.config import ConfigError, load_config
from trainer.memory import GIB, estimate_memory


def test_precision_check_finds_float32_far_below_the_sampling_spread():
    result = precision_check("resnet9", width=1 / 8, batch=16, train_steps=5, draws=4, device="cpu", image_size=8,
                             num_classes=5)  # fmt: skip
    (row,) = result["results"]
    assert row["precision"] == "float32"
    # Float32 rounding is orders of magnitude below the estimator's own noise, the gradient
    # direction is float64's, and two float64 gradients with different noise are not.
    assert row["h_error_to_spread"] < 1e-3, row
    assert row["grad_cosine_min"] > 0.9999, row
    assert result["grad_cosine_between_float64_draws"] < 0.999
    assert row["accepted_for_training"] and row["accepted_for_density_ratios"]


def test_grad_norm_check_covers_every_method_and_step():
    result = grad_norm_check("resnet9", width=1 / 8, batch=8, train_steps=2, device="cpu", image_size=8,
                             num_classes=5, eps=(1e-3, 1e-1))  # fmt: skip
    rows = {(r["method"], r["eps"]): r for r in result["results"]}
    assert set(rows) == {("double_backward", None)} | {
        (m, e) for m in ("central_difference", "forward_difference") for e in (1e-3, 1e-1)
    }
    assert rows[("double_backward", None)]["cosine"] > 0.99999
    assert rows[("central_difference", 1e-3)]["cosine"] > 0.999
    # The forward difference's O(ε) error shows at a large step: the table can rank steps.
    assert rows[("forward_difference", 1e-1)]["relative_error"] > rows[("forward_difference", 1e-3)]["relative_error"]


@pytest.mark.slow  # three trainer processes, each importing torch: half a minute or more on 2 cores
def test_throughput_runs_one_and_two_trials_per_device():
    # One torch thread per process: two processes of two threads each on 2 cores only wait on each other.
    result = throughput((1, 2), device="cpu", epochs=1, train_size=32, batch=16, width=1 / 16, threads=1)
    assert [r["trials"] for r in result["results"]] == [1, 2]
    two = result["results"][1]
    assert len(two["images_per_s_each"]) == 2 and two["images_per_s_sum"] == pytest.approx(sum(two["images_per_s_each"]))
    assert all(r["peak_memory_gib_per_trial"] is None for r in result["results"])  # CPU: no CUDA peak
    assert all(r["peak_reserved_gib_per_trial"] is None for r in result["results"])
    # trainer.memory's estimate of the same trial, printed under the measured peaks.
    expected = estimate_memory(load_config(trial_config("cpu", 1, 32, 16, 1 / 16)))
    assert result["estimate"]["peak_gib"] == pytest.approx(expected.peak_bytes / GIB)
    assert f"estimate (trainer.memory, on the CPU): peak allocated {expected.peak_bytes / GIB:.2f} GiB" in (
        format_throughput(result)
    )


def test_layout_variants_are_timed_when_asked():
    names = ["ce", "ce+bench", "score_matching/taylor+cd"]
    result = bench("resnet9", width=1 / 16, batch=4, steps=1, warmup=0, device="cpu", image_size=8, variants=names)
    assert [r["variant"] for r in result["results"]] == names and "ce+bench" in LAYOUT_VARIANTS
    # channels_last is CUDA-only: refused on CPU with a clear message, not run.
    with pytest.raises(ConfigError, match="CUDA only"):
        bench("resnet9", width=1 / 16, batch=4, steps=1, warmup=0, device="cpu", image_size=8, variants=["ce+cl"])


def test_cli_refuses_bad_input_and_writes_json(tmp_path, capsys):
    assert main(["--throughput", "0"]) == 2
    assert main(["--variants", "ce,nope"]) == 2
    assert "unknown --variants" in capsys.readouterr().err
    out = tmp_path / "b.json"
    code = main(["--arch", "resnet9", "--width", "0.0625", "--batch", "4", "--steps", "1", "--warmup", "0",
                 "--device", "cpu", "--variants", "ce,grad_norm+cd", "--json", str(out)])  # fmt: skip
    assert code == 0 and [r["variant"] for r in json.loads(out.read_text())["results"]] == ["ce", "grad_norm+cd"]


def test_training_levers_are_config_fields_that_run_on_cpu():
    # channels_last applies on CUDA only; cudnn.benchmark is set for the run and restored after.
    before = torch.backends.cudnn.benchmark
    cfg = {
        "data": {"dataset": "synthetic", "train_size": 32, "test_size": 16},
        "model": {"arch": "resnet9", "width": 1 / 16},
        "loss": {"preset": "score_matching", "grad_norm_method": "forward_difference"},
        "epochs": 1, "batch_size": 16, "device": "cpu", "eval": {"enabled": False},
        "channels_last": True, "cudnn_benchmark": not before,
    }  # fmt: skip
    from trainer.train import run

    metrics = run(cfg)
    assert metrics[keys.STATUS] == "finished" and metrics[keys.TRAIN_GRAD_NORM] > 0
    assert torch.backends.cudnn.benchmark == before
