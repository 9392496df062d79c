"""Zoo CLI entry point: ``list | info NAME | download NAME`` (see :mod:`ovseg.zoo.cli`)."""

from ovseg.zoo.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
