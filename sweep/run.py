"""``python -m sweep.run``: validate, preflight, judge, Ray Tune, MLflow, analysis.

    python -m sweep.run                                  # the quickstart preset, CPU, minutes
    python -m sweep.run --config table2 --address auto   # the paper's grid on a Ray cluster
    python -m sweep.run --config my.yaml --set trainer.epochs=10 --name try2
    python -m sweep.run --config table2 --resume         # continue a killed sweep
    python -m sweep.run --config table2 --smoke          # any preset as a few-minute CPU run

Bad input (config, flags, missing data, trials packed beyond a GPU's memory, unreachable MLflow,
resources no node has, a name that exists without --resume) prints one message and exits with
status 2 before anything is written.
Ctrl-C in any stage stops the trials, closes the MLflow runs as KILLED (resumable), prints one line
with what was kept and the command that continues, and exits with status 130; SIGTERM and SIGHUP
do the same and exit with 143 and 129 (128 + the signal's number).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# Ctrl-C in the first seconds lands in an import (pydantic here, torch, MLflow and Ray below), so
# main() imports everything inside its own handler: one line and exit 130, never a traceback.
STARTING = "sweep.run: interrupted by Ctrl-C while starting; nothing was written"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep; returns the exit status (0 done, 1 some trials failed, 2 bad input, 128 + n
    for signal n)."""
    try:
        from sweep.cli import fail, load_config, parse_args
        from trainer.config import ConfigError

        args = parse_args(argv)
        try:
            cfg = load_config(args)  # a bad flag, key or value: one line and exit 2 before the heavy imports
        except ConfigError as e:
            return fail(str(e))
        # torch, MLflow and Ray: imported once the command line is good
        from sweep import driver
    except KeyboardInterrupt:
        print(STARTING, file=sys.stderr, flush=True)
        return 130  # sweep.cli.EXIT_INTERRUPTED, which may not be imported yet
    return driver.run(args, cfg)


if __name__ == "__main__":
    sys.exit(main())
