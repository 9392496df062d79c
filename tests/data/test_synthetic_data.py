"""The synthetic generator round-trips through the datasets: what was drawn is what loads."""

import json

import numpy as np
import pytest
from PIL import Image

from ovseg.data import CocoPanopticDataset, SemanticFolderDataset
from ovseg.data.synthetic import (
    CATEGORIES,
    main,
    make_synthetic_coco_panoptic,
    make_synthetic_semantic_folder,
    render_synthetic_scene,
)


def test_coco_panoptic_round_trip(tmp_path):
    out = make_synthetic_coco_panoptic(tmp_path, num_images=6, size=(48, 64), seed=3)
    ds = CocoPanopticDataset(out.image_root, out.panoptic_json, out.panoptic_root)
    assert len(ds) == 6
    assert ds.vocabulary.names == [c["name"] for c in CATEGORIES]
    assert ds.vocabulary.isthing == [bool(c["isthing"]) for c in CATEGORIES]
    assert [c.id for c in ds.vocabulary] == [1, 2, 3, 21, 22, 23]
    contiguous = {c["id"]: i for i, c in enumerate(CATEGORIES)}
    for i in range(6):
        image, ids, segments = render_synthetic_scene(np.random.default_rng([3, i]), 48, 64)
        sample = ds[i]
        np.testing.assert_array_equal(sample["image"], image)  # PNG images are lossless
        assert sample["labels"].tolist() == [contiguous[s["category_id"]] for s in segments]
        expected = np.stack([ids == s["id"] for s in segments])
        np.testing.assert_array_equal(sample["masks"], expected)
        assert sample["masks"].sum(0).max() == 1  # panoptic: no pixel in two segments
        assert not sample["iscrowd"].any()
        assert sample["masks"].sum() == 48 * 64  # every pixel is labelled
        assert any(contiguous[s["category_id"]] < 3 for s in segments)  # at least one thing


def test_coco_json_has_the_coco_fields(tmp_path):
    out = make_synthetic_coco_panoptic(tmp_path, num_images=2, size=(32, 32), seed=0)
    data = json.loads(out.panoptic_json.read_text())
    assert {"images", "annotations", "categories"} <= set(data)
    ann = data["annotations"][0]
    seg = ann["segments_info"][0]
    assert {"id", "category_id", "iscrowd", "area", "bbox"} <= set(seg)
    png = np.asarray(Image.open(out.panoptic_root / ann["file_name"])).astype(np.int64)
    ids = png[..., 0] + 256 * png[..., 1] + 65536 * png[..., 2]
    assert (ids == seg["id"]).sum() == seg["area"]
    assert all("isthing" in c for c in data["categories"])


def test_vocabulary_file_adds_synonyms(tmp_path):
    out = make_synthetic_coco_panoptic(tmp_path, num_images=2, size=(32, 32))
    ds = CocoPanopticDataset(
        out.image_root,
        out.panoptic_json,
        out.panoptic_root,
        vocabulary=str(out.vocabulary),
    )
    assert ds.vocabulary.names == [
        "circle",
        "square",
        "triangle",
        "sky",
        "grass",
        "water",
    ]
    assert ds.vocabulary[0].synonyms == ("circle", "circles", "disc")
    assert ds.vocabulary.isthing == [True, True, True, False, False, False]


def test_crowd_segments_are_kept_in_test_and_dropped_in_training(tmp_path):
    out = make_synthetic_coco_panoptic(tmp_path, num_images=8, size=(48, 48), crowd_prob=0.5)
    test = CocoPanopticDataset(out.image_root, out.panoptic_json, out.panoptic_root)
    train = CocoPanopticDataset(out.image_root, out.panoptic_json, out.panoptic_root, train=True)
    crowded = [i for i in range(8) if test[i]["iscrowd"].any()]
    assert crowded, "the seed should produce crowd segments"
    for i in crowded:
        t, s = test[i], train[i]
        assert len(s["labels"]) == len(t["labels"]) - t["iscrowd"].sum()
        np.testing.assert_array_equal(s["masks"], t["masks"][~t["iscrowd"]])
        assert not s["iscrowd"].any()


def test_semantic_folder_round_trip(tmp_path):
    out = make_synthetic_semantic_folder(
        tmp_path, num_images=3, size=(40, 40), seed=5, ignore_border=2
    )
    ds = SemanticFolderDataset(out.image_dir, out.label_dir, str(out.classes), img_suffix=".png")
    assert ds.vocabulary.names == [c["name"] for c in CATEGORIES]
    assert ds.vocabulary.isthing == [bool(c["isthing"]) for c in CATEGORIES]
    contiguous = {c["id"]: i for i, c in enumerate(CATEGORIES)}
    for i in range(3):
        _, ids, segments = render_synthetic_scene(np.random.default_rng([5, i]), 40, 40)
        sample = ds[i]
        per_class: dict[int, np.ndarray] = {}
        for s in segments:
            c = contiguous[s["category_id"]]
            per_class[c] = per_class.get(c, np.zeros((40, 40), bool)) | (ids == s["id"])
        for m in per_class.values():
            m[:2], m[-2:], m[:, :2], m[:, -2:] = False, False, False, False
        present = sorted(c for c, m in per_class.items() if m.any())
        assert sample["labels"].tolist() == present
        for label, mask in zip(sample["labels"], sample["masks"]):
            np.testing.assert_array_equal(mask, per_class[int(label)])
        assert not sample["masks"][:, :2].any()  # the ignore border has no target


def test_cli_writes_a_loadable_dataset(tmp_path, capsys):
    assert main([str(tmp_path), "-n", "3", "--size", "32", "48", "--split", "val2017"]) == 0
    assert "panoptic_json" in capsys.readouterr().out
    ds = CocoPanopticDataset(
        tmp_path / "val2017",
        tmp_path / "annotations" / "panoptic_val2017.json",
        tmp_path / "annotations" / "panoptic_val2017",
    )
    assert len(ds) == 3 and ds[0]["image"].shape == (32, 48, 3)


def test_bad_generator_arguments():
    with pytest.raises(ValueError, match="num_images"):
        make_synthetic_coco_panoptic("/nonexistent-never-written", num_images=0)
    with pytest.raises(ValueError, match="image_format"):
        make_synthetic_coco_panoptic("/nonexistent-never-written", image_format="gif")


def test_tools_script_runs_without_touching_the_network(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    # albumentations checks PyPI at import unless NO_ALBUMENTATIONS_UPDATE is set; ovseg.data sets
    # it. An audit hook records every socket connection and URL request of the whole run.
    script = Path(__file__).resolve().parents[2] / "tools" / "make_synthetic_coco.py"
    code = (
        "import sys, runpy\n"
        "events = []\n"
        "sys.addaudithook(lambda e, a: events.append(e) if e in "
        "('socket.connect', 'urllib.Request', 'socket.getaddrinfo') else None)\n"
        f"sys.argv = [{str(script)!r}, {str(tmp_path)!r}, '-n', '2', '--size', '24', '24']\n"
        "try:\n"
        f"    runpy.run_path({str(script)!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print('NETWORK', events)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True,
        env=env,
    )  # fmt: skip
    assert "wrote 2 images" in out.stdout
    assert "NETWORK []" in out.stdout, out.stdout
    assert (tmp_path / "annotations" / "panoptic_train2017.json").is_file()
