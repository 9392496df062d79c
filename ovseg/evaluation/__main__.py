"""``python -m ovseg.evaluation``: see :mod:`ovseg.evaluation.cli`."""

import sys

from ovseg.evaluation.cli import main

sys.exit(main())
