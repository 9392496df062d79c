"""Prepare a benchmark: ``python tools/prepare_data.py NAME --src RAW --dst DATA [--verify]``.

See ``python tools/prepare_data.py --help``; the logic lives in :mod:`ovseg.data.prepare`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from ovseg.cli.prepare_data import main

if __name__ == "__main__":
    raise SystemExit(main())
