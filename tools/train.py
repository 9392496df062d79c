#!/usr/bin/env python
"""Train ovseg models from config files. See ``--help``."""

import sys

from ovseg.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
