"""``tools/test.py``: evaluate a model on a test set or on FC-CLIP's whole zero-shot suite.

Test data comes from the config's ``data.test`` (any dataset type), from ``--dataset NAME`` (a
prepared benchmark under ``$OVSEG_DATA``) or from ``--suite fcclip`` (every benchmark of FC-CLIP's
table that is prepared). Prints a table and writes ``metrics.json`` (one key per task, each the
JSON ``python -m ovseg.evaluation`` writes, plus ``meta``). ``torchrun --nproc-per-node N`` shards
the images over N processes with the single-process numbers.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  # official FC-CLIP weights on ADE20K-150 (panoptic, instance and semantic), results in work/ade
  python tools/test.py fcclip/fcclip_convnext_large_eval_ade20k.yaml \\
      --weights fcclip_cocopan.pth --dataset ade20k-150 --out work/ade

  # the whole zero-shot table (prepared benchmarks under $OVSEG_DATA; missing ones are skipped)
  OVSEG_DATA=/data python tools/test.py fcclip/fcclip_convnext_large_eval_ade20k.yaml \\
      --weights fcclip_cocopan.pth --suite fcclip --out work/suite

  # the config's own data.test, semantic only, mmseg's NaN rules, 50 images, saved predictions
  python tools/test.py my_config.yaml --weights work/run/model_final.pth --task semantic \\
      --convention mmseg --limit 50 --save-predictions --out work/quick

  # 4 processes (GPUs or CPU/gloo): each takes every 4th image; the numbers equal one process
  torchrun --nproc-per-node 4 tools/test.py CONFIG --weights W --dataset cityscapes --out work/cs

  # any config key on the command line (the benchmark's FC-CLIP test size is used otherwise)
  python tools/test.py CONFIG --weights W --dataset coco-panoptic model.test.min_size=640

  # sliding-window semantic inference (windows over the resized image, scores averaged)
  python tools/test.py CONFIG --weights W --dataset ade20k-150 --task semantic \\
      model.test.mode=slide 'model.test.crop_size=[640,640]' 'model.test.stride=[426,426]'

  # OVCamo: one class + one soft mask per image, the official class-aware metrics
  python tools/test.py CONFIG --weights W --dataset ovcamo --out work/ovcamo \
      --single-object semantic-sum model.text.templates=camo

outputs in --out: metrics.json (semantic / panoptic / instance / meta); with --suite one folder
per benchmark plus suite.json and suite.md (FC-CLIP's README table); with --save-predictions
predictions/ (semantic label PNGs, COCO panoptic PNGs + panoptic.json, COCO instance results);
with --visualize visualizations/ (overlays). Exit status: 0 ok, 1 evaluation error, 2 bad usage
or missing data/weights.
"""

SUITES = ("fcclip",)


def suite_columns() -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """FC-CLIP README table, from the dataset catalog: (column label, benchmark, metrics)."""
    from ovseg.data.catalog import suite_specs

    return tuple((s.suite_label or s.name, s.name, s.suite_metrics) for s in suite_specs())


def __getattr__(name: str) -> Any:
    if name == "SUITE_COLUMNS":  # the old constant, now a view of the catalog
        return suite_columns()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class UsageError(Exception):
    """Bad command line or missing input: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="test.py",
        description="Evaluate an ovseg / FC-CLIP model: mIoU, PQ and mask AP on a test set or on "
        "FC-CLIP's zero-shot benchmark suite.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG", help="model config YAML")
    p.add_argument(
        "--weights",
        metavar="W",
        help="ovseg or official FC-CLIP checkpoint, an export folder (tools/export.py), or a "
        "model-zoo name (omit: RANDOM weights)",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--dataset",
        metavar="NAME",
        help="a prepared benchmark under $OVSEG_DATA (ade20k-150, ade20k-847, pascal-context-59, "
        "pascal-context-459, pascal-voc-20, pascal-voc-21, cityscapes, mapillary-vistas, "
        "coco-panoptic, ovcamo: <data root>/ovcamo/splitted_ovcamo.yaml or --data-root YAML); "
        "default: the config's data.test",
    )
    src.add_argument("--suite", choices=SUITES, help="every benchmark of FC-CLIP's table")
    p.add_argument(
        "--task",
        choices=("semantic", "instance", "panoptic", "all"),
        default="all",
        help="what to score (default all: every task the ground truth supports)",
    )
    p.add_argument("--out", metavar="DIR", help="write metrics.json (and outputs) here")
    p.add_argument(
        "--save-predictions",
        action="store_true",
        help="export predictions in standard formats under DIR/predictions",
    )
    p.add_argument(
        "--visualize", action="store_true", help="write overlays under DIR/visualizations"
    )
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images of each set")
    p.add_argument(
        "--convention",
        choices=("detectron2", "mmseg"),
        default="detectron2",
        help="semantic NaN rules (default detectron2, as FC-CLIP's table)",
    )
    p.add_argument("--data-root", metavar="DIR", help="benchmark data root (default $OVSEG_DATA)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="image-decoding processes per rank (default: 4 on GPU, 0 on CPU)",
    )
    p.add_argument(
        "--per-class",
        action="store_true",
        help="also print per-class IoU / Acc, panopticapi's table and the 12 COCO stats",
    )
    p.add_argument(
        "--single-object",
        choices=("semantic-sum", "best-query"),
        default="semantic-sum",
        help="--dataset ovcamo: how one class + one soft mask is chosen per image (default "
        "semantic-sum: the class with the largest total score and its semantic map)",
    )
    p.add_argument(
        "--descriptions",
        metavar="FILE",
        help="CuPL JSON {class: [sentence, ...]} describing classes of the evaluated vocabulary "
        "(= model.text.descriptions=FILE; see model.text.description_mode)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("opts", nargs="*", metavar="KEY=VALUE", help="config overrides")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 evaluation error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    try:
        return _run(args)
    except UsageError as e:
        print(f"test.py: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from ovseg.config import ConfigError, load_config
    from ovseg.data.datasets import DatasetError
    from ovseg.evaluation.errors import EvaluationError
    from ovseg.utils.dist import destroy_distributed, init_distributed

    bad = [o for o in args.opts if "=" not in o]
    if bad:
        raise UsageError(f"unexpected argument(s) {bad}: config overrides look like key.sub=value")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    if (args.save_predictions or args.visualize) and not args.out:
        raise UsageError("--save-predictions / --visualize need --out DIR")
    weights = _check_weights(args.weights)
    if args.descriptions:
        from ovseg.text.vocabulary import load_descriptions

        try:
            load_descriptions(args.descriptions)
        except (ValueError, FileNotFoundError) as e:
            raise UsageError(f"--descriptions: {e}") from None
        args.opts = [*args.opts, f"model.text.descriptions={args.descriptions}"]
    try:
        cfg = load_config(args.config, args.opts)
        cfg.model.test.check_task(args.task, asked="--task {}")
    except ConfigError as e:
        raise UsageError(str(e)) from None
    info = init_distributed("cpu" if args.device == "cpu" else "auto")
    rank = info.rank
    try:
        device = args.device or str(info.device)
        if info.world_size > 1 and info.device.type == "cuda":
            device = str(info.device)
        if args.dataset == "ovcamo":
            return _run_ovcamo(args, cfg, weights, device, rank)
        # Data first: a missing split fails before the model is built.
        if args.suite:
            benches, missing = _suite_sources(args, rank)
        else:
            source = _single_source(args, cfg, rank)
        segmenter = _build_segmenter(args.config, cfg, weights, args.opts, device, rank)
        meta = {"weights": str(weights) if weights else None, "config": str(args.config)}
        size_overridden = any(
            o.split("=", 1)[0].strip() in ("model.test.min_size", "model.test.max_size")
            for o in args.opts
        )
        try:
            if args.suite:
                return _run_suite(args, segmenter, benches, missing, meta, size_overridden, rank)
            result = _evaluate_one(args, segmenter, source, args.out, meta, size_overridden)
        except (EvaluationError, DatasetError) as e:
            print(f"test.py: error: {e}", file=sys.stderr)
            return 1
        if rank == 0:
            from ovseg.evaluation.runner import format_summary

            if args.per_class:
                print(format_details(result))
            print(format_summary(result))
            if args.out:
                print(f"wrote {Path(args.out) / 'metrics.json'}")
        return 0
    finally:
        destroy_distributed()


def _run_ovcamo(args, cfg, weights, device, rank) -> int:
    """OVCamo: inference + single-object adapter + the official class-aware metrics."""
    from ovseg.data.ovcamo import OVCamoLayoutError, load_ovcamo_info, ovcamo_info_path
    from ovseg.evaluation.errors import EvaluationError
    from ovseg.evaluation.ovcamo import run_ovcamo

    if not args.out:
        raise UsageError("--dataset ovcamo needs --out DIR (predictions are written there)")
    path = ovcamo_info_path(args.data_root)
    if not path.is_file():
        raise UsageError(
            f"OVCamo info file {path} not found: run tools/prepare_data.py ovcamo --src ... "
            "--dst <data root>/ovcamo, or pass --data-root DIR (or the yaml itself)"
        )
    try:
        info = load_ovcamo_info(path)
        segmenter = _build_segmenter(args.config, cfg, weights, args.opts, device, rank)
        result = run_ovcamo(
            segmenter,
            info,
            args.out,
            strategy=args.single_object,
            limit=args.limit,
            progress=not args.no_progress,
        )
    except (EvaluationError, OVCamoLayoutError) as e:
        print(f"test.py: error: {e}", file=sys.stderr)
        return 1
    from ovseg.evaluation.ovcamo import format_ovcamo

    print(format_ovcamo({**result, "metrics": result["ovcamo"]}))
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    return 0


def _check_weights(weights: str | None) -> str | None:
    if weights is None:
        if int(os.environ.get("RANK", "0")) == 0:
            bar = "!" * 78
            print(
                f"{bar}\nWARNING: no --weights given: the model is RANDOMLY initialised and its "
                f"metrics are\nmeaningless (fine for a smoke test only).\n{bar}",
                file=sys.stderr,
            )
        return None
    path = Path(weights).expanduser()
    if path.is_file() or path.is_dir():  # a checkpoint, or an export folder (tools/export.py)
        return str(path)
    looks_like_path = path.suffix != "" or len(path.parts) > 1
    if looks_like_path:
        raise UsageError(f"weights file not found: {path}")
    return weights  # a model-zoo name


def _build_segmenter(config_path, cfg, weights, overrides, device, rank):
    import torch

    from ovseg.checkpoint import CheckpointError
    from ovseg.inference.onnx_backend import ExportFormatError
    from ovseg.inference.segmenter import Segmenter

    # The same random initialisation on every rank and run (whatever weights do not overwrite).
    torch.manual_seed(0)
    try:
        if weights is not None and Path(weights).is_dir():  # an export carries its own config
            return Segmenter.from_pretrained(weights, device=device, overrides=overrides)
        if weights is not None and not Path(weights).is_file():
            return Segmenter.from_pretrained(
                weights, config=cfg, device=device, overrides=overrides
            )
        return Segmenter.from_config(cfg, weights=weights, device=device)
    except (CheckpointError, ExportFormatError) as e:
        raise UsageError(str(e)) from None
    except KeyError as e:  # unknown zoo name
        raise UsageError(e.args[0] if e.args else str(e)) from None


def _tasks_arg(task: str) -> list[str] | None:
    return None if task == "all" else [task]


def _load_benchmark(name: str, args: argparse.Namespace, tasks: Sequence[str] | None):
    from ovseg.data.benchmarks import load_benchmark

    try:
        return load_benchmark(name, args.data_root, tasks)
    except KeyError as e:
        raise UsageError(e.args[0] if e.args else str(e)) from None


def _single_source(args: argparse.Namespace, cfg: Any, rank: int) -> Any:
    from ovseg.data import build_dataset
    from ovseg.data.benchmarks import BenchmarkNotFoundError
    from ovseg.data.catalog import DATASETS, canonical

    name = args.dataset
    test = cfg.data.test
    unset = not any((test.image_root, test.panoptic_json, test.image_dir, test.label_dir))
    if name is None and unset:
        vocab = canonical(cfg.model.test.vocabulary or "")
        if vocab not in DATASETS:
            raise UsageError(
                f"{args.config} has no data.test: set data.test.* (e.g. data.test.type="
                "coco_panoptic data.test.image_root=...) or pass --dataset NAME / --suite fcclip"
            )
        name = vocab
        if rank == 0:
            print(f"no data.test in {args.config}: evaluating benchmark {name!r} "
                  "(model.test.vocabulary)", file=sys.stderr)  # fmt: skip
    if name is not None:
        try:
            return _load_benchmark(name, args, _tasks_arg(args.task))
        except (BenchmarkNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from None
    from ovseg.data.datasets import DatasetError

    try:
        return build_dataset(test, train=False)
    except DatasetError as e:
        raise UsageError(str(e)) from None


def resolve_test_size(source: Any, current: tuple[int, int], overridden: bool) -> tuple[int, int]:
    """(short side, long side cap) to test ``source`` at: a benchmark's FC-CLIP size unless
    ``model.test.min_size`` / ``max_size`` were given on the command line; else ``current``."""
    from ovseg.data.benchmarks import Benchmark

    if isinstance(source, Benchmark) and not overridden:
        return source.min_size_test, source.max_size_test
    return current


def _evaluate_one(args, segmenter, source, out_dir, meta, size_overridden) -> dict[str, Any]:
    from ovseg.evaluation.runner import evaluate

    t = segmenter.config.model.test
    saved = (t.min_size, t.max_size)
    t.min_size, t.max_size = resolve_test_size(source, saved, size_overridden)
    try:
        return evaluate(
            segmenter,
            source,
            tasks=args.task,
            convention=args.convention,
            out_dir=out_dir,
            save_predictions=args.save_predictions,
            visualize=args.visualize,
            limit=args.limit,
            progress=not args.no_progress,
            meta=meta,
            num_workers=args.workers
            if args.workers is not None
            else (4 if segmenter.device.type == "cuda" else 0),
        )
    finally:
        t.min_size, t.max_size = saved


# ---------------------------------------------------------------------------------- suite
def _suite_sources(args, rank) -> tuple[list[Any], dict[str, str]]:
    """The suite's prepared benchmarks (in FC-CLIP's column order) and the missing ones."""
    from ovseg.data.benchmarks import BenchmarkNotFoundError
    from ovseg.data.catalog import suite_specs

    benches: list[Any] = []
    missing: dict[str, str] = {}
    for spec in suite_specs():
        name, suite_tasks = spec.name, spec.suite_tasks
        if args.task != "all" and args.task not in suite_tasks:
            continue
        tasks = list(suite_tasks) if args.task == "all" else [args.task]
        try:
            benches.append(_load_benchmark(name, args, tasks))
        except (BenchmarkNotFoundError, ValueError) as e:
            missing[name] = str(e)
            if rank == 0:
                print(f"skipping {name}: {e}", file=sys.stderr)
    if not benches:
        raise UsageError(
            f"no benchmark of the {args.suite} suite is prepared under "
            f"{args.data_root or os.environ.get('OVSEG_DATA', 'data')} (see the messages above)"
        )
    return benches, missing


def _run_suite(args, segmenter, benches, missing, meta, size_overridden, rank) -> int:
    from ovseg.evaluation.runner import format_summary

    results: dict[str, Any] = {}
    for bench in benches:
        name = bench.name
        out = Path(args.out) / name if args.out else None
        results[name] = _evaluate_one(args, segmenter, bench, out, meta, size_overridden)
        if rank == 0:
            if args.per_class:
                print(format_details(results[name]))
            print(format_summary(results[name]))
    if rank == 0:
        table = suite_table(results)
        print(format_suite_markdown(table, missing))
        if args.out:
            from ovseg.utils.io import atomic_write_json

            out = Path(args.out)
            suite = {
                "table": table,
                "benchmarks": {k: _headline(v) for k, v in results.items()},
                "missing": missing,
                "meta": {**meta, "convention": args.convention},
            }
            atomic_write_json(out / "suite.json", suite)
            (out / "suite.md").write_text(format_suite_markdown(table, missing) + "\n",
                                          encoding="utf-8")  # fmt: skip
            print(f"wrote {out / 'suite.json'} and {out / 'suite.md'}")
    return 0


def format_details(result: dict[str, Any]) -> str:
    """The offline evaluator's tables (``python -m ovseg.evaluation``) of every task present."""
    from ovseg.evaluation.cli import format_instance, format_panoptic, format_semantic

    parts = []
    if "semantic" in result:
        parts.append(format_semantic(result["semantic"]))
    if "panoptic" in result:
        parts.append(format_panoptic(result["panoptic"]))
    if "instance" in result:
        parts.append(format_instance(result["instance"]))
    return "\n\n".join(parts)


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    from ovseg.evaluation.runner import summarize

    return {"metrics": summarize(result), "meta": result.get("meta", {})}


def suite_table(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """FC-CLIP's README row: ``"ADE20K PQ"`` ... ``"COCO mIoU"`` -> value in percent, or None
    where the benchmark or task was not evaluated."""
    from ovseg.evaluation.runner import summarize

    row: dict[str, float | None] = {}
    for label, bench, metrics in suite_columns():
        s = summarize(results[bench]) if bench in results else {}
        for m in metrics:
            v = s.get(m)
            row[f"{label} {m}"] = None if v is None or not math.isfinite(v) else float(v)
    return row


def format_suite_markdown(
    table: dict[str, float | None], missing: dict[str, str] | None = None
) -> str:
    """The suite row as a Markdown table in FC-CLIP's README column order (``-`` = not run)."""
    head = "| " + " | ".join(table) + " |"
    rule = "|" + "|".join(":---:" for _ in table) + "|"
    row = "| " + " | ".join("-" if v is None else f"{v:.1f}" for v in table.values()) + " |"
    lines = [head, rule, row]
    if missing:
        lines += ["", "Not evaluated (data missing): " + ", ".join(missing)]
    return "\n".join(lines)
