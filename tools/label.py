"""Label images with any vocabulary into COCO: ``python tools/label.py --help``.

Also ``torchrun --nproc-per-node N tools/label.py ...``; the logic lives in :mod:`ovseg.cli.label`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from ovseg.cli.label import main

if __name__ == "__main__":
    raise SystemExit(main())
