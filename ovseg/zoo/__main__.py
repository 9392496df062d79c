"""``python -m ovseg.zoo list | info NAME | download NAME [--zoo-file F]``."""

from ovseg.zoo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
