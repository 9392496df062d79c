"""Thing/stuff flags of the built-in vocabularies (ovseg/text/builtin/isthing.json)."""

from __future__ import annotations

import json

import pytest

from ovseg.text.vocabulary import BUILTIN_DIR, BUILTIN_FILES, Vocabulary, _parse_lines

ISTHING = json.loads((BUILTIN_DIR / "isthing.json").read_text(encoding="utf-8"))


def _txt_ids(name: str) -> set[int]:
    lines = (BUILTIN_DIR / BUILTIN_FILES[name]).read_text(encoding="utf-8").splitlines()
    _, _, ids = _parse_lines(lines)
    assert ids is not None
    return set(ids)


def test_every_builtin_vocabulary_has_flags_and_a_note():
    names = {k for k in ISTHING if not k.startswith("_")}
    assert names == set(BUILTIN_FILES)
    assert set(ISTHING["_note"]) == set(BUILTIN_FILES)


@pytest.mark.parametrize("name", sorted(BUILTIN_FILES))
def test_thing_ids_index_the_txt_file(name):
    ids = ISTHING[name]
    assert len(ids) == len(set(ids)), f"{name}: duplicated thing ids"
    assert set(ids) <= _txt_ids(name), f"{name}: ids not in {BUILTIN_FILES[name]}"


@pytest.mark.parametrize(
    "name, things, stuff",
    [
        ("coco-panoptic", 80, 53),
        ("ade20k-150", 100, 50),
        ("cityscapes", 8, 11),
        ("mapillary-vistas", 37, 28),
        ("pascal-voc-21", 20, 1),
        ("pascal-voc-20", 20, 0),
        ("pascal-context-59", 0, 59),
        ("pascal-context-459", 0, 459),
        ("coco-stuff", 80, 91),
        ("lvis-1203", 1203, 0),
    ],
)
def test_thing_stuff_counts(name, things, stuff):
    vocab = Vocabulary.from_name(name)
    assert sum(vocab.isthing) == things
    assert len(vocab) - sum(vocab.isthing) == stuff


def test_known_classes():
    city = Vocabulary.from_name("cityscapes")
    assert [c.name for c in city if c.isthing] == [
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ]
    coco = {c.name: c.isthing for c in Vocabulary.from_name("coco-panoptic")}
    assert coco["person"] and coco["toothbrush"] and not coco["wall"] and not coco["sky"]
    ade = {c.name: c.isthing for c in Vocabulary.from_name("ade20k-150")}
    # ADE20K panoptic: bed (id 7), person (12), flag (149) are things; wall, sky, floor stuff.
    assert ade["bed"] and ade["person"] and ade["flag"]
    assert not ade["wall"] and not ade["sky"] and not ade["floor"]
    voc = Vocabulary.from_name("pascal-voc-21")
    assert not voc[0].isthing and all(c.isthing for c in voc.classes[1:])
    vistas = {c.name: c.isthing for c in Vocabulary.from_name("mapillary-vistas")}
    assert vistas["car"] and vistas["person"] and not vistas["road"] and not vistas["on rails"]
