"""``python -m loadgen URL --profile P``: the same as ``scalelab load``."""

import sys

from .cli import main

sys.exit(main())
