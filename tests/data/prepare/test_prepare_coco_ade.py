"""COCO (semantic maps from panoptic PNGs shipped as a zip) and ADE20K-150 (semantic, panoptic and
instance from the challenge's instance PNGs) converters on tiny official-format inputs."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ovseg.data import CocoPanopticDataset, make_synthetic_coco_panoptic
from ovseg.data.benchmarks import load_benchmark
from ovseg.data.prepare import prepare, verify
from ovseg.evaluation.panoptic import read_panoptic_png
from ovseg.evaluation.runner import as_source
from ovseg.text.vocabulary import Vocabulary


def test_coco_semantic_from_zipped_panoptic(tmp_path):
    raw = tmp_path / "raw"
    syn = make_synthetic_coco_panoptic(raw, num_images=3, size=(24, 32), split="val2017",
                                       image_format="jpg", crowd_prob=0.5, seed=1)  # fmt: skip
    # as shipped: the PNGs inside annotations/panoptic_val2017.zip, no extracted folder
    with zipfile.ZipFile(raw / "annotations" / "panoptic_val2017.zip", "w") as zf:
        for p in sorted(syn.panoptic_root.glob("*.png")):
            zf.write(p, f"panoptic_val2017/{p.name}")
    shutil.rmtree(syn.panoptic_root)
    assert prepare("coco", raw, tmp_path / "data", link=True) == ["coco-panoptic"]

    coco = tmp_path / "data" / "coco"
    assert (coco / "val2017" / "000000000001.jpg").is_symlink()
    bench = load_benchmark("coco-panoptic", tmp_path / "data", tasks=["panoptic", "semantic"])
    assert len(bench) == 3 and bench.category_ids == [1, 2, 3, 21, 22, 23]
    # the semantic maps are what the panoptic dataset derives (crowd included, void 255)
    ds = CocoPanopticDataset(coco / "val2017", coco / "annotations" / "panoptic_val2017.json",
                             coco / "panoptic_val2017")  # fmt: skip
    for i, r in enumerate(bench.records):
        sem = np.asarray(Image.open(r["sem_seg_file_name"]))
        assert sem.dtype == np.uint8
        assert np.array_equal(sem, ds.load_semantic_gt(i))
    report = verify("coco-panoptic", tmp_path / "data", expected={"coco-panoptic": 3})
    assert not report.ok and "instances_val2017.json" in report.text()  # instance json absent
    assert "ok   coco-panoptic: semantic labels in 0..132" in report.text()


def _ade_raw(src: Path, mapping_file: bool) -> tuple[int, int]:
    base = src / "ADEChallengeData2016"
    vocab = Vocabulary.from_name("ade20k-150")
    things = [k for k, c in enumerate(vocab) if c.isthing]
    bed, person = things.index(7) + 1, things.index(12) + 1  # 1-based instance classes
    for folder in ("images", "annotations", "annotations_instance"):
        (base / folder / "validation").mkdir(parents=True)
    for k in range(2):
        stem = f"ADE_val_{k + 1:08d}"
        Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(
            base / "images/validation" / f"{stem}.jpg"
        )
        sem = np.zeros((20, 24), np.uint8)  # 0: other
        sem[:10, :20] = 1  # wall
        sem[10:, :20] = 4  # floor
        sem[2:8, 2:8] = 8  # bed
        sem[12:18, 10:14] = 13  # person
        sem[12:18, 16:19] = 13  # a second person
        inst = np.zeros((20, 24, 3), np.uint8)
        inst[2:8, 2:8] = (bed, 1, 0)
        inst[12:18, 10:14] = (person, 2, 0)
        inst[12:18, 16:19] = (person, 3 + k, 0)
        Image.fromarray(sem).save(base / "annotations/validation" / f"{stem}.png")
        Image.fromarray(inst).save(base / "annotations_instance/validation" / f"{stem}.png")
    if mapping_file:
        lines = ["Instacne100 SceneParsing150 FullADE20K"]
        lines += [f"{i + 1} {k + 1} x" for i, k in enumerate(things)]
        (src / "ade20k_instance_catid_mapping.txt").write_text("\n".join(lines) + "\n")
    return bed, person


def _check_ade(data: Path) -> None:
    bench = load_benchmark("ade20k-150", data)
    assert bench.tasks == ("semantic", "panoptic", "instance") and len(bench) == 2
    assert bench.category_ids == list(range(150))
    r = bench.records[0]
    sem = np.asarray(Image.open(r["sem_seg_file_name"]))
    assert sem[0, 0] == 0 and sem[15, 0] == 3 and sem[3, 3] == 7 and sem[0, 22] == 255
    ids = read_panoptic_png(r["pan_seg_file_name"])
    cats = {s["id"]: s["category_id"] for s in r["segments_info"]}
    assert sorted(cats.values()) == [0, 3, 7, 12, 12]  # wall, floor, bed, 2 persons
    assert cats[int(ids[3, 3])] == 7 and cats[int(ids[15, 11])] == 12 and ids[0, 22] == 0
    assert ids[15, 11] != ids[15, 17]  # two person instances
    ins = json.loads((data / "ADEChallengeData2016" / "ade20k_instance_val.json").read_text())
    assert len(ins["categories"]) == 100 and {c["id"] for c in ins["categories"]} >= {7, 12}
    assert sorted(a["category_id"] for a in ins["annotations"]) == [7, 7, 12, 12, 12, 12]
    # the ground truth of all three tasks reads back through the evaluation runner
    source = as_source(bench)
    info, anns = source.instance_gt(0)
    assert len(anns) == 3 and info["height"] == 20
    report = verify("ade20k", data, expected={"ade20k-150": 2})
    assert report.ok, report.text()


def test_ade20k_with_and_without_mapping_file(tmp_path):
    for mapping_file in (True, False):
        src = tmp_path / f"raw{mapping_file}"
        _ade_raw(src, mapping_file)
        data = tmp_path / f"data{mapping_file}"
        assert prepare("ade20k-150", src, data) == ["ade20k-150"]
        _check_ade(data)


def test_ade20k_semantic_only(tmp_path):
    _ade_raw(tmp_path / "raw", False)
    shutil.rmtree(tmp_path / "raw/ADEChallengeData2016/annotations_instance")
    assert prepare("ade20k-150", tmp_path / "raw", tmp_path / "data") == ["ade20k-150 (semantic)"]
    bench = load_benchmark("ade20k-150", tmp_path / "data", tasks=["semantic"])
    assert len(bench) == 2 and not bench.reduce_zero_label
    report = verify("ade20k-150", tmp_path / "data", expected={"ade20k-150": 2})
    assert not report.ok and "ade20k_panoptic_val.json" in report.text()
    assert "ok   ade20k-150: 2 images (semantic)" in report.text()
