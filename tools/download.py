"""Zoo models: ``python tools/download.py list | info NAME | download NAME [--zoo-file F]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from ovseg.cli.download import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
