"""``python -m bayesneuro``: see :mod:`bayesneuro.cli`."""

import sys

from .cli import main

sys.exit(main())
