"""Publish a checkpoint: ``publish_model.py CKPT --name NAME [--out DIR] [--url-prefix URL]
[--hub-folder DIR [--push OWNER/REPO]]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from ovseg.cli.publish_model import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
