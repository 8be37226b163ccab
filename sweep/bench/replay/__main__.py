"""``python -m sweep.bench.replay record|run``: see :mod:`sweep.bench.replay`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

TABLE = Path(__file__).parent / "table.json.gz"  # the recorded table shipped with the project


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m sweep.bench.replay", description=__doc__)
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
    run.add_argument("--seed-base", type=int, default=0, help="first replay seed (seeds SEED_BASE … SEED_BASE+SEEDS-1)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override of every method's sweep config, e.g. scheduler.reduction_factor=2")
    pick = sub.add_parser("pick", help="pick the default search settings on tuning seeds, report them on fresh seeds")
    pick.add_argument("--table", type=Path, default=TABLE)
    pick.add_argument("--tuning-seeds", nargs=2, type=int, default=[1000, 20], metavar=("FIRST", "N"))
    pick.add_argument("--fresh-seeds", nargs=2, type=int, default=[2000, 40], metavar=("FIRST", "N"))
    pick.add_argument("--out", type=Path, default=Path("replay_pick"), help="folder for pick.md, fresh.csv, fresh.png")
    args = parser.parse_args(argv)

    from trainer.config import ConfigError

    try:
        counts = {"run": lambda: [args.seeds], "pick": lambda: [args.tuning_seeds[1], args.fresh_seeds[1]]}
        if any(n < 1 for n in counts.get(args.cmd, list)()):
            raise ConfigError("replay seeds: at least one per method")
        if args.cmd == "record":
            from sweep.config_files import load_sweep_config
            from sweep.bench.replay.record import log_grid, record

            cfg = load_sweep_config(args.config, args.set)
            command = "python -m sweep.bench.replay " + " ".join(shlex.quote(a) for a in argv)
            lams = log_grid(args.lam[0], args.lam[1], int(args.lam[2]))
            mus = log_grid(args.mu[0], args.mu[1], int(args.mu[2]))
            record(cfg, lams, mus, args.seeds, args.out, command)
            return 0
        if args.cmd == "pick":
            from sweep.bench.replay.pick import main as pick_main

            return pick_main(args.table, args.out, tuple(args.tuning_seeds), tuple(args.fresh_seeds))
        from sweep.bench.replay.searches import main as bench_main

        return bench_main(args.table, args.seeds, args.out, args.seed_base, tuple(args.set))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
