"""Segment images with any vocabulary and write an overlay, a label map and a JSON per image.

``python demo/demo.py`` and the ``ovseg-demo`` console script both call :func:`main`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ovseg.cli import common
from ovseg.cli.common import load_vocabulary
from ovseg.utils.image import ImageLoadError, load_image

if TYPE_CHECKING:
    from ovseg.inference.segmenter import Segmenter

TASK_CHOICES = ("panoptic", "semantic", "instance")
_OUTPUT_SUFFIXES = ("_overlay.png", *(f"_{t}.png" for t in TASK_CHOICES))

EPILOG = """\
examples:
  # official FC-CLIP weights: the config that describes them + the checkpoint; your own classes
  # (';' between classes, ',' between synonyms, [stuff] marks a stuff class)
  python demo/demo.py --config fcclip/fcclip_convnext_large_eval_ade20k.yaml \\
      --weights fcclip_cocopan.pth --input demo/examples/chelsea.jpg \\
      --vocab "cat, kitten; wooden table, table [stuff]; wall [stuff]" --output out/

  # an ovseg checkpoint (it carries its config) or a model-zoo name; a folder of images,
  # a built-in dataset vocabulary, semantic segmentation
  python demo/demo.py --model my_ovseg_model.pth --input demo/examples/ \\
      --dataset-vocab ade20k-150 --task semantic --output out/

  # a glob, classes from a file (.txt: one class per line; .json: [{"name", "isthing"}])
  python demo/demo.py --model my_ovseg_model.pth --input "photos/*.jpg" --vocab-file classes.txt \\
      --task instance --score-threshold 0.3 --output out/

  # the tiny random-weight test model (runs anywhere in seconds; its output is noise)
  python demo/demo.py --config tests/fcclip_tiny.yaml --input demo/examples/ \\
      --vocab "person; cat; cup" --output out/ --device cpu

outputs, per input image <stem>:
  <stem>_overlay.png   the image with each segment tinted and outlined, legend panel on the right
  <stem>_<task>.png    raw labels: semantic = class index (8/16-bit grey), panoptic = segment id
                       (COCO RGB encoding, id = R + 256 G + 256^2 B), instance = instance id (16-bit)
  <stem>.json          image size, task, vocabulary and one row per segment:
                       id, category_id, label, isthing, score, area, bbox [x0, y0, x1, y1)

Images that cannot be read are reported on stderr with their path; the others are still
processed, and the exit status is 1 if any image failed (2 for a usage or set-up error).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="demo.py",
        description="Open-vocabulary segmentation of images: name the classes, get an overlay PNG, "
        "a raw label PNG and a JSON of segments per image.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common.add_model_arguments(p)
    common.add_vocabulary_arguments(p)

    io = p.add_argument_group("input and output")
    io.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="IMG|DIR|GLOB|LIST",
        help="image files, folders (their images, not recursive), quoted glob patterns or .txt "
        "lists of image paths (one per line)",
    )
    io.add_argument("--output", required=True, metavar="DIR", help="output folder (created)")
    io.add_argument("--task", choices=TASK_CHOICES, default="panoptic", help="default: panoptic")
    io.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default: 0.5)")
    io.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="instance task: drop instances scoring below this (default: 0.5)",
    )
    return p


def _is_output_file(path: Path) -> bool:
    return path.name.endswith(_OUTPUT_SUFFIXES) or path.suffix.lower() == ".json"


def collect_inputs(
    specs: list[str], output_dir: str | os.PathLike | None = None
) -> tuple[list[Path], list[str]]:
    """:func:`ovseg.cli.common.collect_inputs`, skipping the demo's own outputs in the output
    folder, so that running twice into the input folder does not segment the overlays.

    Returns:
        (images, problems): the image paths, and one message per spec that matched nothing.
    """
    out = Path(output_dir).resolve() if output_dir is not None else None

    def exclude(c: Path) -> bool:
        return out is not None and c.parent.resolve() == out and _is_output_file(c)

    return common.collect_inputs(specs, exclude)


def output_stems(paths: list[Path]) -> list[str]:
    """A distinct output stem per input: the file stem, disambiguated only where stems collide.

    ``a.jpg`` and ``a.png`` become ``a_jpg`` and ``a_png``; two ``x.jpg`` from different folders
    become ``x_jpg`` and ``x_jpg_2``.
    """
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    stems: list[str] = []
    used: set[str] = set()
    for p in paths:
        stem = p.stem if counts[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}"
        candidate, k = stem, 1
        while candidate in used:
            k += 1
            candidate = f"{stem}_{k}"
        used.add(candidate)
        stems.append(candidate)
    return stems


def overwrite_clashes(
    images: list[Path], stems: list[str], out_dir: str | os.PathLike, task: str
) -> dict[Path, Path]:
    """Inputs whose outputs would overwrite an input image: {input: the output in the way}.

    The demo never writes over an input (e.g. ``a.jpg`` next to an input named ``a_overlay.png``
    in the output folder); such inputs are reported as failures instead.
    """
    from ovseg.visualization.export import output_paths

    protected = {p.resolve() for p in images}
    clashes: dict[Path, Path] = {}
    for path, stem in zip(images, stems):
        for target in output_paths(out_dir, stem, task).values():
            if target.resolve() in protected:
                clashes[path] = target
                break
    return clashes


def _error(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status (0 ok, 1 some images failed, 2 usage/set-up error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    common.check_model_arguments(parser, args)
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must lie in [0, 1], got {args.alpha}")

    try:
        vocab = load_vocabulary(args)
    except common.VOCABULARY_ERRORS as e:
        print(common.vocabulary_error(e), file=sys.stderr)
        return 2

    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        print(f"error: --output {out_dir} exists and is not a folder", file=sys.stderr)
        return 2
    images, problems = collect_inputs(args.input, out_dir)
    for msg in problems:
        print(f"error: {msg}", file=sys.stderr)
    if not images:
        print("error: no input images", file=sys.stderr)
        return 2

    try:
        seg = _build_segmenter(args)
        seg.encode_vocabulary(vocab)  # once; predict() reuses the cached text classifier
    except Exception as e:  # one line for the user; OVSEG_DEBUG=1 shows the traceback
        if common.is_debug():
            raise
        print(f"error: could not set up the model: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if args.config and not args.weights:
        print(
            "warning: --config without --weights runs RANDOM weights: the output is noise "
            "(a set-up check); pass --weights CKPT or --model NAME for real predictions",
            file=sys.stderr,
        )
    # Created only now: a failed model set-up leaves no empty output folder behind.
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: cannot create --output {out_dir}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:
        seg.config.model.test.check_task(args.task, asked="--task {}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from tqdm import tqdm

    from ovseg.visualization.export import save_prediction

    failures: list[Path] = []
    stems = output_stems(images)
    clashes = overwrite_clashes(images, stems, out_dir, args.task)
    bar = tqdm(
        list(zip(images, stems)),
        desc="segmenting",
        unit="img",
        disable=len(images) < 2,
        file=sys.stderr,
    )
    for path, stem in bar:
        try:
            if path in clashes:
                raise ValueError(f"its output {clashes[path]} would overwrite an input image")
            image = load_image(path, max_pixels=seg.config.model.test.max_image_pixels)
            pred = seg.predict(image, vocab, task=args.task)
            save_prediction(
                pred,
                image,
                out_dir,
                stem,
                args.task,
                alpha=args.alpha,
                score_threshold=args.score_threshold,
                source=str(path),
            )
        except ImageLoadError as e:
            failures.append(path)
            _error(str(e))
        except Exception as e:  # keep going past one bad image; report it with its path
            if common.is_debug():
                raise
            failures.append(path)
            _error(f"{path}: {type(e).__name__}: {e}")
    bar.close()

    done = len(images) - len(failures)
    print(f"wrote {done} of {len(images)} images to {out_dir}", file=sys.stderr)
    if failures:
        failed = ", ".join(str(p) for p in failures)
        print(f"{len(failures)} image(s) failed: {failed}", file=sys.stderr)
    if failures or problems:
        return 1
    return 0


def _build_segmenter(args: argparse.Namespace) -> Segmenter:
    return common.build_segmenter(args.config, args.model, args.weights, args.opts, args.device)


if __name__ == "__main__":
    sys.exit(main())
