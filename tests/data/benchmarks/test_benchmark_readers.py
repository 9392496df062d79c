"""Benchmark readers on tiny synthetic copies of each prepared layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.data.benchmarks import (
    BENCHMARKS,
    FCCLIP_SUITE,
    BenchmarkNotFoundError,
    benchmark_names,
    load_benchmark,
)
from ovseg.evaluation import SemSegEvaluator, id2rgb, read_label_png


def _img(path: Path, h: int = 6, w: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)


def _label(path: Path, value: int = 1, h: int = 6, w: int = 8, dtype=np.uint8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w), value, dtype)).save(path)


def _panoptic(base: Path, json_path: Path, pan_dir: Path, stems: list[str], cat_ids: list[int],
              image_ext: str = ".jpg", image_ids: list | None = None) -> None:  # fmt: skip
    pan_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for k, stem in enumerate(stems):
        image_id = image_ids[k] if image_ids else stem
        Image.fromarray(id2rgb(np.full((6, 8), 7))).save(pan_dir / f"{stem}.png")
        images.append({"id": image_id, "file_name": stem + image_ext, "height": 6, "width": 8})
        anns.append({"image_id": image_id, "file_name": f"{stem}.png",
                     "segments_info": [{"id": 7, "category_id": cat_ids[0], "iscrowd": 0,
                                        "area": 48}]})  # fmt: skip
    cats = [{"id": c, "name": str(c), "isthing": 1} for c in cat_ids]
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))


def _instances(json_path: Path, stems: list[str]) -> None:
    images = [{"id": k + 1, "file_name": f"{s}.jpg", "height": 6, "width": 8}
              for k, s in enumerate(stems)]  # fmt: skip
    json_path.write_text(json.dumps({"images": images, "annotations": [], "categories": []}))


STEMS = ["ADE_val_00000001", "ADE_val_00000002"]


def _ade150(root: Path) -> Path:
    base = root / "ADEChallengeData2016"
    for s in STEMS:
        _img(base / "images" / "validation" / f"{s}.jpg")
        _label(base / "annotations_detectron2" / "validation" / f"{s}.png", 3)
    _panoptic(base, base / "ade20k_panoptic_val.json", base / "ade20k_panoptic_val", STEMS,
              list(range(150)))  # fmt: skip
    _instances(base / "ade20k_instance_val.json", STEMS)
    return base


def test_ade20k_150_all_tasks(tmp_path):
    base = _ade150(tmp_path)
    bench = load_benchmark("ade20k-150", root=tmp_path)
    assert bench.tasks == ("semantic", "panoptic", "instance")
    assert len(bench) == 2 and bench.num_classes == 150 and not bench.reduce_zero_label
    assert bench.category_ids == list(range(150))
    r = bench.records[0]
    assert r["file_name"] == str(base / "images" / "validation" / "ADE_val_00000001.jpg")
    assert (r["height"], r["width"], r["image_id"]) == (6, 8, "ADE_val_00000001")
    assert r["pan_seg_file_name"].endswith("ade20k_panoptic_val/ADE_val_00000001.png")
    assert r["sem_seg_file_name"].endswith("annotations_detectron2/validation/ADE_val_00000001.png")
    assert r["segments_info"][0]["id"] == 7 and r["instance_image_id"] == 1
    assert bench.instances_json == base / "ade20k_instance_val.json"


def test_ade20k_150_semantic_only_and_mmseg_layout(tmp_path):
    base = tmp_path / "ade" / "ADEChallengeData2016"
    for s in STEMS:
        _img(base / "images" / "validation" / f"{s}.jpg")
        _label(base / "annotations" / "validation" / f"{s}.png", 4)
    bench = load_benchmark("ade20k-150", root=tmp_path, tasks=["semantic"])
    assert bench.reduce_zero_label and len(bench) == 2
    # records feed the evaluator directly
    ev = SemSegEvaluator(bench.num_classes, bench.ignore_index, bench.reduce_zero_label)
    for r in bench:
        gt = read_label_png(r["sem_seg_file_name"])
        ev.process(np.full_like(gt, 3), gt, r["image_id"])
    assert ev.evaluate()["summary_percent"]["aAcc"] == 100.0
    with pytest.raises(BenchmarkNotFoundError, match="ade20k_panoptic_val.json"):
        load_benchmark("ade20k-150", root=tmp_path)


def test_ade20k_847_tif_labels(tmp_path):
    base = tmp_path / "ADE20K_2021_17_01"
    _img(base / "images_detectron2" / "validation" / "a.jpg")
    _label(base / "annotations_detectron2" / "validation" / "a.tif", 846, dtype=np.uint16)
    bench = load_benchmark("ade20k-847", root=tmp_path)
    assert (bench.num_classes, bench.ignore_index, bench.vocabulary) == (847, 65535, "ade20k-847")
    assert read_label_png(bench.records[0]["sem_seg_file_name"]).max() == 846


@pytest.mark.parametrize(
    "name, folder, labels, suffix, num_classes",
    [
        ("pascal-context-59", "pascal_ctx_d2", "annotations_ctx59", ".png", 59),
        ("pascal-context-459", "pascal_ctx_d2", "annotations_ctx459", ".tif", 459),
        ("pascal-voc-21", "pascal_voc_d2", "annotations_pascal21", ".png", 21),
        ("pascal-voc-20", "pascal_voc_d2", "annotations_pascal20", ".png", 20),
    ],
)
def test_pascal(tmp_path, name, folder, labels, suffix, num_classes):
    for s in ("2008_000002", "2008_000003"):
        _img(tmp_path / folder / "images" / "validation" / f"{s}.jpg")
        _label(tmp_path / folder / labels / "validation" / f"{s}{suffix}", 1,
               dtype=np.uint16 if suffix == ".tif" else np.uint8)  # fmt: skip
    bench = load_benchmark(name, root=tmp_path)
    assert len(bench) == 2 and bench.num_classes == num_classes and bench.tasks == ("semantic",)
    assert bench.records[1]["sem_seg_file_name"].endswith(f"2008_000003{suffix}")


def test_cityscapes(tmp_path):
    base = tmp_path / "cityscapes"
    keys = [("frankfurt", "frankfurt_000000_000294"), ("lindau", "lindau_000001_000019")]
    for city, key in keys:
        _img(base / "leftImg8bit" / "val" / city / f"{key}_leftImg8bit.png", 4, 8)
        _label(base / "gtFine" / "val" / city / f"{key}_gtFine_labelTrainIds.png", 0, 4, 8)
        _label(base / "gtFine" / "val" / city / f"{key}_gtFine_instanceIds.png", 7, 4, 8)
    gt = base / "gtFine"
    _panoptic(gt, gt / "cityscapes_panoptic_val.json", gt / "cityscapes_panoptic_val",
              [f"{k}_gtFine_panoptic" for _, k in keys], [7, 8, 11],
              image_ids=[k for _, k in keys])  # fmt: skip
    bench = load_benchmark("cityscapes", root=tmp_path)
    assert (bench.min_size_test, bench.max_size_test) == (1024, 2560)
    r = bench.records[0]
    assert r["image_id"] == "frankfurt_000000_000294" and (r["height"], r["width"]) == (4, 8)
    assert r["sem_seg_file_name"].endswith("frankfurt_000000_000294_gtFine_labelTrainIds.png")
    assert r["inst_seg_file_name"].endswith("_gtFine_instanceIds.png")
    assert r["pan_seg_file_name"].endswith("frankfurt_000000_000294_gtFine_panoptic.png")
    assert bench.category_ids == [7, 8, 11]


def test_mapillary(tmp_path):
    base = tmp_path / "mapillary_vistas" / "validation"
    stems = ["abc", "def"]
    for s in stems:
        _img(base / "images" / f"{s}.jpg")
        _label(base / "labels" / f"{s}.png", 64)
    _panoptic(base, base / "panoptic" / "panoptic_2018.json", base / "panoptic", stems,
              list(range(1, 66)))  # fmt: skip
    bench = load_benchmark("mapillary-vistas", root=tmp_path)
    assert bench.ignore_index == 65 and bench.num_classes == 65 and len(bench) == 2
    assert bench.records[0]["sem_seg_file_name"].endswith("labels/abc.png")
    assert bench.records[0]["file_name"].endswith("images/abc.jpg")


def test_coco(tmp_path):
    base = tmp_path / "coco"
    stems = ["000000000139", "000000000285"]
    for s in stems:
        _img(base / "val2017" / f"{s}.jpg")
        _label(base / "panoptic_semseg_val2017" / f"{s}.png", 5)
    _panoptic(base, base / "annotations" / "panoptic_val2017.json", base / "panoptic_val2017",
              stems, [1, 2, 3], image_ids=[139, 285])  # fmt: skip
    _instances(base / "annotations" / "instances_val2017.json", stems)
    bench = load_benchmark("coco-panoptic", root=tmp_path)
    assert [r["image_id"] for r in bench] == [139, 285]
    assert [r["instance_image_id"] for r in bench] == [1, 2]
    sem_only = load_benchmark("coco-panoptic", root=tmp_path, tasks=["semantic"])
    assert "pan_seg_file_name" not in sem_only.records[0] and sem_only.panoptic_json is None


def test_missing_data_names_dataset_path_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("OVSEG_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(BenchmarkNotFoundError) as info:
        load_benchmark("pascal-voc-21")
    msg = str(info.value)
    assert msg.startswith("pascal-voc-21: not found: ")
    assert str(tmp_path / "nowhere" / "pascal_voc_d2" / "images" / "validation") in msg
    assert "set $OVSEG_DATA" in msg
    assert "python tools/prepare_data.py pascal-voc-21 --src" in msg
    assert info.value.dataset == "pascal-voc-21"


def test_unpaired_files_are_listed(tmp_path):
    _img(tmp_path / "pascal_voc_d2" / "images" / "validation" / "a.jpg")
    _img(tmp_path / "pascal_voc_d2" / "images" / "validation" / "b.jpg")
    _label(tmp_path / "pascal_voc_d2" / "annotations_pascal21" / "validation" / "a.png")
    with pytest.raises(ValueError, match=r"1 image\(s\)/label\(s\) .* do not pair up: b"):
        load_benchmark("pascal-voc-21", root=tmp_path)


def test_names_and_suite():
    assert set(benchmark_names()) == set(BENCHMARKS)
    assert {name for name, _ in FCCLIP_SUITE} == set(BENCHMARKS)
    with pytest.raises(KeyError, match="did you mean 'cityscapes'"):
        load_benchmark("cityscape")
    with pytest.raises(ValueError, match="ade20k-847 has no panoptic task"):
        load_benchmark("ade20k-847", tasks=["panoptic"])
