"""Write CuPL class descriptions: ``python tools/describe_classes.py --vocab V --endpoint URL``.

See ``python tools/describe_classes.py --help``; the logic lives in
:mod:`ovseg.cli.describe_classes`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from ovseg.cli.describe_classes import main

if __name__ == "__main__":
    raise SystemExit(main())
