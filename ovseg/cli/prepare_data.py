"""``tools/prepare_data.py``: convert a benchmark's official download into ovseg's layout and
verify it (:mod:`ovseg.data.prepare`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

EPILOG = """\
examples:
  # Pascal VOC 2012 val -> $OVSEG_DATA/pascal_voc_d2 (VOC-21 and VOC-20 label maps), then check it
  python tools/prepare_data.py pascal-voc --src ~/downloads --dst data --verify

  # Pascal Context 59 + 459 from the .mat files (VOCdevkit/VOC2010/trainval/*.mat)
  python tools/prepare_data.py pascal-context --src ~/downloads --dst data

  # COCO val2017: semantic maps from the panoptic PNGs; symlink the images instead of copying
  python tools/prepare_data.py coco-panoptic --src ~/coco --dst data --link

  # ADE20K-150 (panoptic + instance too when annotations_instance/ is extracted)
  python tools/prepare_data.py ade20k-150 --src ~/downloads --dst data

  # ADE20K-847 from the full release (ADE20K_2021_17_01/index_ade20k.pkl + *_seg.png); writes
  # data/ADE20K_2021_17_01/{images,annotations}_detectron2/validation and ade20k_847_mapping.json
  python tools/prepare_data.py ade20k-847 --src ~/downloads --dst data --verify
  # ... with your own class mapping (a JSON list of 847 ADE object names, {name: train id}, or an
  # edited ade20k_847_mapping.json)
  python tools/prepare_data.py ade20k-847 --src ~/downloads --dst data --mapping my_847.json

  # OVCamo from its release (the env file splitted_ovcamo.yaml, or the folder holding it)
  python tools/prepare_data.py ovcamo --src ~/OVCamo/env/splitted_ovcamo.yaml --dst data --verify

  # only check an already prepared benchmark (image counts, label value ranges)
  python tools/prepare_data.py cityscapes --dst data --verify

What is read: images, label PNGs/.mat files and JSON annotations of the download; for ade20k-847
also index_ade20k.pkl, through a restricted unpickler that builds only lists, dicts, strings and
numpy arrays (any other type stops the run; no code from the file is executed). Nothing outside
--dst is written: a file name in the metadata that points outside its folder stops the run.

names: ade20k-150, ade20k-847, pascal-voc (= pascal-voc-20/21), pascal-context
(= pascal-context-59/459), coco-panoptic, cityscapes, mapillary-vistas, ovcamo.
Exit status: 0 ok, 1 verification failed, 2 bad usage or missing raw files.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="prepare_data.py",
        description="Convert an official benchmark download into the layout tools/test.py reads "
        "(see ovseg/data/benchmarks/*.py), and verify prepared data.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", metavar="NAME", help="dataset to prepare (see below)")
    p.add_argument("--src", metavar="RAW", help="folder holding the extracted official download")
    p.add_argument(
        "--dst", metavar="DATA", help="data root to write into (default $OVSEG_DATA or ./data)"
    )
    p.add_argument("--verify", action="store_true", help="check image counts and label ranges")
    p.add_argument("--link", action="store_true", help="symlink images instead of copying them")
    p.add_argument(
        "--split-file", metavar="TXT", help="pascal-context: image ids of the validation split"
    )
    p.add_argument(
        "--mapping",
        metavar="JSON",
        help="ade20k-847: class mapping to use instead of the one derived from the ADE object names",
    )
    p.add_argument(
        "--training",
        action="store_true",
        help="ade20k-847: also convert the training images (into .../training)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 verify failed, 2 error)."""
    from ovseg.data.prepare import PrepareError, prepare, verify
    from ovseg.utils.image import ImageLoadError

    args = build_parser().parse_args(argv)
    dst = args.dst or os.environ.get("OVSEG_DATA", "data")
    if not args.src and not args.verify:
        print("prepare_data.py: error: give --src RAW to convert, --verify to check, or both",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.name.lower() == "ovcamo":
        return _ovcamo(args, dst)
    try:
        if args.src:
            kwargs = {}
            if args.split_file:
                kwargs["split_file"] = args.split_file
            if args.mapping:
                kwargs["mapping"] = args.mapping
            if args.training:
                kwargs["training"] = True
            written = prepare(args.name, args.src, dst, link=args.link, **kwargs)
            print(f"wrote {', '.join(written)} under {dst}")
        if args.verify:
            report = verify(args.name, dst)
            print(report.text())
            return 0 if report.ok else 1
    except (KeyError, PrepareError, ImageLoadError, NotImplementedError, TypeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"prepare_data.py: error: {msg}", file=sys.stderr)
        return 2
    return 0


def _ovcamo(args: argparse.Namespace, dst: str) -> int:
    from ovseg.data.ovcamo import OVCamoLayoutError, prepare_ovcamo, verify_ovcamo

    try:
        if args.src:
            print(f"wrote {prepare_ovcamo(args.src, dst, link=args.link)}")
    except OVCamoLayoutError as e:
        print(f"prepare_data.py: error: {e}", file=sys.stderr)
        return 2
    if args.verify:
        lines = verify_ovcamo(dst)
        print("\n".join(lines))
        return 1 if any(x.startswith("FAIL") for x in lines) else 0
    return 0
