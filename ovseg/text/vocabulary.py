"""Vocabularies: the class names a model segments into, chosen at run time.

A class is a canonical name plus prompt synonyms ("car, cars, automobile"): the text classifier
embeds every synonym and takes the max over a class's synonyms (FC-CLIP). Canonical names are kept
apart from the synonym strings so that evaluation never looks up "car,cars" (FC-CLIP's Cityscapes
evaluator crashed on exactly that).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

BUILTIN_DIR = Path(__file__).parent / "builtin"

# Built-in names whose class list belongs to a data release that ovseg may not redistribute
# (OVCamo's names are part of its CC BY-NC-SA release): read from the prepared data root
# ($OVSEG_DATA, default ./data) that tools/prepare_data.py writes.
DATA_VOCABULARIES: dict[str, tuple[str, str]] = {
    "ovcamo": ("ovcamo/test_classes.txt", "ovcamo"),
    "ovcamo-test": ("ovcamo/test_classes.txt", "ovcamo"),
    "ovcamo-train": ("ovcamo/train_classes.txt", "ovcamo"),
}

# name -> (file, placeholder lines dropped). Thing/stuff flags live in builtin/isthing.json.
BUILTIN_FILES: dict[str, str] = {
    "coco-panoptic": "coco_panoptic_with_prompt_eng.txt",
    "ade20k-150": "ade20k_150_with_prompt_eng.txt",
    "ade20k-847": "ade20k_847_with_prompt_eng.txt",
    "pascal-context-59": "pascal_ctx_59_with_prompt_eng.txt",
    "pascal-context-459": "pascal_ctx_459_with_prompt_eng.txt",
    "pascal-voc-21": "pascal_voc_21_with_prompt_eng.txt",
    "cityscapes": "cityscapes_with_prompt_eng.txt",
    "mapillary-vistas": "mapillary_vistas_with_prompt_eng.txt",
    "coco-stuff": "coco_stuff_with_prompt_eng.txt",
    "lvis-1203": "lvis_1203_with_prompt_eng.txt",
}
_PLACEHOLDER = "invalid_class_id"
_STUFF_MARK = re.compile(r"\s*\[\s*stuff\s*\]\s*$", re.IGNORECASE)
_ANY_MARK = re.compile(r"\[\s*([A-Za-z_ -]*)\s*\]\s*$")


def _check_marker(text: str) -> None:
    """A trailing ``[word]`` other than ``[stuff]`` is a typo, not part of a class name."""
    m = _ANY_MARK.search(text)
    if m and not _STUFF_MARK.search(text):
        raise ValueError(
            f"unknown class marker [{m.group(1)}] in {text.strip()!r}: the only marker is [stuff] "
            "(a stuff class); remove the brackets for a thing class"
        )


def split_synonyms(name: str) -> tuple[str, ...]:
    """Split "car, cars,automobile" into ("car", "cars", "automobile").

    FC-CLIP does ``name.replace(", ", ",").split(",")``; stripping each piece gives the same
    strings for its lists and also tolerates user input with irregular spacing.
    """
    return tuple(s.strip() for s in name.split(","))


@dataclass(frozen=True)
class VocabClass:
    """One class: ``name`` is the canonical label (first synonym); ``synonyms`` feed the prompts."""

    name: str
    synonyms: tuple[str, ...]
    isthing: bool = True
    id: int | None = None  # the dataset's category id, when the class comes from a dataset
    # Sentences describing the class (CuPL / AttrSeg); used by the text classifier beside or
    # instead of the templates (model.text.description_mode). Empty: templates only.
    descriptions: tuple[str, ...] = ()


class Vocabulary:
    """An ordered list of classes with synonyms and thing/stuff flags.

    Args:
        classes: one string per class, synonyms separated by commas ("person, child, man").
        isthing: per-class thing flag (instances are counted); default all True.
        ids: optional dataset category ids, kept for evaluation output.
        name: optional label for logs and caches (e.g. "ade20k-150").
        allow_duplicates: accept repeated canonical names (some dataset lists have them, e.g.
            ADE20K-847's two "pot" classes); user vocabularies should not.

    Raises:
        ValueError: empty vocabulary, a blank class or synonym, a duplicated class, or flags whose
            length does not match.
    """

    def __init__(
        self,
        classes: Sequence[str],
        isthing: Sequence[bool] | None = None,
        ids: Sequence[int] | None = None,
        name: str | None = None,
        allow_duplicates: bool = False,
    ) -> None:
        if isinstance(classes, str):
            raise TypeError(
                "Vocabulary expects a list of class names; use Vocabulary.parse(text) for a "
                "';'-separated string"
            )
        classes = list(classes)
        if not classes:
            raise ValueError("the vocabulary is empty: give at least one class name")
        for field, values in (("isthing", isthing), ("ids", ids)):
            if values is not None and len(values) != len(classes):
                raise ValueError(
                    f"{field} has {len(values)} entries but the vocabulary has {len(classes)} classes"
                )
        items: list[VocabClass] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(classes):
            if not isinstance(raw, str):
                raise TypeError(f"class {i} is {type(raw).__name__}, expected a string: {raw!r}")
            synonyms = split_synonyms(raw)
            if not any(synonyms):
                raise ValueError(f"class {i} has a blank name ({raw!r})")
            if not all(synonyms):
                raise ValueError(
                    f"class {i} ({raw!r}) has an empty synonym: remove the stray comma"
                )
            canonical = synonyms[0]
            if canonical.lower() in seen and not allow_duplicates:
                raise ValueError(
                    f"class {i} ({canonical!r}) duplicates class {seen[canonical.lower()]}; "
                    "merge them into one class with synonyms instead"
                )
            seen[canonical.lower()] = i
            items.append(
                VocabClass(
                    name=canonical,
                    synonyms=synonyms,
                    isthing=bool(isthing[i]) if isthing is not None else True,
                    id=int(ids[i]) if ids is not None else None,
                )
            )
        self.classes: tuple[VocabClass, ...] = tuple(items)
        self.name = name

    # ----------------------------------------------------------------- constructors
    @classmethod
    def parse(cls, text: str, name: str | None = None) -> Vocabulary:
        """Parse "zebra; dry grass, hay [stuff]; sky [stuff]": ';' separates classes, ',' synonyms.

        A trailing ``[stuff]`` marks a stuff class (one segment per image in panoptic output).
        """
        parts = [p for p in (s.strip() for s in text.split(";")) if p]
        if not parts:
            raise ValueError(f"no class names in {text!r}: separate classes with ';'")
        for part in parts:
            _check_marker(part)
        names = [_STUFF_MARK.sub("", p) for p in parts]
        isthing = [not _STUFF_MARK.search(p) for p in parts]
        return cls(names, isthing=isthing, name=name)

    @classmethod
    def from_file(cls, path: str | Path) -> Vocabulary:
        """Read a ``.txt`` (one class per line, synonyms comma-separated, optional ``ID:`` prefix and
        ``[stuff]`` suffix; ``#`` comments) or ``.json`` (list of ``{"name", "isthing", "id"}``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        if path.suffix.lower() == ".json":
            try:
                entries = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from None
            if isinstance(entries, dict) and "classes" in entries:
                entries = entries["classes"]
            if not isinstance(entries, list):
                raise ValueError(f"{path}: expected a JSON list of {{'name': ..., 'isthing': ...}}")
            names, flags, ids = [], [], []
            for i, e in enumerate(entries):
                if isinstance(e, str):
                    e = {"name": e}
                if not isinstance(e, dict) or "name" not in e:
                    raise ValueError(f"{path}: entry {i} has no 'name': {e!r}")
                names.append(e["name"])
                flags.append(bool(e.get("isthing", True)))
                ids.append(e.get("id"))
            has_ids = all(x is not None for x in ids)
            return cls(names, isthing=flags, ids=ids if has_ids else None, name=path.stem)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise ValueError(
                f"vocabulary file {path} is not UTF-8 text (a binary file?): give a .txt with one "
                "class per line or a .json list"
            ) from None
        try:
            names, flags, ids = _parse_lines(lines)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        return cls(names, isthing=flags, ids=ids, name=path.stem)

    @classmethod
    def from_name(cls, name: str) -> Vocabulary:
        """A built-in dataset vocabulary: FC-CLIP's exact class lists with synonyms (Apache-2.0).

        Names: see :func:`builtin_names` (e.g. "ade20k-150", "coco-panoptic", "cityscapes").
        """
        key = name.lower().replace("_", "-")
        if key == "pascal-voc-20":
            voc = cls.from_name("pascal-voc-21")
            keep = [c for c in voc.classes if c.id != 0]
            return cls._from_classes(keep, name="pascal-voc-20")
        if key in DATA_VOCABULARIES:
            return cls._from_data_root(key)
        if key not in BUILTIN_FILES:
            raise KeyError(_unknown_name_message(name, builtin_names()))
        lines = (BUILTIN_DIR / BUILTIN_FILES[key]).read_text(encoding="utf-8").splitlines()
        names, _, ids = _parse_lines(lines)
        thing_ids = _builtin_thing_ids().get(key)
        flags = [i in thing_ids for i in ids] if thing_ids is not None else None
        return cls(names, isthing=flags, ids=ids, name=key, allow_duplicates=True)

    @classmethod
    def _from_data_root(cls, key: str) -> Vocabulary:
        """A :data:`DATA_VOCABULARIES` entry, read from the prepared data root."""
        rel, converter = DATA_VOCABULARIES[key]
        path = Path(os.environ.get("OVSEG_DATA", "data")).expanduser() / rel
        if not path.is_file():
            raise FileNotFoundError(
                f"vocabulary {key!r} is read from the prepared release ({path} not found): "
                f"run tools/prepare_data.py {converter} --src RELEASE --dst DATA and set "
                "OVSEG_DATA=DATA (the class names ship with the data, not with ovseg)"
            )
        vocab = cls.from_file(path)
        vocab.name = key
        return vocab

    @classmethod
    def _from_classes(cls, classes: Iterable[VocabClass], name: str | None = None) -> Vocabulary:
        classes = list(classes)
        ids = [c.id for c in classes]
        vocab = cls(
            [", ".join(c.synonyms) for c in classes],
            isthing=[c.isthing for c in classes],
            ids=ids if all(i is not None for i in ids) else None,
            name=name,
            allow_duplicates=True,
        )
        vocab.classes = tuple(
            replace(v, descriptions=c.descriptions) for v, c in zip(vocab.classes, classes)
        )
        return vocab

    def with_descriptions(
        self, descriptions: Mapping[str, Sequence[str]], source: str = "descriptions"
    ) -> Vocabulary:
        """A copy whose classes carry sentences describing them (CuPL's format: canonical class
        name -> sentences). Classes not named keep their own (usually none).

        Raises:
            ValueError: a key that matches no class's canonical name, an empty list or a
                non-string sentence (the message names ``source`` and the key).
        """
        checked = check_descriptions(descriptions, source)
        index: dict[str, list[int]] = {}
        lower: dict[str, list[int]] = {}
        for i, c in enumerate(self.classes):
            index.setdefault(c.name, []).append(i)
            lower.setdefault(c.name.lower(), []).append(i)
        new = list(self.classes)
        for key, sentences in checked.items():
            hits = index.get(key) or lower.get(key.lower())
            if not hits:
                close = _close_matches(key, self.names)
                raise ValueError(
                    f"{source}: key {key!r} matches no class of vocabulary "
                    f"{self.name or repr(self)}{close} (keys are canonical names: a class's "
                    "first synonym)"
                )
            for i in hits:
                new[i] = replace(new[i], descriptions=sentences)
        return Vocabulary._from_classes(new, name=self.name)

    @property
    def descriptions(self) -> dict[str, tuple[str, ...]]:
        """Canonical name -> description sentences, for the classes that have some."""
        return {c.name: c.descriptions for c in self.classes if c.descriptions}

    # ----------------------------------------------------------------- accessors
    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self) -> Iterator[VocabClass]:
        return iter(self.classes)

    def __getitem__(self, i: int) -> VocabClass:
        return self.classes[i]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.classes == other.classes

    def __hash__(self) -> int:
        return hash(self.classes)

    def __repr__(self) -> str:
        head = ", ".join(c.name for c in self.classes[:5])
        more = f", ... ({len(self)} classes)" if len(self) > 5 else ""
        return f"Vocabulary([{head}{more}])"

    @property
    def names(self) -> list[str]:
        """Canonical class names (first synonym of each class)."""
        return [c.name for c in self.classes]

    @property
    def isthing(self) -> list[bool]:
        return [c.isthing for c in self.classes]

    @property
    def synonyms(self) -> list[tuple[str, ...]]:
        return [c.synonyms for c in self.classes]

    @property
    def num_synonyms(self) -> list[int]:
        """Number of synonyms of each class, in class order."""
        return [len(c.synonyms) for c in self.classes]

    def flat_synonyms(self) -> list[str]:
        """All synonyms, class-major: the rows of the text classifier."""
        return [s for c in self.classes for s in c.synonyms]

    def seen_mask(self, train: Vocabulary) -> list[bool]:
        """Whether each class shares any synonym with the training vocabulary (FC-CLIP's
        ``category_overlapping_mask``: seen classes use ensemble weight alpha, unseen beta)."""
        train_syn = {s for c in train.classes for s in c.synonyms}
        return [any(s in train_syn for s in c.synonyms) for c in self.classes]

    def fingerprint(self) -> str:
        """A short stable hash of the synonym strings (and description sentences, if any)."""
        h = hashlib.sha256("\n".join("|".join(c.synonyms) for c in self.classes).encode())
        if any(c.descriptions for c in self.classes):
            h.update("\x02".join("\x03".join(c.descriptions) for c in self.classes).encode())
        return h.hexdigest()[:16]

    def to_json(self) -> list[dict]:
        return [
            {
                "name": ", ".join(c.synonyms),
                "isthing": c.isthing,
                **({"id": c.id} if c.id is not None else {}),
            }
            for c in self.classes
        ]


def check_descriptions(
    descriptions: Any, source: str = "descriptions"
) -> dict[str, tuple[str, ...]]:
    """Validate CuPL-format descriptions ``{"<class name>": ["sentence", ...], ...}``.

    Raises:
        ValueError: not a mapping, a non-string key, a value that is not a non-empty list of
            non-blank strings (the message names ``source`` and the key).
    """
    if not isinstance(descriptions, Mapping):
        raise ValueError(
            f'{source}: expected a JSON object {{"<class name>": ["sentence", ...]}}, '
            f"got {type(descriptions).__name__}"
        )
    out: dict[str, tuple[str, ...]] = {}
    for key, value in descriptions.items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"{source}: key {key!r} is not a class name")
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ValueError(
                f"{source}: key {key!r}: expected a list of sentences, got {type(value).__name__}"
            )
        if not value:
            raise ValueError(f"{source}: key {key!r} has an empty list of sentences")
        for j, sentence in enumerate(value):
            if not isinstance(sentence, str):
                raise ValueError(
                    f"{source}: key {key!r}, sentence {j} is {type(sentence).__name__}, "
                    f"expected a string: {sentence!r}"
                )
            if not sentence.strip():
                raise ValueError(f"{source}: key {key!r}, sentence {j} is blank")
        out[key.strip()] = tuple(value)
    return out


def load_descriptions(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Read a CuPL JSON file ``{"<class name>": ["sentence", ...], ...}`` (validated by
    :func:`check_descriptions`; keys are canonical class names, a class's first synonym)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"descriptions file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return check_descriptions(data, str(path))


def load_vocabulary(source: str | Path) -> Vocabulary:
    """A vocabulary file (``.txt`` / ``.json``) or a built-in name ("ade20k-150").

    Raises:
        FileNotFoundError: neither an existing file nor a built-in name (lists the names).
        ValueError: the file exists but is not a valid vocabulary.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return Vocabulary.from_file(path)
    if str(source).lower().replace("_", "-") in builtin_names():
        return Vocabulary.from_name(str(source))
    raise FileNotFoundError(
        f"vocabulary {str(source)!r} is neither a file nor a built-in vocabulary "
        f"({', '.join(builtin_names())})"
    )


def resolve_vocabulary(spec: Vocabulary | str | Path | Sequence[str]) -> Vocabulary:
    """The one resolver for a vocabulary given in any form a user types.

    * a :class:`Vocabulary`: itself;
    * a list of names: one class per entry (``"car, auto"`` gives synonyms);
    * a string or path: a built-in name (``"ade20k-150"``), else an existing vocabulary file,
      else vocabulary text in ovseg's syntax (``"zebra; dry grass, hay [stuff]"``; a single name
      such as ``"cat"`` is a one-class vocabulary).

    Raises:
        ValueError: an empty vocabulary, or a bad file.
    """
    if isinstance(spec, Vocabulary):
        return spec
    if isinstance(spec, (list, tuple)):
        return Vocabulary(list(spec))
    text = str(spec)
    if text.lower().replace("_", "-") in builtin_names():
        return Vocabulary.from_name(text)
    path = Path(text).expanduser()
    if path.is_file():
        return Vocabulary.from_file(path)
    return Vocabulary.parse(text)


def builtin_names() -> list[str]:
    """Names accepted by :meth:`Vocabulary.from_name`."""
    return sorted([*BUILTIN_FILES, *DATA_VOCABULARIES, "pascal-voc-20"])


def _parse_lines(lines: Sequence[str]) -> tuple[list[str], list[bool], list[int] | None]:
    names: list[str] = []
    flags: list[bool] = []
    ids: list[int] = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(\d+)\s*:(.*)$", line)
        cid = int(m.group(1)) if m else None
        text = m.group(2).strip() if m else line
        if text == _PLACEHOLDER:
            continue
        if cid is not None:
            ids.append(cid)
        _check_marker(text)
        flags.append(not _STUFF_MARK.search(text))
        names.append(_STUFF_MARK.sub("", text))
    return names, flags, ids if len(ids) == len(names) and ids else None


def _builtin_thing_ids() -> dict[str, set[int]]:
    path = BUILTIN_DIR / "isthing.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: set(v) for k, v in data.items() if not k.startswith("_")}


def _close_matches(name: str, choices: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.4)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _unknown_name_message(name: str, choices: Sequence[str]) -> str:
    hint = _close_matches(name, choices)
    return f"unknown vocabulary {name!r}{hint} (built-in: {', '.join(choices)})"
