"""The app's request logic without Gradio: vocabularies, uploads, settings, outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ovseg_testing import REPO
from PIL import Image

from ovseg import Segmenter
from ovseg.app.service import (
    DEFAULT_BUILTINS,
    MAX_IMAGE_SIDE,
    RequestError,
    SegmentService,
    parse_vocabulary,
    read_image,
)
from ovseg.text.vocabulary import Vocabulary

TINY = REPO / "ovseg/configs/tests/fcclip_tiny.yaml"


@pytest.fixture(scope="module")
def service():
    torch.manual_seed(0)
    seg = Segmenter.from_config(
        TINY, overrides=["model.test.min_size=64", "model.test.max_size=128"]
    )
    return SegmentService(seg)


def test_vocabulary_text_builtins_and_default(tmp_path):
    v = parse_vocabulary("cat, kitten; table [stuff]")
    assert v.names == ["cat", "table"] and v.isthing == [True, False]
    assert v.synonyms[0] == ("cat", "kitten")
    coco = Vocabulary.from_name("coco-panoptic")
    merged = parse_vocabulary("cat, kitten; zebra-ish thing", ["COCO (133)"])
    assert merged.names[:2] == ["cat", "zebra-ish thing"]
    assert len(merged) == 2 + len(coco) - 1  # COCO's "cat" repeats the typed one
    assert parse_vocabulary("", ["COCO (133)"]) == coco
    default = parse_vocabulary("  ")
    assert len(default) > len(coco) and default.names[: len(coco)] == coco.names
    assert DEFAULT_BUILTINS == ("coco-panoptic", "ade20k-150")
    # text is never a file path or a built-in name: no server file is read
    secret = tmp_path / "classes.txt"
    secret.write_text("a\nb\n")
    assert parse_vocabulary(str(secret)).names == [str(secret)]
    for bad, match in (
        (";;", "no class names"),
        ("a; a", "duplicates"),
        ("a,, b", "empty synonym"),
    ):
        with pytest.raises(RequestError, match=match):
            parse_vocabulary(bad)
    with pytest.raises(RequestError, match="unknown vocabulary"):
        parse_vocabulary("cat", ["no-such-vocab"])


def test_uploads(tmp_path):
    with pytest.raises(RequestError, match="upload an image"):
        read_image(None)
    bad = tmp_path / "holiday.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(RequestError, match="cannot read the uploaded image") as e:
        read_image(str(bad))
    assert str(tmp_path) not in str(e.value) and "holiday.png" in str(e.value)
    big = np.zeros((MAX_IMAGE_SIDE * 2, 300, 3), np.uint8)
    assert read_image(big).shape == (MAX_IMAGE_SIDE, 150, 3)
    huge = tmp_path / "huge.png"
    Image.new("1", (12000, 12000)).save(huge)  # 144 MP: refused from its header
    with pytest.raises(RequestError, match=r"huge.png: 12000x12000 = 144.0 MP is above the limit"):
        read_image(str(huge), max_pixels=100_000_000)


def test_segment_outputs_and_settings_are_restored(service):
    img = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    model = service.segmenter.model
    before = (model.alpha, model.beta, model.object_mask_threshold)
    res = service.segment(img, "person; sky [stuff]; cup", "panoptic", alpha=0.1, beta=0.9)
    assert (model.alpha, model.beta, model.object_mask_threshold) == before
    pan = res.prediction.panoptic_seg.numpy()
    assert [r["id"] for r in res.segments] == [s["id"] for s in res.prediction.segments_info]
    for (mask, label), row in zip(res.annotations, res.segments):
        assert label == row["label"] and int(mask.sum()) == row["area"] == int(
            (pan == row["id"]).sum()
        )
    overlay = res.overlay()
    assert overlay.shape[0] >= 60 and overlay.shape[1] > 80  # legend panel on the right
    # a higher threshold keeps no more panoptic segments
    strict = service.segment(img, "person; sky [stuff]; cup", "panoptic", threshold=0.99)
    assert len(strict.segments) <= len(res.segments)
    inst = service.segment(img, "person; cup", "instance", threshold=0.0)
    assert all(r["isthing"] for r in inst.segments)
    sem = service.segment(img, "person; sky [stuff]", "semantic")
    assert sum(r["area"] for r in sem.segments) == 60 * 80
    with pytest.raises(RequestError, match="unknown task"):
        service.segment(img, "cat", "panoptics")
    with pytest.raises(RequestError, match=r"alpha must lie in \[0, 1\]"):
        service.segment(img, "cat", alpha=2.0)
