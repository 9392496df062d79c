"""Paths built from dataset metadata stay inside their roots (issue 18, case 1): a hostile
``file_name`` / split id stops the run with one line naming the entry, and nothing outside
``--dst`` is written or removed."""

from __future__ import annotations

import json

import pytest

from ovseg.data import make_synthetic_coco_panoptic
from ovseg.data.prepare import prepare
from ovseg.data.prepare.common import PrepareError, inside, place


def _coco_raw(tmp_path):
    raw = tmp_path / "raw"
    make_synthetic_coco_panoptic(raw, num_images=2, size=(16, 16), split="val2017",
                                 image_format="jpg", seed=0)  # fmt: skip
    return raw, raw / "annotations" / "panoptic_val2017.json"


def test_coco_absolute_image_name_deletes_nothing(tmp_path):
    raw, pan_json = _coco_raw(tmp_path)
    victim = tmp_path / "victim.jpg"
    victim.write_bytes(b"precious")
    data = json.loads(pan_json.read_text())
    data["images"][0]["file_name"] = str(victim)
    pan_json.write_text(json.dumps(data))
    with pytest.raises(PrepareError, match=r"entry '.*victim\.jpg' in .*images\[\]"):
        prepare("coco", raw, tmp_path / "data")
    assert victim.read_bytes() == b"precious"


def test_coco_dotdot_annotation_writes_nothing_outside(tmp_path):
    raw, pan_json = _coco_raw(tmp_path)
    data = json.loads(pan_json.read_text())
    name = data["annotations"][0]["file_name"]
    # the PNG is also reachable from the panoptic folder, so only the output path escapes
    data["annotations"][0]["file_name"] = f"../../../{name}"
    pan_json.write_text(json.dumps(data))
    before = {p for p in tmp_path.rglob("*") if "data" not in p.parts}
    with pytest.raises(PrepareError, match=r"points outside"):
        prepare("coco", raw, tmp_path / "data")
    after = {p for p in tmp_path.rglob("*") if "data" not in p.parts}
    assert after == before


def test_pascal_split_id_climbing_out_is_refused(tmp_path):
    voc = tmp_path / "raw" / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("../../../../escaped\n")
    with pytest.raises(PrepareError, match=r"entry '\.\./\.\./\.\./\.\./escaped' in .*val\.txt"):
        prepare("pascal-voc", tmp_path / "raw", tmp_path / "data")


def test_inside_and_place_refuse_escapes(tmp_path):
    root = tmp_path / "root"
    assert inside(root, "a/b.png", "ds", "x.json") == root / "a" / "b.png"
    for bad in ("/etc/passwd", "../x", "a/../../x", "", ".."):
        with pytest.raises(PrepareError, match="x.json"):
            inside(root, bad, "ds", "x.json")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    src = tmp_path / "src.txt"
    src.write_text("new")
    with pytest.raises(PrepareError, match="outside the destination"):
        place(src, root / ".." / "victim.txt", root=root)
    assert victim.read_text() == "keep"
    # a symlink inside the destination is replaced, its target untouched
    root.mkdir()
    (root / "link.txt").symlink_to(victim)
    place(src, root / "link.txt", root=root)
    assert (root / "link.txt").read_text() == "new" and victim.read_text() == "keep"


def test_coco_bad_metadata_is_one_line_naming_the_entry(tmp_path, capsys):
    """Issue 18, case 12: an unknown category, a missing segments_info, a corrupt panoptic PNG
    and a non-JSON file each stop the run with one line naming the culprit (was `error: 999`,
    `error: segments_info`, a traceback)."""
    from ovseg.cli.prepare_data import main

    def run(edit) -> str:
        raw, pan_json = _coco_raw(tmp_path / edit.__name__)
        edit(raw, pan_json)
        assert main(["coco", "--src", str(raw), "--dst", str(tmp_path / edit.__name__ / "d")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err
        return err

    def unknown_category(raw, pan_json):
        data = json.loads(pan_json.read_text())
        data["annotations"][0]["segments_info"][0]["category_id"] = 999
        pan_json.write_text(json.dumps(data))

    def no_segments_info(raw, pan_json):
        data = json.loads(pan_json.read_text())
        del data["annotations"][0]["segments_info"]
        pan_json.write_text(json.dumps(data))

    def corrupt_png(raw, pan_json):
        name = json.loads(pan_json.read_text())["annotations"][0]["file_name"]
        next(raw.rglob(name)).write_bytes(b"\x89PNG broken")

    def not_json(raw, pan_json):
        pan_json.write_text("{not json")

    assert "category_id 999, which is not among the json's categories" in run(unknown_category)
    assert "has no 'segments_info' list" in run(no_segments_info)
    assert "cannot read label file" in run(corrupt_png)
    assert "panoptic_val2017.json is not valid JSON" in run(not_json)
