"""Evaluate a model: ``python tools/test.py CONFIG --weights W [--dataset NAME | --suite fcclip]``.

See ``python tools/test.py --help``; the logic lives in :mod:`ovseg.cli.test`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from ovseg.cli.test import main

if __name__ == "__main__":
    raise SystemExit(main())
