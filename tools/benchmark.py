#!/usr/bin/env python
"""Speed, memory and parameter report. See ``--help``."""

import sys

from ovseg.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
