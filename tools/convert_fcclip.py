#!/usr/bin/env python
"""Convert an official FC-CLIP checkpoint to ovseg's format. See ``--help``."""

import sys

from ovseg.cli.convert_fcclip import main

if __name__ == "__main__":
    sys.exit(main())
