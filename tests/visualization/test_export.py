"""save_prediction: the three files the demo writes, from hand-made predictions."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from ovseg.structures import Instances, Prediction
from ovseg.text.vocabulary import Vocabulary
from ovseg.utils.image import rgb2id
from ovseg.visualization.export import save_prediction

H, W = 12, 16


def _img() -> np.ndarray:
    return np.full((H, W, 3), 100, np.uint8)


def test_panoptic_files(tmp_path):
    vocab = Vocabulary.parse("cat; floor [stuff]")
    pan = torch.zeros(H, W, dtype=torch.int32)
    pan[:, :8] = 300  # an id above 255 survives the RGB encoding
    pan[2:5, 10:14] = 2
    info = [
        {"id": 300, "category_id": 1, "isthing": False, "score": 0.5, "label": "floor"},
        {"id": 2, "category_id": 0, "isthing": True, "score": 0.75, "label": "cat"},
    ]
    pred = Prediction(vocab, (H, W), panoptic_seg=pan, segments_info=info)
    paths = save_prediction(pred, _img(), tmp_path, "x", "panoptic", source="in/x.jpg")
    assert {k: p.name for k, p in paths.items()} == {
        "overlay": "x_overlay.png",
        "labels": "x_panoptic.png",
        "json": "x.json",
    }
    ids = rgb2id(np.asarray(Image.open(paths["labels"])))
    np.testing.assert_array_equal(ids, pan.numpy())
    record = json.loads(paths["json"].read_text())
    assert record["image"] == "in/x.jpg" and record["image_size"] == [H, W]
    assert record["vocabulary"] == [
        {"name": "cat", "isthing": True},
        {"name": "floor", "isthing": False},
    ]
    assert record["segments"] == [
        {"id": 300, "category_id": 1, "label": "floor", "isthing": False, "score": 0.5,
         "area": H * 8, "bbox": [0, 0, 8, H]},
        {"id": 2, "category_id": 0, "label": "cat", "isthing": True, "score": 0.75,
         "area": 12, "bbox": [10, 2, 14, 5]},
    ]  # fmt: skip
    overlay = Image.open(paths["overlay"])
    assert overlay.mode == "RGB" and overlay.width > W and overlay.height >= H


def test_semantic_bit_depth_follows_vocabulary_size(tmp_path):
    for n, mode in ((3, "L"), (300, "I;16")):
        vocab = Vocabulary([f"class {i}" for i in range(n)])
        scores = torch.zeros(n, H, W)
        scores[1] = 1.0  # only class 1 present: values fit 8 bits, but the depth follows n
        pred = Prediction(vocab, (H, W), sem_seg=scores)
        paths = save_prediction(pred, _img(), tmp_path, f"s{n}", "semantic")
        im = Image.open(paths["labels"])
        assert im.mode == mode
        assert (np.asarray(im) == 1).all()


def test_instance_threshold_applies_to_every_file(tmp_path):
    vocab = Vocabulary(["cup", "spoon"])
    masks = torch.zeros(2, H, W, dtype=torch.bool)
    masks[0, :4, :4] = True
    masks[1, 6:, 6:] = True
    pred = Prediction(
        vocab, (H, W), instances=Instances(masks, torch.tensor([0.9, 0.1]), torch.tensor([0, 1]))
    )
    paths = save_prediction(pred, _img(), tmp_path, "i", "instance", score_threshold=0.5)
    im = Image.open(paths["labels"])
    assert im.mode == "I;16"
    arr = np.asarray(im)
    assert arr[0, 0] == 1 and arr[8, 8] == 0
    record = json.loads(paths["json"].read_text())
    assert record["score_threshold"] == 0.5
    assert [s["label"] for s in record["segments"]] == ["cup"]
