"""Flags and helpers the image tools share (demo, label): model, vocabulary and input listing.

One parser for each: ``--config/--model/--weights/--opts/--device``,
``--vocab/--vocab-file/--dataset-vocab`` and ``--input IMG|DIR|GLOB|LIST.txt``.
"""

from __future__ import annotations

import argparse
import glob
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ovseg.text.vocabulary import Vocabulary, builtin_names, load_descriptions
from ovseg.utils.env import env_flag
from ovseg.utils.image import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    from ovseg.inference.segmenter import Segmenter
    from ovseg.inference.spec import ModelSpec

#: A ``--input`` file with this suffix is a list of image paths, one per line.
FILE_LIST_SUFFIX = ".txt"


def add_model_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    """``--config YAML [--weights CKPT] | --model NAME_OR_PATH``, ``--opts``, ``--device``."""
    model = p.add_argument_group("model (one of)")
    src = model.add_mutually_exclusive_group(required=required)
    src.add_argument("--config", metavar="YAML", help="model config (with --weights, or random)")
    src.add_argument(
        "--model",
        metavar="NAME_OR_PATH",
        help="an ovseg checkpoint or a model-zoo name (official FC-CLIP weights: --config + --weights)",
    )
    model.add_argument(
        "--weights",
        metavar="CKPT",
        help="ovseg or official FC-CLIP checkpoint for --config (omit: random init)",
    )
    model.add_argument(
        "--opts",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. model.backbone.pretrained=null",
    )
    model.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)"
    )


def add_vocabulary_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    """Exactly one of ``--vocab``, ``--vocab-file``, ``--dataset-vocab``."""
    vocab = p.add_argument_group("vocabulary (one of)")
    v = vocab.add_mutually_exclusive_group(required=required)
    v.add_argument(
        "--vocab",
        metavar="TEXT",
        help='classes separated by ";", synonyms by ",", "[stuff]" marks a stuff class: '
        '"zebra; dry grass, hay [stuff]; sky [stuff]"',
    )
    v.add_argument("--vocab-file", metavar="FILE", help=".txt (one class per line) or .json")
    v.add_argument(
        "--dataset-vocab",
        metavar="NAME",
        help=f"a built-in dataset vocabulary: {', '.join(builtin_names())}",
    )
    vocab.add_argument(
        "--descriptions",
        metavar="FILE",
        help="CuPL JSON {class: [sentence, ...]}: sentences describing some classes, used beside "
        "or instead of the templates (model.text.description_mode)",
    )


def check_model_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors of the model flags (exit 2 through ``parser.error``)."""
    if args.weights is not None and args.config is None:
        parser.error("--weights goes with --config; with --model the checkpoint is the model")


def load_vocabulary(args: argparse.Namespace) -> Vocabulary:
    """The vocabulary the flags name (exactly one of --vocab, --vocab-file, --dataset-vocab),
    with the sentences of ``--descriptions`` attached."""
    if args.vocab is not None:
        vocab = Vocabulary.parse(args.vocab)
    elif args.vocab_file is not None:
        vocab = Vocabulary.from_file(args.vocab_file)
    else:
        vocab = Vocabulary.from_name(args.dataset_vocab)
    if getattr(args, "descriptions", None):
        vocab = vocab.with_descriptions(load_descriptions(args.descriptions), args.descriptions)
    return vocab


def vocabulary_error(e: Exception) -> str:
    """The one line to print for an exception :func:`load_vocabulary` raised."""
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    return f"error: bad vocabulary: {msg}"


VOCABULARY_ERRORS = (ValueError, KeyError, FileNotFoundError, TypeError)


def _is_pattern(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def read_file_list(path: Path) -> list[Path]:
    """The image paths in a ``.txt`` list: one per line, ``#`` comments and blank lines ignored,
    relative paths taken from the list's folder."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        out.append(p if p.is_absolute() else path.parent / p)
    return out


def collect_inputs(
    specs: list[str], exclude: Callable[[Path], bool] | None = None
) -> tuple[list[Path], list[str]]:
    """Expand files, folders, glob patterns and file lists into an ordered, de-duplicated list.

    Folders contribute their files with an image extension (sorted, not recursive); so do globs.
    A ``.txt`` file is a list of image paths (one per line, relative to the list's folder). A
    file named explicitly (or in a list) is always kept, whatever its extension: it fails later,
    with the others, if it is missing or not an image.

    Args:
        specs: the ``--input`` values.
        exclude: folder and glob matches for which this is true are skipped (a tool's own
            outputs in its output folder).

    Returns:
        (images, problems): the image paths, and one message per spec that matched nothing.
    """
    images: list[Path] = []
    problems: list[str] = []

    def add_listed(candidates: list[Path]) -> int:
        n = 0
        for c in candidates:
            if not c.is_file() or c.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if exclude is not None and exclude(c):
                continue
            images.append(c)
            n += 1
        return n

    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            if add_listed(sorted(path.iterdir())) == 0:
                problems.append(f"{spec}: no images in this folder ({', '.join(IMAGE_EXTENSIONS)})")
        elif _is_pattern(spec) and not path.exists():
            matches = [Path(m) for m in sorted(glob.glob(spec, recursive=True))]
            if add_listed(matches) == 0:
                problems.append(f"{spec}: no image matches this pattern")
        elif path.suffix.lower() == FILE_LIST_SUFFIX and path.is_file():
            try:
                listed = read_file_list(path)
            except (OSError, UnicodeDecodeError) as e:
                problems.append(f"{spec}: cannot read this file list ({e})")
                continue
            if not listed:
                problems.append(f"{spec}: this file list names no image")
            images.extend(listed)
        else:
            images.append(path)  # a missing file is reported when it is read, with the others
    seen: set[Path] = set()
    unique = []
    for p in images:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique, problems


def build_segmenter(
    config: str | None,
    model: str | None,
    weights: str | None,
    opts: list[str],
    device: str | None,
) -> Segmenter:
    """The Segmenter the model flags name (:meth:`ovseg.inference.spec.ModelSpec.build`)."""
    return model_spec(config, model, weights, opts, device).build()


def model_spec(
    config: str | None, model: str | None, weights: str | None, opts: list[str], device: str | None
) -> ModelSpec:
    """The model flags as a :class:`~ovseg.inference.spec.ModelSpec`."""
    from ovseg.inference.spec import ModelSpec

    return ModelSpec(
        config=config, model=model, weights=weights, overrides=tuple(opts), device=device
    )


def is_debug() -> bool:
    """``OVSEG_DEBUG=1``: let exceptions show their traceback instead of one line. Asked while
    reporting another error, so a value that is not a switch counts as on (show it all)."""
    try:
        return env_flag("OVSEG_DEBUG", False)
    except ValueError:
        return True
