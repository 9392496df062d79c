"""Vocabulary parsing, built-in lists and the errors users meet."""

from __future__ import annotations

import json

import pytest

from ovseg.text.vocabulary import Vocabulary, builtin_names, split_synonyms


def test_synonyms_and_canonical_names():
    v = Vocabulary(["person, child, man", "zebra", "dry grass,hay"], isthing=[True, True, False])
    assert v.names == ["person", "zebra", "dry grass"]
    assert v.synonyms[2] == ("dry grass", "hay")
    assert v.num_synonyms == [3, 1, 2]
    assert v.flat_synonyms() == ["person", "child", "man", "zebra", "dry grass", "hay"]
    assert v.isthing == [True, True, False]
    assert split_synonyms("car, cars,automobile") == ("car", "cars", "automobile")


def test_parse_with_stuff_marks():
    v = Vocabulary.parse("zebra; dry grass, hay [stuff]; sky [STUFF];")
    assert v.names == ["zebra", "dry grass", "sky"]
    assert v.isthing == [True, False, False]


@pytest.mark.parametrize(
    "classes, match",
    [
        ([], "empty"),
        (["cat", "  "], "blank"),
        (["cat", "dog, , puppy"], "empty synonym"),
        (["cat", "Cat, kitty"], "duplicates class 0"),
    ],
)
def test_bad_vocabularies(classes, match):
    with pytest.raises(ValueError, match=match):
        Vocabulary(classes)


def test_string_instead_of_list():
    with pytest.raises(TypeError, match="Vocabulary.parse"):
        Vocabulary("cat; dog")


def test_flag_length_mismatch():
    with pytest.raises(ValueError, match="isthing has 1 entries but the vocabulary has 2"):
        Vocabulary(["a", "b"], isthing=[True])


def test_from_files(tmp_path):
    txt = tmp_path / "v.txt"
    txt.write_text("# my classes\ncar, cars\nroad [stuff]\n\n")
    v = Vocabulary.from_file(txt)
    assert v.names == ["car", "road"] and v.isthing == [True, False]
    js = tmp_path / "v.json"
    js.write_text(
        json.dumps([{"name": "car, cars", "isthing": True}, {"name": "road", "isthing": False}])
    )
    assert Vocabulary.from_file(js) == v
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        Vocabulary.from_file(tmp_path / "nope.txt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        Vocabulary.from_file(tmp_path / "bad.json")


def test_builtin_vocabularies_are_fcclips_lists():
    ade = Vocabulary.from_name("ade20k-150")
    assert len(ade) == 150 and ade[0].synonyms[0] == "wall"
    coco = Vocabulary.from_name("coco-panoptic")
    assert len(coco) == 133 and sum(coco.isthing) == 80
    assert len(Vocabulary.from_name("ade20k-847")) == 847
    assert len(Vocabulary.from_name("pascal-voc-20")) == 20
    assert len(Vocabulary.from_name("cityscapes")) == 19
    from ovseg.text.vocabulary import DATA_VOCABULARIES

    for name in builtin_names():
        if name not in DATA_VOCABULARIES:  # those need a prepared release (tests/cli/...ovcamo)
            assert len(Vocabulary.from_name(name)) > 0


def test_unknown_builtin_suggests():
    with pytest.raises(KeyError, match="did you mean 'ade20k-150'"):
        Vocabulary.from_name("ade20k-15")


def test_seen_mask_and_fingerprint():
    coco = Vocabulary.from_name("coco-panoptic")
    v = Vocabulary(["person, astronaut", "spaceship"])
    assert v.seen_mask(coco) == [True, False]
    assert v.fingerprint() == Vocabulary(["person,astronaut", "spaceship"]).fingerprint()
    assert v.fingerprint() != Vocabulary(["person", "spaceship"]).fingerprint()


def test_load_vocabulary_file_or_builtin(tmp_path):
    from ovseg.text.vocabulary import load_vocabulary

    f = tmp_path / "v.txt"
    f.write_text("car, cars\nroad [stuff]\n")
    assert load_vocabulary(f).names == ["car", "road"]
    assert len(load_vocabulary("ADE20K_150")) == 150
    with pytest.raises(FileNotFoundError, match="neither a file nor a built-in"):
        load_vocabulary(tmp_path / "missing.txt")
    bad = tmp_path / "dup.txt"
    bad.write_text("cat\ncat\n")
    with pytest.raises(ValueError, match="duplicates"):  # a broken file is not "missing"
        load_vocabulary(bad)


def test_a_stuff_marker_typo_is_an_error_not_a_class_name(tmp_path):
    """Issue 18, case 12: "sky [stuf]" used to become a thing class named "sky [stuf]"."""
    with pytest.raises(ValueError, match=r"unknown class marker \[stuf\] in 'sky \[stuf\]'"):
        Vocabulary.parse("cat; sky [stuf]")
    f = tmp_path / "classes.txt"
    f.write_text("cat\nroad [Stuff ]\ngrass [stuf]\n")
    with pytest.raises(ValueError, match=r"classes.txt: unknown class marker \[stuf\]"):
        Vocabulary.from_file(f)
    assert Vocabulary.parse("cat; sky [STUFF]").isthing == [True, False]


def test_a_binary_vocabulary_file_names_the_file(tmp_path):
    f = tmp_path / "classes.txt"
    f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ValueError, match=r"classes.txt is not UTF-8 text"):
        Vocabulary.from_file(f)
    j = tmp_path / "classes.json"
    j.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match=r"classes.json: not valid JSON"):
        Vocabulary.from_file(j)
