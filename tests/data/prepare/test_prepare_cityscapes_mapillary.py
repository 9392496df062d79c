"""Cityscapes (trainIds and panoptic from labelIds / instanceIds, as cityscapesscripts) and Mapillary
Vistas (kept as shipped) converters on tiny official-format inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.data.benchmarks import load_benchmark
from ovseg.data.prepare import PrepareError, prepare, verify
from ovseg.evaluation.panoptic import read_panoptic_png
from ovseg.evaluation.runner import as_source

KEY = "frankfurt_000000_000294"


def _cityscapes_raw(src: Path) -> None:
    img = src / "leftImg8bit/val/frankfurt" / f"{KEY}_leftImg8bit.png"
    gt = src / "gtFine/val/frankfurt"
    img.parent.mkdir(parents=True)
    gt.mkdir(parents=True)
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(img)
    label = np.full((16, 32), 7, np.uint8)  # road
    label[:4] = 23  # sky
    label[4:8, :4] = 0  # unlabeled
    label[4:8, 4:8] = 9  # parking (ignored in evaluation)
    label[8:12, 0:10] = 26  # car 1
    label[8:12, 10:20] = 26  # car 2
    label[12:16, 20:30] = 26  # car group (crowd)
    inst = label.astype(np.uint16)  # 16-bit PNG, as shipped
    inst[8:12, 0:10] = 26000
    inst[8:12, 10:20] = 26001
    Image.fromarray(label).save(gt / f"{KEY}_gtFine_labelIds.png")
    Image.fromarray(inst).save(gt / f"{KEY}_gtFine_instanceIds.png")


def test_cityscapes(tmp_path):
    _cityscapes_raw(tmp_path / "raw")
    assert prepare("cityscapes", tmp_path / "raw", tmp_path / "data") == ["cityscapes"]
    bench = load_benchmark("cityscapes", tmp_path / "data")
    assert len(bench) == 1 and bench.tasks == ("semantic", "panoptic", "instance")
    r = bench.records[0]
    train = np.asarray(Image.open(r["sem_seg_file_name"]))
    assert train[0, 0] == 10 and train[15, 0] == 0 and train[9, 0] == 13
    assert train[5, 0] == 255 and train[5, 5] == 255  # unlabeled, parking
    ids = read_panoptic_png(r["pan_seg_file_name"])
    segs = {s["id"]: s for s in r["segments_info"]}
    assert set(segs) == {7, 23, 26, 26000, 26001}  # parking (9) and unlabeled (0) dropped
    assert segs[26]["iscrowd"] == 1 and segs[26000]["iscrowd"] == 0 and segs[7]["iscrowd"] == 0
    assert ids[5, 5] == 0 and ids[9, 12] == 26001 and segs[26001]["area"] == 40
    data = json.loads(
        (tmp_path / "data/cityscapes/gtFine/cityscapes_panoptic_val.json").read_text()
    )
    assert [c["id"] for c in data["categories"]] == bench.category_ids
    assert len(bench.category_ids) == 19 and bench.category_ids[13] == 26
    # instance ground truth built by the runner from instanceIds: 2 cars + 1 crowd region
    _, anns = as_source(bench).instance_gt(0)
    assert sorted((a["category_id"], a["iscrowd"]) for a in anns) == [(26, 0), (26, 0), (26, 1)]
    report = verify("cityscapes", tmp_path / "data", expected={"cityscapes": 1})
    assert report.ok, report.text()


def test_cityscapes_missing_gt_is_named(tmp_path):
    _cityscapes_raw(tmp_path / "raw")
    (tmp_path / "raw/gtFine/val/frankfurt" / f"{KEY}_gtFine_instanceIds.png").unlink()
    with pytest.raises(PrepareError, match=f"{KEY}_gtFine_instanceIds.png.*gtFine_trainvaltest"):
        prepare("cityscapes", tmp_path / "raw", tmp_path / "data")


def test_mapillary_v2_release_layout(tmp_path):
    val = tmp_path / "raw" / "validation"
    for d in ("images", "v1.2/labels", "v1.2/panoptic"):
        (val / d).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(val / "images" / "a1.jpg")
    Image.fromarray(np.full((8, 8), 65, np.uint8)).save(val / "v1.2/labels" / "a1.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(val / "v1.2/panoptic" / "a1.png")
    cats = [{"id": i + 1, "name": f"c{i}", "isthing": int(i < 37)} for i in range(65)]
    pan = {"images": [{"id": "a1", "file_name": "a1.jpg", "height": 8, "width": 8}],
           "annotations": [{"image_id": "a1", "file_name": "a1.png", "segments_info": []}],
           "categories": cats}  # fmt: skip
    (val / "v1.2/panoptic/panoptic_2018.json").write_text(json.dumps(pan))
    assert prepare("mapillary", tmp_path / "raw", tmp_path / "data") == ["mapillary-vistas"]
    bench = load_benchmark("mapillary-vistas", tmp_path / "data")
    assert len(bench) == 1 and bench.ignore_index == 65 and len(bench.category_ids) == 65
    report = verify("mapillary-vistas", tmp_path / "data", expected={"mapillary-vistas": 1})
    assert report.ok, report.text()

    pan["categories"] = cats[:10]  # not v1.2
    (val / "v1.2/panoptic/panoptic_2018.json").write_text(json.dumps(pan))
    with pytest.raises(PrepareError, match="10 categories, not v1.2's 65"):
        prepare("mapillary-vistas", tmp_path / "raw", tmp_path / "data2")


def test_corrupt_inputs_are_one_line_naming_the_file(tmp_path, capsys):
    """Issue 18, case 12: a corrupt label PNG (Cityscapes) or a non-JSON panoptic json
    (Mapillary) stops the run with one line naming the file, exit 2."""
    from ovseg.cli.prepare_data import main

    _cityscapes_raw(tmp_path / "raw")
    label = tmp_path / "raw/gtFine/val/frankfurt" / f"{KEY}_gtFine_labelIds.png"
    label.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["cityscapes", "--src", str(tmp_path / "raw"), "--dst", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"cannot read label file {label}" in err

    val = tmp_path / "mv" / "validation"
    for d in ("images", "v1.2/labels", "v1.2/panoptic"):
        (val / d).mkdir(parents=True)
    (val / "v1.2/panoptic/panoptic_2018.json").write_text("{not json")
    assert (
        main(["mapillary-vistas", "--src", str(tmp_path / "mv"), "--dst", str(tmp_path / "d")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "panoptic_2018.json is not valid JSON" in err
    (val / "v1.2/panoptic/panoptic_2018.json").write_text("[1, 2]")
    assert (
        main(["mapillary-vistas", "--src", str(tmp_path / "mv"), "--dst", str(tmp_path / "d")]) == 2
    )
    assert "holds a list, not a mapping" in capsys.readouterr().err
