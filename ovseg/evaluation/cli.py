"""``python -m ovseg.evaluation {semantic,panoptic,instance,cityscapes-instance,ovcamo}``: evaluate saved
predictions offline.

Prints a table and, with ``--out F.json``, writes the numbers with the key names of the reference
fixtures (semantic: ``summary_percent`` / ``per_class_percent``; panoptic: ``summary`` /
``per_class``; instance: ``stats``) or of cityscapesscripts (cityscapes-instance: ``averages``,
``resultApMatrix``) or of OVCamo's evaluator (ovcamo: ``metrics`` with the 12 raw values). Bad input is reported as one line and exit status 1.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

from ovseg.evaluation.errors import EvaluationError
from ovseg.utils.io import atomic_write_json

EPILOG = """examples:
  python -m ovseg.evaluation semantic \\
      --gt-dir data/ade/ADEChallengeData2016/annotations/validation --pred-dir work/ade_pred \\
      --num-classes 150 --reduce-zero-label --convention detectron2
  python -m ovseg.evaluation panoptic --gt-json data/coco/annotations/panoptic_val2017.json \\
      --gt-dir data/coco/panoptic_val2017 --pred-json work/pan.json --pred-dir work/pan \\
      --out pq.json
  python -m ovseg.evaluation instance --gt-json data/coco/annotations/instances_val2017.json \\
      --pred-json work/segm.json
  python -m ovseg.evaluation cityscapes-instance --gt-dir data/cityscapes/gtFine/val \\
      --pred-dir work/cs/predictions/cityscapes_instance
  python -m ovseg.evaluation ovcamo --info data/ovcamo/splitted_ovcamo.yaml \
      --pred-dir work/ovcamo_pred --json ovcamo.json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ovseg.evaluation",
        description="Evaluate saved predictions: mIoU (semantic), PQ (panoptic), COCO mask AP "
        "(instance), official Cityscapes instance AP (cityscapes-instance), OVCamo class-aware "
        "cSm / cF / cE / cIoU (ovcamo).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(
        dest="task",
        required=True,
        metavar="{semantic,panoptic,instance,cityscapes-instance,ovcamo}",
    )

    sem = sub.add_parser("semantic", help="per-class IoU/Acc, mIoU, mAcc, aAcc, fwIoU")
    sem.add_argument("--gt-dir", required=True, help="folder of ground-truth label PNGs")
    sem.add_argument(
        "--pred-dir", required=True, help="folder of predicted label PNGs (same names)"
    )
    sem.add_argument("--num-classes", type=int, required=True, help="number of classes C")
    sem.add_argument("--ignore-index", type=int, default=255, help="ignored GT value (255)")
    sem.add_argument(
        "--reduce-zero-label",
        action="store_true",
        help="mmseg ADE20K convention for GT: 0 -> ignore, k -> k-1",
    )
    sem.add_argument(
        "--convention",
        choices=("mmseg", "detectron2"),
        default="mmseg",
        help="mmseg IoUMetric or detectron2 SemSegEvaluator NaN rules (default mmseg)",
    )
    sem.add_argument("--gt-suffix", default=".png", help="ground-truth file suffix (.png)")
    sem.add_argument("--pred-suffix", default=".png", help="prediction file suffix (.png)")
    sem.add_argument(
        "--vocabulary",
        help="class names for the table: a built-in vocabulary name (e.g. ade20k-150) or a file",
    )

    pan = sub.add_parser("panoptic", help="PQ / SQ / RQ (panopticapi conventions)")
    pan.add_argument("--gt-json", required=True, help="COCO panoptic ground-truth json")
    pan.add_argument("--gt-dir", required=True, help="folder of ground-truth panoptic PNGs")
    pan.add_argument("--pred-json", required=True, help="predicted panoptic json")
    pan.add_argument("--pred-dir", required=True, help="folder of predicted panoptic PNGs")

    ins = sub.add_parser("instance", help="COCO mask AP (pycocotools COCOeval segm)")
    ins.add_argument("--gt-json", required=True, help="COCO instances ground-truth json")
    ins.add_argument("--pred-json", required=True, help="COCO results json (RLE segmentations)")

    csi = sub.add_parser(
        "cityscapes-instance",
        help="instance AP with cityscapesscripts' rules (evalInstanceLevelSemanticLabeling)",
    )
    csi.add_argument(
        "--gt-dir", required=True, help="folder searched for *_gtFine_instanceIds.png (gtFine/val)"
    )
    csi.add_argument(
        "--pred-dir",
        required=True,
        help="folder of <city>_<seq>_<frame>*.txt files ('<mask png> <label id> <score>' lines)",
    )

    ovc = sub.add_parser(
        "ovcamo", help="OVCamo class-aware sm, wfm, mae, F / E / IoU (official evaluator's rules)"
    )
    ovc.add_argument(
        "--info",
        required=True,
        help="OVCamo's splitted_ovcamo.yaml (relative paths: from the working directory, else "
        "from the yaml's folder)",
    )
    ovc.add_argument(
        "--pred-dir", required=True, help="folder of '[<class>]<unique_id>.png' grey soft masks"
    )
    ovc.add_argument(
        "--strict-classes",
        action="store_true",
        help="a class outside the test vocabulary is an error (default: scored as wrong, warned)",
    )

    for p in (sem, pan, ins, csi, ovc):
        p.add_argument("--out", "--json", dest="out", help="write the metrics as JSON to this file")
        p.add_argument("--quiet", action="store_true", help="print no table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 bad input)."""
    args = build_parser().parse_args(argv)
    try:
        if args.task == "semantic":
            result = _semantic(args)
            table = format_semantic(result)
        elif args.task == "panoptic":
            from ovseg.evaluation.panoptic import evaluate_panoptic_files

            result = evaluate_panoptic_files(
                args.gt_json, args.gt_dir, args.pred_json, args.pred_dir, progress=_progress()
            )
            table = format_panoptic(result)
        elif args.task == "cityscapes-instance":
            from ovseg.evaluation.cityscapes_instance import (
                evaluate_cityscapes_instance_dirs,
                format_cityscapes_instance,
            )

            result = evaluate_cityscapes_instance_dirs(
                args.gt_dir, args.pred_dir, progress=_progress()
            )
            table = format_cityscapes_instance(result)
        elif args.task == "ovcamo":
            result, table = _ovcamo(args)
        else:
            from ovseg.evaluation.instance import evaluate_instance_files

            result = evaluate_instance_files(args.gt_json, args.pred_json)
            table = format_instance(result)
        if args.out:
            atomic_write_json(args.out, result)
    except (ValueError, KeyError, OSError) as e:  # EvaluationError is a ValueError
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"ovseg.evaluation {args.task}: error: {msg}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(table)
        if args.out:
            print(f"wrote {args.out}")
    return 0


def _progress():
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return lambda it: tqdm(it, desc="evaluating", unit="img", disable=None, leave=False)


def _semantic(args: argparse.Namespace) -> dict[str, Any]:
    from ovseg.evaluation.sem_seg import evaluate_semantic_dirs

    names = None
    if args.vocabulary:
        from ovseg.text.vocabulary import load_vocabulary

        vocab = load_vocabulary(args.vocabulary)
        if len(vocab) != args.num_classes:
            raise EvaluationError(
                f"vocabulary {args.vocabulary!r} has {len(vocab)} classes but --num-classes is "
                f"{args.num_classes}"
            )
        names = vocab.names
    result = evaluate_semantic_dirs(
        args.gt_dir,
        args.pred_dir,
        args.num_classes,
        ignore_index=args.ignore_index,
        reduce_zero_label=args.reduce_zero_label,
        convention=args.convention,
        class_names=names,
        gt_suffix=args.gt_suffix,
        pred_suffix=args.pred_suffix,
        progress=_progress(),
    )
    if result["num_images"] == 0:
        print(f"warning: no predictions in {args.pred_dir}: every metric is NaN", file=sys.stderr)
    return result


def _ovcamo(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    import warnings

    from ovseg.evaluation.ovcamo import evaluate_ovcamo, format_ovcamo

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_ovcamo(
            args.info, args.pred_dir, progress=_progress(), strict_classes=args.strict_classes
        )
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    table = (
        format_ovcamo(result)
        + "\nraw: "
        + " ".join(f"{k}={v!r}" for k, v in result["metrics"].items())
    )
    return result, table


# ---------------------------------------------------------------------------------- output
def _pct(v: float | None, width: int = 7) -> str:
    return f"{'nan':>{width}}" if v is None or math.isnan(v) else f"{v:>{width}.2f}"


def format_semantic(result: dict[str, Any]) -> str:
    """A per-class IoU / Acc table followed by the summary (percent, 2 decimals)."""
    iou = result["per_class_percent"]["IoU"]
    acc = result["per_class_percent"]["Acc"]
    names = result.get("class_names") or [str(i) for i in range(len(iou))]
    w = max(5, *(len(n) for n in names))
    lines = [f"{'class':<{w}} | {'IoU':>7} {'Acc':>7}", "-" * (w + 18)]
    lines += [f"{n:<{w}} | {_pct(a)} {_pct(b)}" for n, a, b in zip(names, iou, acc)]
    s = result["summary_percent"]
    lines += [
        "-" * (w + 18),
        f"{result['convention']} convention, {result['num_images']} images: "
        + "  ".join(f"{k} {_pct(s[k], 0)}" for k in ("aAcc", "mIoU", "mAcc", "fwIoU")),
    ]
    return "\n".join(lines)


def format_panoptic(result: dict[str, Any]) -> str:
    """panopticapi's table: PQ / SQ / RQ (percent) and N for All, Things, Stuff."""
    lines = [f"{'':10}| {'PQ':>6} {'SQ':>6} {'RQ':>6} {'N':>5}", "-" * 38]
    for name in ("All", "Things", "Stuff"):
        r = result["summary"][name]
        vals = " ".join(
            _pct(None if math.isnan(r[k]) else 100 * r[k], 6) for k in ("pq", "sq", "rq")
        )
        lines.append(f"{name:10}| {vals} {r['n']:>5}")
    return "\n".join(lines)


def format_instance(result: dict[str, Any]) -> str:
    """The 12 COCO stats as pycocotools prints them."""
    rows = [
        ("Average Precision", "0.50:0.95", "all", 100),
        ("Average Precision", "0.50", "all", 100),
        ("Average Precision", "0.75", "all", 100),
        ("Average Precision", "0.50:0.95", "small", 100),
        ("Average Precision", "0.50:0.95", "medium", 100),
        ("Average Precision", "0.50:0.95", "large", 100),
        ("Average Recall", "0.50:0.95", "all", 1),
        ("Average Recall", "0.50:0.95", "all", 10),
        ("Average Recall", "0.50:0.95", "all", 100),
        ("Average Recall", "0.50:0.95", "small", 100),
        ("Average Recall", "0.50:0.95", "medium", 100),
        ("Average Recall", "0.50:0.95", "large", 100),
    ]
    out = []
    for (title, iou, area, dets), v in zip(rows, result["stats"]):
        kind = "(AP)" if "Precision" in title else "(AR)"
        out.append(
            f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6} | maxDets={dets:>3} ] = {v:0.3f}"
        )
    return "\n".join(out)
