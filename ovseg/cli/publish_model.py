"""``publish_model CKPT --name NAME [--out DIR] [--url-prefix URL] [--hub-folder DIR [--push
OWNER/REPO]]``, see ovseg.zoo.publish."""

from __future__ import annotations

from ovseg.zoo.cli import publish_main


def main(argv: list[str] | None = None) -> int:
    """Strip a checkpoint to ``NAME-<sha256[:8]>.pth`` and print its zoo entry."""
    return publish_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
