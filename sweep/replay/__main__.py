"""``python -m sweep.replay record|run``: see :mod:`sweep.replay`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

TABLE = Path(__file__).parent / "table.json.gz"  # the recorded table shipped with the project


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m sweep.replay", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="train a log-spaced λ×μ grid once and store its curves")
    rec.add_argument("--config", default="quickstart", help="sweep preset or YAML whose trainer config is recorded")
    rec.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override of that config")
    rec.add_argument("--lam", nargs=3, type=float, default=[1e-6, 1e-1, 8], metavar=("LOW", "HIGH", "N"))
    rec.add_argument("--mu", nargs=3, type=float, default=[1e-6, 1e-1, 8], metavar=("LOW", "HIGH", "N"))
    rec.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    rec.add_argument("--out", type=Path, default=TABLE)
    run = sub.add_parser("run", help="replay the searches against a recorded table")
    run.add_argument("--table", type=Path, default=TABLE)
    run.add_argument("--seeds", type=int, default=20, help="replay seeds per method")
    run.add_argument("--out", type=Path, default=Path("replay_out"), help="folder for the table, CSV and picture")
    args = parser.parse_args(argv)

    from trainer.config import ConfigError

    try:
        if args.cmd == "record":
            from sweep.loading import load_sweep_config
            from sweep.replay.record import log_grid, record

            cfg = load_sweep_config(args.config, args.set)
            command = "python -m sweep.replay " + " ".join(shlex.quote(a) for a in argv)
            lams = log_grid(args.lam[0], args.lam[1], int(args.lam[2]))
            mus = log_grid(args.mu[0], args.mu[1], int(args.mu[2]))
            record(cfg, lams, mus, args.seeds, args.out, command)
            return 0
        from sweep.replay.bench import main as bench_main

        return bench_main(args.table, args.seeds, args.out)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
