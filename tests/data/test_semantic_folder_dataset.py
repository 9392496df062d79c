"""SemanticFolderDataset: per-class masks, ignore index, zero-label reduction, bad input."""

import numpy as np
import pytest
from PIL import Image

from ovseg.data import DatasetConfig, DatasetError, SemanticFolderDataset, build_dataset


def _write(root, labels: dict[str, np.ndarray], suffix=".jpg"):
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "ann").mkdir(parents=True, exist_ok=True)
    for key, label in labels.items():
        (root / "img" / key).parent.mkdir(parents=True, exist_ok=True)
        (root / "ann" / key).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((*label.shape, 3), np.uint8)).save(root / "img" / f"{key}{suffix}")
        Image.fromarray(label.astype(np.uint8)).save(root / "ann" / f"{key}.png")
    classes = root / "classes.txt"
    classes.write_text("road, street\nperson, people\ncar,cars\n")
    return root / "img", root / "ann", str(classes)


def test_per_class_masks_with_ignore(tmp_path):
    label = np.array([[0, 0, 2, 255], [2, 2, 255, 255]])
    img, ann, classes = _write(tmp_path, {"a": label, "sub/b": np.zeros((2, 4))})
    ds = SemanticFolderDataset(img, ann, classes)
    assert len(ds) == 2 and ds.vocabulary.names == ["road", "person", "car"]
    s = ds[0]
    assert s["labels"].tolist() == [0, 2]
    np.testing.assert_array_equal(s["masks"][0], label == 0)
    np.testing.assert_array_equal(s["masks"][1], label == 2)
    assert ds.get_eval_record(1)["image_id"] == "sub/b"
    np.testing.assert_array_equal(ds.load_semantic_gt(0), label)


def test_reduce_zero_label(tmp_path):
    label = np.array([[0, 1, 3, 255]])
    img, ann, classes = _write(tmp_path, {"a": label})
    ds = SemanticFolderDataset(img, ann, classes, reduce_zero_label=True)
    np.testing.assert_array_equal(ds.load_semantic_gt(0), [[255, 0, 2, 255]])
    assert ds[0]["labels"].tolist() == [0, 2]


def test_label_values_outside_the_classes_are_named(tmp_path):
    img, ann, classes = _write(tmp_path, {"a": np.array([[0, 7, 9]])})
    ds = SemanticFolderDataset(img, ann, classes)
    with pytest.raises(
        DatasetError, match=r"a\.png: label value\(s\) \[7, 9\] outside the 3 classes"
    ):
        ds[0]


def test_unpaired_files_are_all_listed(tmp_path):
    img, ann, classes = _write(tmp_path, {"a": np.zeros((2, 2)), "b": np.zeros((2, 2))})
    (ann / "b.png").unlink()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(ann / "c.png")
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(ann / "d.png")
    with pytest.raises(DatasetError) as err:
        SemanticFolderDataset(img, ann, classes)
    msg = str(err.value)
    assert "1 image(s) without a label" in msg and str(img / "b.jpg") in msg
    assert "2 label(s) without an image" in msg and str(ann / "c.png") in msg
    assert str(ann / "d.png") in msg


def test_missing_folders_classes_and_empty(tmp_path):
    img, ann, classes = _write(tmp_path, {"a": np.zeros((2, 2))})
    with pytest.raises(DatasetError, match=f"image_dir folder not found: {tmp_path / 'x'}"):
        SemanticFolderDataset(tmp_path / "x", ann, classes)
    with pytest.raises(DatasetError, match="classes file not found: .*nope.txt"):
        SemanticFolderDataset(img, ann, str(tmp_path / "nope.txt"))
    with pytest.raises(DatasetError, match=r"no \*\.png images under"):
        SemanticFolderDataset(img, ann, classes, img_suffix=".png")
    with pytest.raises(DatasetError, match="ignore_index 1 is a class index"):
        SemanticFolderDataset(img, ann, classes, ignore_index=1)


def test_builtin_class_list_and_config(tmp_path):
    img, ann, _ = _write(tmp_path, {"a": np.array([[0, 20]])})
    cfg = DatasetConfig(type="semantic_folder", image_dir=str(img), label_dir=str(ann),
                        classes="pascal-voc-21")  # fmt: skip
    ds = build_dataset(cfg, train=False, with_targets=True)
    assert len(ds.vocabulary) == 21
    assert ds[0]["labels"].tolist() == [0, 20]
