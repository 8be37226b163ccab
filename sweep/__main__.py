"""``python -m sweep`` is ``python -m sweep.run``."""

import sys

from sweep.run import main

sys.exit(main())
