"""ADE20K-847 validation from the full ADE20K release, written as FC-CLIP's
``datasets/prepare_ade20k_full_sem_seg.py`` writes it (same files, same pixel values).

Raw input (``ADE20K_2021_17_01.zip`` from https://groups.csail.mit.edu/vision/datasets/ADE20K/,
registration required, extracted into ``--src``)::

    ADE20K_2021_17_01/index_ade20k.pkl            dict: "filename", "folder" (N images each, the
                                                  folder relative to the folder holding
                                                  ADE20K_2021_17_01), "objectnames" (C names), ...
    ADE20K_2021_17_01/images/ADE/validation/<scene>/ADE_val_*.jpg
    ADE20K_2021_17_01/images/ADE/validation/<scene>/ADE_val_*_seg.png
                                                  object class = R // 10 * 256 + G, 0 unlabelled

Output (:func:`ovseg.data.benchmarks.ade20k.load_ade20k_847`)::

    ADE20K_2021_17_01/images_detectron2/validation/ADE_val_*.jpg
    ADE20K_2021_17_01/annotations_detectron2/validation/ADE_val_*.tif   uint16 0..846, 65535 ignore
    ADE20K_2021_17_01/ade20k_847_mapping.json     the class mapping used (train id -> ADE object)

What FC-CLIP's script does, and this converter repeats:

* the images are the index's files whose name has ``val`` as its second ``_`` field
  (``ADE_val_00000001.jpg``); ``training=True`` adds the others, into ``.../training/``;
* an image whose short side is over 512 is resized to short side 512 (long side
  ``round(long / short * 512)``, Python rounding): the image with ``cv2.INTER_LINEAR``, the class
  map with ``cv2.INTER_NEAREST``; smaller images keep their size;
* every image is decoded and re-encoded as JPEG with Pillow's defaults (quality 75), even when not
  resized; with ``link=True`` an image that needs no resize is symlinked instead, so its pixels are
  the original's, not FC-CLIP's re-encoded copy (a small difference; leave ``link`` off to
  reproduce FC-CLIP's files exactly);
* the class map value ``v`` is ADE object ``objectnames[v - 1]``; an object that is one of the 847
  classes becomes its train id, everything else (0 included) 65535; saved as a 16-bit TIFF.

The 847 classes are ovseg's built-in ``ade20k-847`` vocabulary (FC-CLIP's list); which ADE object
each one is gets derived from the release's own ``objectnames`` by :func:`derive_mapping`, or is
read from a user's file (:func:`read_mapping_file`).
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovseg.text.vocabulary import Vocabulary

from .common import (
    PrepareError,
    find_dir,
    inside,
    place,
    progress,
    read_array,
    read_json,
    save_label,
)

DATASET = "ade20k-847"
RELEASE = "ADE20K_2021_17_01"
HINT = (
    "download ADE20K_2021_17_01.zip from https://groups.csail.mit.edu/vision/datasets/ADE20K/ "
    "(free registration) and extract it into --src"
)
MAPPING_FILE = "ade20k_847_mapping.json"
NUM_CLASSES = 847
IGNORE = 65535
MAX_SHORT_SIDE = 512
# R // 10 * 256 + G with R, G uint8: the largest class value a _seg.png can hold.
MAX_CLASS_VALUE = 255 // 10 * 256 + 255

# --------------------------------------------------------------------------- the raw format


def ade_class_map(seg: np.ndarray) -> np.ndarray:
    """The object class of each pixel of an ADE ``*_seg.png``.

    Args:
        seg: (H, W, 3 or 4) uint8 RGB(A) as stored.

    Returns:
        (H, W) int32: ``R // 10 * 256 + G``, 0 = unlabelled, ``v >= 1`` = ``objectnames[v - 1]``
        (the toolkit's ``loadAde20K`` computes ``(R / 10).astype(int32) * 256 + G``, the same for
        uint8 R).
    """
    r = seg[..., 0].astype(np.int32)
    g = seg[..., 1].astype(np.int32)
    return r // 10 * 256 + g


# Off by one? The class value is 1-based in objectnames. Evidence (CSAILVision/ADE20K):
# * the starter notebook prints "The most common object is object car, auto, automobile, machine,
#   motorcar (400)", where 400 is the 0-based row of objectPresence / position in objectnames;
# * the same image's ADE_train_00016869.json gives that car "name_ndx": 401, and the class value
#   of a _seg.png is this MATLAB-style 1-based name_ndx (0 is left for unlabelled pixels);
# * FC-CLIP's table, keyed by the _seg.png value, gives 401 for "car, auto, automobile, ..."
#   ("building, edifice" 312 and "traffic light, traffic signal, stoplight" 2836 agree with
#   name_ndx in that json too).
# So pixel value v is objectnames[v - 1], and objectnames[i] is written as i + 1.


def fcclip_size(height: int, width: int, max_size: int = MAX_SHORT_SIDE) -> tuple[int, int] | None:
    """FC-CLIP's target (height, width) for an image, or None when it is kept as is.

    The short side is capped at ``max_size``: only an image whose short side is over it is
    resized, the long side becoming ``round(long / short * max_size)`` (Python's round, half to
    even). A square image counts as wide.
    """
    if width >= height > max_size:
        return max_size, round(width / float(height) * max_size)
    if height >= width > max_size:
        return round(height / float(width) * max_size), max_size
    return None


def is_validation(file_name: str) -> bool:
    """FC-CLIP's split rule: ``ADE_val_*`` (second ``_`` field ``val``) is validation."""
    parts = file_name.split("_")
    return len(parts) > 1 and parts[1] == "val"


# --------------------------------------------------------------------------- the index


@dataclass
class AdeIndex:
    """The part of ``index_ade20k.pkl`` the converter uses."""

    path: Path
    filenames: list[str]
    folders: list[str]
    objectnames: list[str]


# What the real index_ade20k.pkl holds: dicts, lists and strings, numpy arrays (and their dtypes
# and scalars). Nothing else is built while reading it: any other global names the file in the
# error and stops the run, so a crafted pickle cannot run code.
_INDEX_GLOBALS = frozenset(
    {
        ("builtins", n)
        for n in (
            "dict",
            "list",
            "tuple",
            "set",
            "frozenset",
            "str",
            "bytes",
            "int",
            "float",
            "bool",
            "complex",
            "bytearray",
        )  # fmt: skip
    }
    | {
        (m, n)
        for m in ("numpy.core.multiarray", "numpy._core.multiarray")
        for n in ("_reconstruct", "scalar")
    }
    | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # bytes in protocol 2
    | {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}
)


class _IndexUnpickler(pickle.Unpickler):
    """An unpickler admitting only :data:`_INDEX_GLOBALS` (builtins containers, numpy arrays)."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) in _INDEX_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing {module}.{name}: the index may hold only lists, dicts, strings and numpy "
            "arrays"
        )


def load_index(path: Path) -> AdeIndex:
    """Read ``index_ade20k.pkl`` (a pickled dict; the real one is ~800 MB) with a restricted
    unpickler: only builtins containers/strings and numpy arrays are built, never code.

    Raises:
        PrepareError: missing, not a pickle, not a dict, keys missing, or lists of unequal length.
    """
    if not path.is_file():
        raise PrepareError(f"{DATASET}: {path} not found; {HINT}")
    try:
        with open(path, "rb") as f:
            index = _IndexUnpickler(f).load()  # restricted: builtins and numpy arrays only
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a broken file
        raise PrepareError(
            f"{DATASET}: {path} is not a readable index_ade20k.pkl ({type(e).__name__}: {e}); "
            f"re-download it ({HINT})"
        ) from None
    if not isinstance(index, dict):
        raise PrepareError(
            f"{DATASET}: {path} holds a {type(index).__name__}, expected the ADE20K index dict"
        )
    missing = [k for k in ("filename", "folder", "objectnames") if k not in index]
    if missing:
        raise PrepareError(
            f"{DATASET}: {path} has no {', '.join(map(repr, missing))} "
            f"(keys: {', '.join(map(str, sorted(index)))}); is it the ADE20K_2021_17_01 index?"
        )
    lists = {}
    for key in ("filename", "folder", "objectnames"):
        values = index[key]
        try:
            values = [str(v) for v in values]
        except TypeError:
            raise PrepareError(
                f"{DATASET}: {path}: {key!r} is a {type(values).__name__}, expected a list of "
                "strings"
            ) from None
        lists[key] = values
    if len(lists["filename"]) != len(lists["folder"]):
        raise PrepareError(
            f"{DATASET}: {path}: 'filename' has {len(lists['filename'])} entries but 'folder' "
            f"{len(lists['folder'])}"
        )
    return AdeIndex(path, lists["filename"], lists["folder"], lists["objectnames"])


# --------------------------------------------------------------------------- the class mapping


@dataclass(frozen=True)
class ClassMatch:
    """847-class train id -> ADE object (``ade_index`` is the 1-based _seg.png value)."""

    train_id: int
    name: str
    ade_index: int
    ade_name: str
    rule: str
    # other ADE objects the class also matched (weaker, or taken by a better-matching class)
    alternatives: tuple[str, ...] = ()


# Matching rules, strongest first (see derive_mapping).
RULES = (
    "first name",  # the class's canonical name is the ADE object's first name
    "canonical is an ADE name",  # ... is one of the object's other names
    "ADE first name is a synonym",  # the object's first name is one of the class's synonyms
    "shared name",  # some name of the object is one of the class's synonyms
    "ADE first name inside a synonym",  # "house" in "house exterior", "fan" in "ceiling fan"
)


def _norm(name: str) -> str:
    return " ".join(name.lower().split())


def _names(objectname: str) -> list[str]:
    names = [_norm(n) for n in objectname.split(",")]
    return [n for n in names if n]


def derive_mapping(objectnames: Sequence[str], vocabulary: Vocabulary) -> list[ClassMatch]:
    """Find the ADE object of each vocabulary class, from names alone.

    Names are compared lower-cased with spaces collapsed; an ADE object name
    ``"car, auto, automobile"`` has the names ``car``, ``auto``, ``automobile``, the first being
    its own canonical name. A (class, object) pair is a candidate under the first rule of
    :data:`RULES` that holds, and is scored ``(rule, -shared, extra, -words)``: ``shared`` = how
    many of the object's names are class synonyms, ``extra`` = how many are not, ``words`` = the
    length of the phrase matched by the last rule. Then, over all candidate pairs in order of
    score, a pair is taken when both its class and its object are still free; so a class takes
    its best-matching free object and an object goes to the class it matches best (``pedestal,
    plinth, footstall`` goes to the class with those three synonyms, which leaves the class
    ``pedestal`` with ``base, pedestal, stand``; the object ``pot`` goes to the class ``pot``
    rather than to the class ``pot, flowerpot``). Two pairs of equal score that compete for a class or an object are an
    unresolvable tie.

    FC-CLIP's 847 list renames a few of ADE's objects ("house" is "house exterior", "fan" is
    "ceiling fan, floor fan", "palm, palm tree" is "palm tree"); the weaker rules exist for them.

    Args:
        objectnames: ``index_ade20k["objectnames"]`` (0-based; object ``i`` is pixel value i + 1).
        vocabulary: the classes in train-id order (ovseg's ``ade20k-847``).

    Returns:
        one :class:`ClassMatch` per class, in train-id order.

    Raises:
        PrepareError: a class with no candidate, or a tie; every such class is listed.
    """
    first: dict[str, list[int]] = {}
    anywhere: dict[str, list[int]] = {}
    obj_names = [_names(n) for n in objectnames]
    for j, names in enumerate(obj_names):
        if not names:
            continue
        first.setdefault(names[0], []).append(j)
        for n in dict.fromkeys(names):
            anywhere.setdefault(n, []).append(j)

    pairs: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    for k, cls in enumerate(vocabulary):
        synonyms = [_norm(s) for s in cls.synonyms]
        syn_set = set(synonyms)
        canonical = synonyms[0]
        found: dict[int, tuple[int, int]] = {}  # object -> (rule, matched words)

        def add(objects: list[int], rule: int, words: int = 0, found=found) -> None:
            for j in objects:
                if j not in found or (rule, -words) < (found[j][0], -found[j][1]):
                    found[j] = (rule, words)

        add(first.get(canonical, []), 0)
        add(anywhere.get(canonical, []), 1)
        for s in synonyms[1:]:
            add(first.get(s, []), 2)
        for s in synonyms:
            add(anywhere.get(s, []), 3)
        for s in synonyms:
            words = s.split()
            for n in range(len(words) - 1, 0, -1):  # proper sub-phrases, longest first
                for start in range(len(words) - n + 1):
                    add(first.get(" ".join(words[start : start + n]), []), 4, n)
        for j, (rule, words) in found.items():
            shared = sum(1 for n in obj_names[j] if n in syn_set)
            pairs[(k, j)] = (rule, -shared, len(obj_names[j]) - shared, -words)

    matched: dict[int, int] = {}  # class -> object
    taken: set[int] = set()
    ties: dict[int, str] = {}  # class -> why it cannot be decided
    by_score: dict[tuple[int, int, int, int], list[tuple[int, int]]] = {}
    for kj, score in pairs.items():
        by_score.setdefault(score, []).append(kj)

    def obj(j: int) -> str:
        return f"{objectnames[j]!r} ({j + 1})"

    for score in sorted(by_score):
        group = [(k, j) for k, j in sorted(by_score[score])
                 if k not in matched and k not in ties and j not in taken]  # fmt: skip
        per_class: dict[int, list[int]] = {}
        per_object: dict[int, list[int]] = {}
        for k, j in group:
            per_class.setdefault(k, []).append(j)
            per_object.setdefault(j, []).append(k)
        for k, objects in per_class.items():
            if len(objects) > 1:
                ties[k] = f"equally good ADE objects {'; '.join(obj(j) for j in objects)}"
            else:
                rivals = [c for c in per_object[objects[0]] if c != k]
                if rivals:
                    ties[k] = (f"ADE object {obj(objects[0])} matches classes "
                               f"{', '.join(map(str, sorted([k, *rivals])))} equally")  # fmt: skip
        for k, objects in per_class.items():
            if k not in ties:
                matched[k] = objects[0]
                taken.add(objects[0])

    problems = []
    for k, cls in enumerate(vocabulary):
        if k in ties:
            problems.append(f"class {k} {cls.name!r}: {ties[k]}")
        elif k not in matched:
            problems.append(f"class {k} {', '.join(cls.synonyms)!r}: no ADE object name matches")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise PrepareError(
            f"{DATASET}: cannot match {len(problems)} of the {len(vocabulary)} classes to the "
            f"object names of index_ade20k.pkl:\n  {shown}{more}\n"
            "give the ADE object name of every class with --mapping FILE (see "
            "ovseg/data/prepare/ade20k_full.py::read_mapping_file)"
        )
    others: dict[int, list[int]] = {}
    for k, j in sorted(pairs, key=lambda kj: (pairs[kj], kj)):
        if j != matched[k]:
            others.setdefault(k, []).append(j)
    return [
        ClassMatch(
            k,
            cls.name,
            matched[k] + 1,
            objectnames[matched[k]],
            RULES[pairs[(k, matched[k])][0]],
            tuple(obj(j) for j in others.get(k, [])[:5]),
        )
        for k, cls in enumerate(vocabulary)
    ]


def read_mapping_file(
    path: Path, objectnames: Sequence[str], vocabulary: Vocabulary
) -> list[ClassMatch]:
    """A user's class mapping, replacing :func:`derive_mapping`.

    The JSON is one of:

    * a list of 847 ADE object names (exact ``objectnames`` strings) in train-id order;
    * an object ``{"ADE object name": train_id, ...}`` (several objects may share a train id);
    * the ``ade20k_847_mapping.json`` this converter writes (``{"classes": [{"train_id",
      "ade_index", "ade_name"}, ...]}``; ``ade_index``, the 1-based _seg.png value, wins over the
      name when both are given, which also picks between objects of the same name).

    Every train id 0..846 must be given at least once.

    Raises:
        PrepareError: unreadable JSON, an unknown or ambiguous name, a bad train id or index, or
            train ids left out.
    """
    import difflib

    if not path.is_file():
        raise PrepareError(f"{DATASET}: mapping file {path} not found")
    data = read_json(path, f"{DATASET} mapping file", mapping=False)
    where: dict[str, list[int]] = {}
    for j, n in enumerate(objectnames):
        where.setdefault(n, []).append(j)
    n_classes = len(vocabulary)

    def bad(msg: str) -> PrepareError:
        return PrepareError(f"{DATASET}: mapping file {path}: {msg}")

    def lookup(name: object) -> int:
        if not isinstance(name, str):
            raise bad(f"{name!r} is not an ADE object name (a string)")
        if name not in where:
            close = difflib.get_close_matches(name, list(where), n=3)
            hint = f"; close: {', '.join(map(repr, close))}" if close else ""
            raise bad(f"{name!r} is not in the objectnames of index_ade20k.pkl{hint}")
        if len(where[name]) > 1:
            indices = ", ".join(str(j + 1) for j in where[name])
            raise bad(
                f"{name!r} is the name of several ADE objects ({indices}); use the "
                '{"classes": [{"train_id": ..., "ade_index": ...}]} form'
            )
        return where[name][0]

    def train_id(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n_classes:
            raise bad(f"train id {value!r} is not an integer in 0..{n_classes - 1}")
        return value

    entries: list[tuple[int, int]] = []  # (train id, object)
    if isinstance(data, list):
        if len(data) != n_classes:
            raise bad(f"a list must hold {n_classes} ADE object names, it has {len(data)}")
        entries = [(k, lookup(name)) for k, name in enumerate(data)]
    elif isinstance(data, dict) and "classes" in data:
        if not isinstance(data["classes"], list):
            raise bad('"classes" must be a list of {"train_id", "ade_index" or "ade_name"}')
        for e in data["classes"]:
            if not isinstance(e, dict) or "train_id" not in e:
                raise bad(f"entry {e!r} has no train_id")
            if e.get("ade_index") is not None:
                idx = e["ade_index"]
                if isinstance(idx, bool) or not isinstance(idx, int):
                    raise bad(f"ade_index {idx!r} is not an integer")
                if not 1 <= idx <= len(objectnames):
                    raise bad(f"ade_index {idx} is outside 1..{len(objectnames)}")
                if e.get("ade_name") is not None and e["ade_name"] != objectnames[idx - 1]:
                    raise bad(
                        f"ade_index {idx} is {objectnames[idx - 1]!r} in index_ade20k.pkl, "
                        f"not {e['ade_name']!r}"
                    )
                entries.append((train_id(e["train_id"]), idx - 1))
            else:
                entries.append((train_id(e["train_id"]), lookup(e.get("ade_name"))))
    elif isinstance(data, dict):
        entries = [(train_id(v), lookup(name)) for name, v in data.items()]
    else:
        raise bad(f"expected a JSON list or object, got {type(data).__name__}")
    objects = [j for _, j in entries]
    dup = sorted({objectnames[j] for j in objects if objects.count(j) > 1})
    if dup:
        raise bad(f"ADE object(s) given more than one train id: {', '.join(map(repr, dup))}")
    missing = sorted(set(range(n_classes)) - {k for k, _ in entries})
    if missing:
        shown = ", ".join(f"{k} {vocabulary[k].name!r}" for k in missing[:10])
        raise bad(f"{len(missing)} train id(s) have no ADE object: {shown}"
                  f"{' ...' if len(missing) > 10 else ''}")  # fmt: skip
    return [
        ClassMatch(k, vocabulary[k].name, j + 1, objectnames[j], f"from {path.name}")
        for k, j in sorted(entries)
    ]


def lookup_table(matches: Sequence[ClassMatch]) -> np.ndarray:
    """_seg.png class value -> train id (uint16, 65535 for every value not in ``matches``)."""
    lut = np.full(MAX_CLASS_VALUE + 1, IGNORE, dtype=np.uint16)
    for m in matches:
        if m.ade_index <= MAX_CLASS_VALUE:
            lut[m.ade_index] = m.train_id
    return lut


def write_mapping(matches: Sequence[ClassMatch], index_path: Path, path: Path) -> None:
    """Write the mapping used, one entry per (train id, ADE object), for anyone to audit."""
    doc = {
        "description": (
            "ADE20K-847 train id -> ADE object; ade_index is the _seg.png class value "
            "(R // 10 * 256 + G), i.e. objectnames[ade_index - 1] of index_ade20k.pkl; every "
            "other value is 65535. Written by ovseg's tools/prepare_data.py ade20k-847; edit it "
            "and pass it back with --mapping to change the mapping."
        ),
        "index": str(index_path),
        "num_classes": len({m.train_id for m in matches}),
        "classes": [
            {
                "train_id": m.train_id,
                "name": m.name,
                "ade_index": m.ade_index,
                "ade_name": m.ade_name,
                "rule": m.rule,
            }
            for m in matches
        ],  # fmt: skip
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- conversion


def convert_pair(
    image_path: Path, seg_path: Path, lut: np.ndarray
) -> tuple[np.ndarray, np.ndarray, bool]:
    """One image and its ``_seg.png`` -> (image as stored by FC-CLIP, uint16 labels, resized?).

    Returns:
        image: (h, w[, C]) uint8, as decoded by Pillow (channel order as stored, RGB for JPEG);
        labels: (h, w) uint16 train ids, 65535 ignore; resized: whether the short side was capped.

    Raises:
        PrepareError: a _seg.png that is not RGB, or whose size is not the image's.
    """
    import cv2

    image = read_array(image_path)
    seg = read_array(seg_path)
    if seg.ndim != 3 or seg.shape[2] < 3:
        raise PrepareError(
            f"{DATASET}: {seg_path} is not an RGB class map (shape {seg.shape}); expected the "
            "release's *_seg.png"
        )
    if seg.shape[:2] != image.shape[:2]:
        raise PrepareError(
            f"{DATASET}: {seg_path} is {seg.shape[1]}x{seg.shape[0]} but {image_path.name} is "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    labels = ade_class_map(seg)
    size = fcclip_size(*image.shape[:2])
    if size is not None:
        h, w = size
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, lut[labels], size is not None


def _locate(base: Path, folder: str, name: str, where: str) -> Path:
    """``folder`` is relative to the folder holding the release (``ADE20K_2021_17_01/images/...``);
    fall back to the release folder itself when it was renamed. Both come from the index: they
    must stay inside the release's parent folder (:func:`~.common.inside`)."""
    if Path(name).name != name:
        raise PrepareError(f"{DATASET}: entry {name!r} in {where} is not a plain file name")
    path = inside(base.parent, os.path.join(folder, name), DATASET, where)
    if not path.is_file():
        parts = Path(folder).parts
        alt = None
        if len(parts) > 1:
            alt = inside(base, os.path.join(*parts[1:], name), DATASET, where)
        if alt is not None and alt.is_file():
            return alt
    return path


def prepare_ade20k_full(
    src: Path,
    dst: Path,
    link: bool = False,
    mapping: str | os.PathLike | None = None,
    training: bool = False,
) -> list[str]:
    """Write ``ADE20K_2021_17_01/{images,annotations}_detectron2/validation`` and the mapping.

    Args:
        src: the folder holding ``ADE20K_2021_17_01`` (or that folder itself).
        dst: the data root.
        link: symlink the images that need no resize (see the module docstring).
        mapping: a JSON file replacing the derived class mapping (:func:`read_mapping_file`).
        training: also convert the training images (into ``.../training``).

    Returns:
        the benchmarks written (``["ade20k-847"]``).
    """
    base = find_dir(src, (RELEASE, f"ade/{RELEASE}", ""), DATASET, f"{RELEASE}/index_ade20k.pkl",
                    HINT, marker="index_ade20k.pkl")  # fmt: skip
    index = load_index(base / "index_ade20k.pkl")
    vocab = Vocabulary.from_name(DATASET)
    if mapping is not None:
        matches = read_mapping_file(Path(mapping).expanduser(), index.objectnames, vocab)
    else:
        matches = derive_mapping(index.objectnames, vocab)
    too_big = [m for m in matches if m.ade_index > MAX_CLASS_VALUE]
    if too_big:
        raise PrepareError(
            f"{DATASET}: ADE object(s) {', '.join(repr(m.ade_name) for m in too_big[:5])} have "
            f"indices over {MAX_CLASS_VALUE}, which a _seg.png cannot encode"
        )
    lut = lookup_table(matches)

    jobs = []
    for folder, name in zip(index.folders, index.filenames):
        split = "validation" if is_validation(name) else "training"
        if split == "training" and not training:
            continue
        image = _locate(base, folder, name, f"{index.path} filename/folder")
        seg = image.with_name(Path(name).stem + "_seg.png")
        jobs.append((split, name, image, seg))
    if not any(split == "validation" for split, *_ in jobs):
        raise PrepareError(
            f"{DATASET}: {index.path} lists no validation image (file names ADE_val_*); {HINT}"
        )
    missing = [p for _, _, image, seg in jobs for p in (image, seg) if not p.is_file()]
    if missing:
        shown = ", ".join(map(str, missing[:5]))
        raise PrepareError(
            f"{DATASET}: {len(missing)} file(s) listed in {index.path} are missing: {shown}"
            f"{' ...' if len(missing) > 5 else ''}; {HINT}"
        )

    out = dst / RELEASE
    write_mapping(matches, index.path, out / MAPPING_FILE)
    for split, name, image_path, seg_path in progress(jobs, DATASET):
        image, labels, resized = convert_pair(image_path, seg_path, lut)
        image_out = out / "images_detectron2" / split / name
        if link and not resized:
            place(image_path, image_out, link=True, root=dst)
        else:
            save_label(image, image_out)  # Pillow's default JPEG, as FC-CLIP saves it
        save_label(labels, out / "annotations_detectron2" / split / f"{Path(name).stem}.tif")
    return [DATASET]
