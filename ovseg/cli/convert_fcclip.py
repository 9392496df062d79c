"""Convert an official FC-CLIP (detectron2) checkpoint into an ovseg checkpoint."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EPILOG = """examples:
  python tools/convert_fcclip.py fcclip_cocopan.pth \\
      --config fcclip/fcclip_convnext_large_eval_ade20k.yaml --out fcclip_convnext_large.pth
  python tools/convert_fcclip.py ../shared/fixtures/fcclip_tiny/fcclip_tiny_a.pth \\
      --config tests/fcclip_tiny.yaml --out tiny.pth
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="convert_fcclip",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="official FC-CLIP checkpoint ({'model': state_dict})")
    p.add_argument("--config", required=True, help="ovseg config describing the architecture")
    p.add_argument("--out", required=True, help="output ovseg checkpoint path")
    p.add_argument(
        "--include-clip",
        action="store_true",
        help="store the frozen CLIP too even when an open_clip tag provides it",
    )
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    from ovseg import Segmenter
    from ovseg.checkpoint import CheckpointError
    from ovseg.config import ConfigError

    try:
        seg = Segmenter.from_pretrained(
            args.checkpoint, config=args.config, overrides=args.overrides
        )
        out = seg.save(args.out, include_clip=True if args.include_clip else None)
    except (CheckpointError, ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
