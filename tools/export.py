"""Export a model: ``python tools/export.py CONFIG --weights W --output DIR``.

See ``python tools/export.py --help``; the logic lives in :mod:`ovseg.cli.export`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from ovseg.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
