"""``python -m trainer.bench``: :mod:`trainer.bench.cli`."""

import sys

from trainer.bench.cli import main

sys.exit(main())
