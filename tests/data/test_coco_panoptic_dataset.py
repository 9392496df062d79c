"""CocoPanopticDataset: every kind of bad input fails early with a message naming the culprit."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from ovseg.data import (
    CocoPanopticDataset,
    DataConfig,
    DatasetConfig,
    DatasetError,
    build_dataset,
)
from ovseg.data.datasets import CorruptSampleError
from ovseg.data.synthetic import id2rgb, make_synthetic_coco_panoptic


@pytest.fixture
def coco(tmp_path):
    return make_synthetic_coco_panoptic(tmp_path / "coco", num_images=5, size=(32, 40), seed=1)


def _open(out, **kwargs):
    return CocoPanopticDataset(out.image_root, out.panoptic_json, out.panoptic_root, **kwargs)


def _edit_json(out, fn):
    data = json.loads(out.panoptic_json.read_text())
    fn(data)
    out.panoptic_json.write_text(json.dumps(data))


def test_missing_paths_are_named(coco, tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(DatasetError, match=f"panoptic_json not found: {missing}"):
        CocoPanopticDataset(coco.image_root, missing, coco.panoptic_root)
    with pytest.raises(DatasetError, match=f"image_root folder not found: {tmp_path / 'imgs'}"):
        CocoPanopticDataset(tmp_path / "imgs", coco.panoptic_json, coco.panoptic_root)
    with pytest.raises(DatasetError, match=f"panoptic_root folder not found: {tmp_path / 'p'}"):
        CocoPanopticDataset(coco.image_root, coco.panoptic_json, tmp_path / "p")
    with pytest.raises(DatasetError, match="image_root is not set"):
        CocoPanopticDataset("", coco.panoptic_json, coco.panoptic_root)


def test_build_dataset_prefixes_the_config_section(tmp_path):
    cfg = DatasetConfig(image_root=str(tmp_path), panoptic_json=str(tmp_path / "x.json"),
                        panoptic_root=str(tmp_path))  # fmt: skip
    with pytest.raises(DatasetError, match=r"^data\.train: coco_panoptic: panoptic_json not found"):
        build_dataset(cfg, train=True)
    with pytest.raises(DatasetError, match=r"data\.test\.type: unknown dataset type 'coco'"):
        build_dataset(DatasetConfig(type="coco"), train=False)


def test_invalid_json_is_named(coco):
    coco.panoptic_json.write_text("{not json")
    with pytest.raises(DatasetError, match=f"{coco.panoptic_json} is not valid JSON"):
        _open(coco)
    coco.panoptic_json.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match=r"missing \['annotations', 'categories'\]"):
        _open(coco)


def test_all_missing_images_and_pngs_are_reported(coco):
    (coco.image_root / "000000000002.png").unlink()
    (coco.image_root / "000000000004.png").unlink()
    (coco.panoptic_root / "000000000005.png").unlink()
    with pytest.raises(DatasetError) as err:
        _open(coco)
    msg = str(err.value)
    assert "2 image(s)" in msg and "1 panoptic PNG(s)" in msg
    for name in ("train2017/000000000002.png", "train2017/000000000004.png",
                 "panoptic_train2017/000000000005.png"):  # fmt: skip
        assert name in msg
    assert len(err.value.paths) == 3


def test_png_ids_not_matching_segments_info(coco):
    path = coco.panoptic_root / "000000000003.png"
    png = np.asarray(Image.open(path)).astype(np.int64)
    ids = png[..., 0] + 256 * png[..., 1] + 65536 * png[..., 2]
    ids[:4, :4] = 777  # an id that segments_info does not list
    Image.fromarray(id2rgb(ids)).save(path)
    with pytest.raises(DatasetError) as err:
        _open(coco)
    assert str(path) in str(err.value) and "[777]" in str(err.value)
    # Large datasets skip the up-front pass: the same error then comes when the sample loads.
    ds = _open(coco, verify=False)
    with pytest.raises(DatasetError, match=r"ids \[777\] are in the PNG but not in segments_info"):
        ds[2]


def test_segments_info_id_absent_from_png(coco):
    def add_ghost(data):
        data["annotations"][0]["segments_info"].append({"id": 4242, "category_id": 1, "iscrowd": 0})

    _edit_json(coco, add_ghost)
    with pytest.raises(DatasetError, match=r"000000000001\.png.*ids \[4242\] are in segments_info"):
        _open(coco)


def test_unknown_category_and_empty_dataset(coco):
    _edit_json(coco, lambda d: d["annotations"][1]["segments_info"][0].update(category_id=99))
    with pytest.raises(DatasetError, match=r"000000000002\.png: unknown category_id\(s\) \[99\]"):
        _open(coco)
    _edit_json(coco, lambda d: d.update(annotations=[]))
    with pytest.raises(DatasetError, match="no annotated images: the dataset is empty"):
        _open(coco)


def test_vocabulary_by_id_by_order_and_mismatch(coco, tmp_path):
    by_id = tmp_path / "by_id.txt"
    by_id.write_text(
        "23: water, sea\n21: sky\n22: grass\n3: triangle\n2: square, box\n1: car,cars\n"
    )
    ds = _open(coco, vocabulary=str(by_id))
    assert ds.vocabulary.names == ["car", "square", "triangle", "sky", "grass", "water"]
    assert ds.vocabulary[0].synonyms == (
        "car",
        "cars",
    )  # "car,cars" never reaches a name lookup
    assert [c.id for c in ds.vocabulary] == [1, 2, 3, 21, 22, 23]
    by_order = tmp_path / "by_order.txt"
    by_order.write_text("a\nb\nc\nd, dd\ne\nf\n")
    assert _open(coco, vocabulary=str(by_order)).vocabulary.names == list("abcdef")
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    with pytest.raises(DatasetError, match="has 2 classes but .* has 6 categories"):
        _open(coco, vocabulary=str(short))
    wrong_ids = tmp_path / "wrong_ids.txt"
    wrong_ids.write_text("1: a\n2: b\n3: c\n21: d\n22: e\n99: f\n")
    with pytest.raises(
        DatasetError, match=r"no class for category id\(s\) \[23\]; unknown .*\[99\]"
    ):
        _open(coco, vocabulary=str(wrong_ids))
    with pytest.raises(DatasetError, match="neither a file nor a built-in vocabulary name"):
        _open(coco, vocabulary=str(tmp_path / "missing.txt"))


def test_corrupt_image_skipped_in_training_or_raised_when_strict(coco, caplog):
    bad = coco.image_root / "000000000002.png"
    bad.write_bytes(b"not a png at all")
    train = _open(coco, train=True)
    with caplog.at_level(logging.WARNING):
        sample = train[1]
    assert sample["index"] == 2 and sample["num_skipped"] == 1  # the next sample instead
    assert train.num_skipped == 1
    assert "000000000002.png" in caplog.text
    with pytest.raises(CorruptSampleError, match=f"cannot read image {bad}"):
        _open(coco, train=True, strict=True)[1]
    with pytest.raises(CorruptSampleError, match=str(bad)):  # evaluation never skips
        _open(coco)[1]


def test_eval_record_and_semantic_gt(coco):
    ds = _open(coco)
    rec = ds.get_eval_record(0)
    assert rec["image_id"] == 1 and rec["file_name"].endswith("train2017/000000000001.png")
    assert rec["pan_seg_file_name"].endswith("panoptic_train2017/000000000001.png")
    assert (rec["height"], rec["width"]) == (32, 40)
    assert {"id", "category_id"} <= set(rec["segments_info"][0])
    sem = ds.load_semantic_gt(0)
    sample = ds[0]
    expected = np.full((32, 40), 255)
    for label, mask in zip(sample["labels"], sample["masks"]):
        expected[mask] = label
    np.testing.assert_array_equal(sem, expected)
    assert ds.categories[0]["id"] == 1 and ds.category_id_to_contiguous[21] == 3


def test_test_time_resize_and_no_targets(coco):
    cfg = DataConfig(test=DatasetConfig(image_root=str(coco.image_root),
                                        panoptic_json=str(coco.panoptic_json),
                                        panoptic_root=str(coco.panoptic_root)))  # fmt: skip
    ds = build_dataset(cfg.test, train=False, test_short_side=64, test_max_size=70)
    s = ds[0]
    assert s["image"].shape == (56, 70, 3)  # 32x40 → short 64 → 64x80 → capped to 56x70
    assert (s["height"], s["width"]) == (32, 40) and "masks" not in s


def test_records_are_serialized_for_fork_friendly_workers():
    from ovseg.data.datasets.base import SerializedList

    records = SerializedList([{"a": 1}, {"b": [2, 3]}, "x"])
    assert len(records) == 3 and records[1] == {"b": [2, 3]} and records[-1] == "x"
    assert list(records) == [{"a": 1}, {"b": [2, 3]}, "x"]
    with pytest.raises(IndexError):
        records[3]
    assert len(SerializedList([])) == 0


def test_training_without_targets_augments_the_image_only(coco):
    from ovseg.data import TrainAugConfig, build_train_transform

    transform = build_train_transform(TrainAugConfig(crop_size=16))
    ds = _open(coco, train=True, with_targets=False, transform=transform)
    s = ds[(0, 123)]
    assert max(s["image"].shape[:2]) <= 16 and "masks" not in s


def test_malformed_annotations_are_listed(coco):
    def break_it(data):
        del data["annotations"][0]["file_name"]
        data["annotations"][1]["image_id"] = 999

    _edit_json(coco, break_it)
    with pytest.raises(DatasetError) as err:
        _open(coco)
    msg = str(err.value)
    assert "2 bad annotation(s)" in msg and "annotation 0 lacks 'file_name'" in msg
    assert "'000000000002.png': image_id 999 has no entry" in msg
