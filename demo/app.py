"""The web app: ``python demo/app.py --help`` (see ovseg/cli/app.py)."""

import sys
from pathlib import Path

try:
    from ovseg.cli.app import main
except ModuleNotFoundError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ovseg.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
