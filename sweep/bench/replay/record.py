"""Record learning curves for the replay benchmark: a dense λ×μ grid trained once, every epoch kept.

Each cell (λ, μ, training seed) is trained with :func:`trainer.train.run` in this process (no Ray,
no MLflow): every epoch's validation accuracy (``val/acc``), and GAN-test (``eval/gan_test``) at
the evaluation epochs, with enough generated samples that it is not a coarse fraction. Lines are
appended to ``<out>.partial.jsonl`` as cells finish, so an interrupted recording resumes where it
stopped; the finished table is written as gzipped JSON (:func:`sweep.bench.replay.table.write_table`).

    python -m sweep.bench.replay record --out sweep/bench/replay/table.json.gz

The exact command is stored in the table (``command``).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from sweep.config import SweepConfig, judge_config
from sweep.objective import accuracy_key
from sweep.points import Point, apply_point
from sweep.bench.replay.table import Table, write_table
from trainer import keys


def log_grid(low: float, high: float, n: int) -> list[float]:
    """``n`` log-spaced values from ``low`` to ``high`` (both included), rounded to 3 digits."""
    if n == 1:
        return [low]
    step = (math.log10(high) - math.log10(low)) / (n - 1)
    return [float(f"{10 ** (math.log10(low) + i * step):.3g}") for i in range(n)]


def record(
    cfg: SweepConfig,
    lams: Sequence[float],
    mus: Sequence[float],
    seeds: Sequence[int],
    out: Path,
    command: str,
    judge_cache: Path | None = None,
) -> Table:
    """Train every (λ, μ, seed) of ``cfg``'s trainer config; write and return the table."""
    import torch

    from trainer.judge import train_judge
    from trainer.train import run

    from trainer.data import load_dataset

    torch.set_num_threads(cfg.trial_threads)
    data = load_dataset(cfg.trainer.data, "cpu")  # for the table's facts: classes, validation images
    jc = judge_config(cfg)
    cache = judge_cache or Path(tempfile.gettempdir()) / "sweep-replay-judges"
    judge = train_judge(jc, cache, device="cpu")
    partial = out.with_name(out.name + ".partial.jsonl")
    done = {}
    if partial.is_file():
        for line in partial.read_text().splitlines():
            row = json.loads(line)
            done[(row["lam"], row["mu"], row["seed"])] = row
    acc_key = accuracy_key(cfg.objective)
    # Seed by seed: a recording cut short still holds whole grids for the seeds it finished.
    cells = [(lam, mu, seed) for seed in seeds for lam in lams for mu in mus]
    for i, (lam, mu, seed) in enumerate(cells):
        if (lam, mu, seed) in done:
            continue
        tc = apply_point(cfg.trainer.model_dump(), Point((("loss.lam", lam), ("loss.mu", mu)), seed))
        tc.eval.judge = str(judge)
        acc: list[float] = []
        gan: dict[int, float] = {}
        status = {"value": str(keys.Status.FINISHED)}

        def report(metrics: dict[str, Any], files: dict[str, str]) -> None:
            if metrics[keys.STATUS] == keys.Status.DIVERGED:
                status["value"] = str(keys.Status.DIVERGED)
                return
            acc.append(float(metrics[acc_key]))
            if keys.GAN_TEST in metrics:
                gan[int(metrics[keys.EPOCH])] = float(metrics[keys.GAN_TEST])

        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="replay-record-") as tmp:
            try:
                run(tc, report=report, out_dir=tmp)
            except Exception as e:  # noqa: BLE001 - a live sweep counts such a trial as failed; so does the table
                status["value"] = str(keys.Status.FAILED)
                print(f"  failed after {len(acc)} epoch(s): {type(e).__name__}: {e}", flush=True)
        row = {"lam": lam, "mu": mu, "seed": seed, "status": status["value"], "acc": acc,
               "gan": {str(k): v for k, v in gan.items()}, "seconds": round(time.perf_counter() - start, 2)}
        with partial.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done[(lam, mu, seed)] = row
        print(f"[{i + 1}/{len(cells)}] λ={lam:g} μ={mu:g} s{seed}: {row['status']}, "
              f"acc {acc[-1] if acc else float('nan'):.3f}, gan {gan}, {row['seconds']:.1f} s", flush=True)
    table = Table.from_rows(
        [done[c] for c in cells],
        epochs=cfg.trainer.epochs,
        eval_every=cfg.trainer.eval.every,
        meta={"command": command, "accuracy": acc_key, "samples": cfg.trainer.eval.samples,
              "classes": data.num_classes, "val_images": len(data.val_y) if data.val_y is not None else 0,
              "trainer": cfg.trainer.model_dump(mode="json"), "judge": jc.model_dump(mode="json")},
    )
    write_table(table, out)
    partial.unlink()
    return table
