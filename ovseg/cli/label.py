"""Label a folder (or a list) of images with any vocabulary: COCO annotations, resumable.

``python tools/label.py``, ``torchrun --nproc-per-node N tools/label.py`` and the
``ovseg-label`` console script all call :func:`main`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ovseg.cli import common

TASK_CHOICES = ("panoptic", "instance", "semantic")
BACKENDS = ("auto", "local", "torchrun", "ray")

EPILOG = """\
examples:
  # a folder of images, your classes, COCO panoptic-style annotations (RLE masks)
  python tools/label.py --model my_ovseg_model.pth --input photos/ \\
      --vocab "person; dog; bicycle; road [stuff]; sky [stuff]" --output labels/

  # official FC-CLIP weights, a built-in vocabulary, instances scoring >= 0.3, batches of 4
  python tools/label.py --config fcclip/fcclip_convnext_large_eval_ade20k.yaml \\
      --weights fcclip_cocopan.pth --input "data/**/*.jpg" --dataset-vocab coco-panoptic \\
      --task instance --min-score 0.3 --batch-size 4 --output labels/

  # a list of paths (one per line), 8 GPUs on this node; rerun the same command to resume
  torchrun --nproc-per-node 8 tools/label.py --model my_ovseg_model.pth \\
      --input images.txt --vocab-file classes.txt --output labels/

  # Ray Data: a local Ray started for the run, or an existing cluster (--ray-address auto)
  python tools/label.py --model my_ovseg_model.pth --input images.txt --vocab-file classes.txt \\
      --output /shared/labels --backend ray --ray-actors 4

  # the tiny random-weight test model (runs anywhere in seconds; its output is noise)
  python tools/label.py --config tests/fcclip_tiny.yaml --input demo/examples/ \\
      --vocab "person; cat; cup" --output out/ --device cpu

outputs, in OUTPUT:
  annotations.json   COCO: images (id = position in the input list, 1-based), categories (id =
                     vocabulary index + 1, canonical name, isthing), annotations (RLE
                     segmentation, bbox [x, y, w, h], area, score, category_id, iscrowd 0);
                     file_name is relative to info.image_root
  panoptic.json + panoptic/*.png   (--task panoptic --save-png) COCO-panoptic
  run.json           config, weights, vocabulary, task, min-score, versions
  per_image/         one JSON per finished image (a rerun skips them)
  failed.txt         "path<TAB>reason" per image that could not be labelled

Exit status: 0 all images labelled, 1 some failed (listed in failed.txt), 2 usage or set-up
error (including OUTPUT holding a different run: pass --overwrite to start again).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="label.py",
        description="Label many images with an open vocabulary: COCO annotations (RLE masks) "
        "from one process, torchrun ranks or Ray actors; stops and resumes at any point.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common.add_model_arguments(p, required=False)
    common.add_vocabulary_arguments(p, required=False)
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--input",
        nargs="+",
        metavar="IMG|DIR|GLOB|LIST",
        help="image files, folders (not recursive), quoted glob patterns ('**' recurses) or .txt "
        "lists of image paths (one per line, relative to the list's folder)",
    )
    io.add_argument("--output", required=True, metavar="DIR", help="output folder (created)")
    io.add_argument("--task", choices=TASK_CHOICES, default="panoptic", help="default: panoptic")
    io.add_argument(
        "--min-score",
        type=float,
        default=0.0,
        metavar="S",
        help="leave out annotations scoring below S (default: 0, keep all)",
    )
    io.add_argument(
        "--save-png",
        action="store_true",
        help="also write the task's label PNG per image (panoptic: COCO-panoptic PNG + JSON)",
    )
    io.add_argument("--overwrite", action="store_true", help="discard a previous run in OUTPUT")
    io.add_argument(
        "--merge-only",
        action="store_true",
        help="only (re)write annotations.json from OUTPUT's per-image results",
    )
    run = p.add_argument_group("execution")
    run.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto (default): torchrun when launched by torchrun, else local",
    )
    run.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    run.add_argument(
        "--workers",
        type=int,
        default=2,
        help="data-loader processes reading and resizing images (local/torchrun; default 2)",
    )
    run.add_argument("--ray-address", metavar="ADDR", help="an existing Ray cluster ('auto')")
    run.add_argument("--ray-actors", type=int, default=1, help="Ray actors (model copies)")
    run.add_argument("--ray-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    run.add_argument(
        "--ray-cpus-per-actor", type=float, default=1.0, help="CPUs reserved per Ray actor"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the labeller; returns the exit status (0 ok, 1 some images failed, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    common.check_model_arguments(parser, args)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers < 0:
        parser.error(f"--workers must be 0 or more, got {args.workers}")
    if args.ray_actors < 1:
        parser.error(f"--ray-actors must be at least 1, got {args.ray_actors}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        return _fail(f"--output {out} exists and is not a folder")
    if args.merge_only:
        return _merge_only(args, out)
    if args.config is None and args.model is None:
        parser.error("one of --config or --model is required")
    if args.vocab is None and args.vocab_file is None and args.dataset_vocab is None:
        parser.error("one of --vocab, --vocab-file or --dataset-vocab is required")
    if not args.input:
        parser.error("--input is required")

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    backend = args.backend
    if backend == "auto":
        backend = "torchrun" if world > 1 else "local"
    if backend == "ray" and world > 1:
        return _fail("--backend ray runs from one driver process: launch it without torchrun")
    if backend == "ray":
        try:
            from ovseg.labelling.ray_backend import import_ray

            import_ray()
        except ImportError as e:
            return _fail(str(e))
    return _label(args, out, backend)


def _label(args: argparse.Namespace, out: Path, backend: str) -> int:
    from ovseg.utils import dist

    info = None
    if backend == "torchrun":
        want_cuda = (args.device or "").startswith("cuda")
        info = dist.init_distributed(
            device="cuda" if want_cuda else "auto", timeout_s=7 * 24 * 3600.0
        )
    try:
        return _label_in_group(args, out, backend, info)
    finally:
        if info is not None:
            dist.destroy_distributed()


def _label_in_group(args: argparse.Namespace, out: Path, backend: str, info: Any) -> int:
    from ovseg.labelling import LabelStore, RunMismatchError, merge_run, work_items
    from ovseg.labelling.engine import (
        Counts,
        Labeller,
        classifier_from_payload,
        classifier_payload,
        label_local,
    )
    from ovseg.utils import dist

    rank = dist.get_rank()
    main_process = rank == 0

    def agree(error: str | None) -> str | None:
        """Rank 0's verdict, on every rank (so all ranks stop together)."""
        return dist.broadcast_object(error)

    # --- what to label (rank 0 decides; the others follow)
    error = None
    vocab = items = None
    try:
        vocab = common.load_vocabulary(args)
    except common.VOCABULARY_ERRORS as e:
        error = common.vocabulary_error(e)[len("error: ") :]
    if error is None and main_process:
        root = out.resolve()
        images, problems = common.collect_inputs(
            args.input, exclude=lambda c: root in c.resolve().parents
        )
        for msg in problems:
            print(f"error: {msg}", file=sys.stderr)
        if not images:
            error = "no input images"
        items = work_items(images)
    error = agree(error)
    if error is not None:
        return _fail(error)
    items = dist.broadcast_object(items)

    # --- the model (every rank, or the Ray driver), the run's identity
    device = args.device
    if info is not None and info.device.type == "cuda":
        device = str(info.device)
    spec = common.model_spec(args.config, args.model, args.weights, args.opts, device)
    store = LabelStore(out)
    try:
        seg = spec.build()
        seg.config.model.test.check_task(args.task, asked="--task {}")
    except Exception as e:  # one line for the user; OVSEG_DEBUG=1 shows the traceback
        if common.is_debug():
            raise
        error = f"could not set up the model: {type(e).__name__}: {e}"
    error = next((e for e in dist.all_gather_object(error) if e is not None), None)
    if error is not None:
        return _fail(error)

    run = _run_record(args, seg, spec, vocab, backend)
    if main_process:
        try:
            out.mkdir(parents=True, exist_ok=True)
            if args.overwrite:
                store.clear()
            store.check_run(run)
            store.write_run(run)
            store.write_inputs(items)
        except RunMismatchError as e:
            error = f"{e}; pass --overwrite to start again"
        except OSError as e:
            error = f"cannot write to {out}: {e}"
    error = agree(error)
    if error is not None:
        return _fail(error)

    # --- the text classifier: encoded once (rank 0 / the driver), shared with every worker
    payload = classifier_payload(seg.encode_vocabulary(vocab)) if main_process else None
    payload = dist.broadcast_object(payload)
    text = classifier_from_payload(payload)

    pending = store.pending(items) if main_process else None
    pending = dist.broadcast_object(pending)
    skipped = len(items) - len(pending)
    if main_process and skipped:
        print(f"resuming: {skipped} of {len(items)} images already labelled", file=sys.stderr)

    progress = not args.no_progress and main_process
    started = time.perf_counter()
    if backend == "ray":
        from ovseg.labelling.ray_backend import label_ray

        del seg  # the actors build their own copies
        counts = label_ray(
            spec, vocab, payload, out, pending, args.task, args.min_score, args.save_png,
            batch_size=args.batch_size, actors=args.ray_actors, address=args.ray_address,
            num_cpus=args.ray_cpus, cpus_per_actor=args.ray_cpus_per_actor, progress=progress,
        )  # fmt: skip
    else:
        world = dist.get_world_size()
        shard = pending[rank::world]
        labeller = Labeller(seg, vocab, store, args.task, args.min_score, args.save_png, text=text)
        counts = label_local(
            labeller,
            shard,
            batch_size=args.batch_size,
            num_workers=args.workers,
            progress=progress,
            desc="labelling" if world == 1 else f"labelling (rank 0 of {world})",
        )
    totals = Counts()
    for c in dist.all_gather_object(counts):
        totals += c
    dist.barrier()
    seconds = time.perf_counter() - started
    if not main_process:
        return 1 if totals.failed else 0
    summary = merge_run(store, items, vocab, args.task, args.save_png, _info(run))
    print(
        f"labelled {totals.done} images in {seconds:.1f} s "
        f"({totals.done / max(seconds, 1e-9):.2f} images/s; {skipped} already done, "
        f"{summary.failed} failed): "
        f"{summary.images} images, {summary.annotations} annotations in "
        f"{summary.paths['annotations']}",
        file=sys.stderr,
    )
    if summary.failed:
        print(f"{summary.failed} image(s) failed: see {summary.paths['failed']}", file=sys.stderr)
    if summary.missing:
        print(f"{summary.missing} image(s) not labelled yet: run again", file=sys.stderr)
    return 1 if summary.failed or summary.missing else 0


def _run_record(
    args: argparse.Namespace, seg: Any, spec: Any, vocab: Any, backend: str
) -> dict[str, Any]:
    """run.json: what identifies the run (checked on resume) and how it was made."""
    from ovseg.cli.train import environment_summary
    from ovseg.config import to_yaml

    return {
        "tool": "ovseg-label",
        "config": to_yaml(seg.config),
        "weights": spec.weights_identity(),
        "vocabulary": vocab.to_json(),
        "task": args.task,
        "min_score": args.min_score,
        "save_png": bool(args.save_png),
        "model": {
            "config": args.config,
            "model": args.model,
            "weights": args.weights,
            "opts": list(args.opts),
        },
        "backend": backend,
        "batch_size": args.batch_size,
        "versions": environment_summary(),
    }


def _info(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": "ovseg-label",
        "task": run["task"],
        "min_score": run["min_score"],
        "model": run["model"],
        "weights": run["weights"],
    }


def _merge_only(args: argparse.Namespace, out: Path) -> int:
    from ovseg.labelling import LabelStore, RunMismatchError, merge_run, work_items
    from ovseg.text.vocabulary import Vocabulary

    store = LabelStore(out)
    try:
        run = store.read_run()
    except RunMismatchError as e:
        return _fail(str(e))
    if run is None:
        return _fail(f"{out / 'run.json'} not found: nothing to merge")
    if args.input:
        images, problems = common.collect_inputs(args.input)
        for msg in problems:
            print(f"error: {msg}", file=sys.stderr)
        paths = [str(p) for p in images]
    else:
        try:
            paths = store.read_inputs()
        except FileNotFoundError as e:
            return _fail(str(e))
    entries = run["vocabulary"]
    vocab = Vocabulary(
        [e["name"] for e in entries],
        isthing=[e["isthing"] for e in entries],
        ids=[e["id"] for e in entries] if all("id" in e for e in entries) else None,
        allow_duplicates=True,
    )
    summary = merge_run(
        store, work_items(paths), vocab, run["task"], bool(run.get("save_png")), _info(run)
    )
    print(
        f"merged {summary.images} images, {summary.annotations} annotations into "
        f"{summary.paths['annotations']} ({summary.failed} failed, {summary.missing} not done)",
        file=sys.stderr,
    )
    return 1 if summary.failed or summary.missing else 0


if __name__ == "__main__":
    sys.exit(main())
