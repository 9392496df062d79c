"""The OVCamo single-object adapter on the tiny model's real output (no mocks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.inference.single_object import (
    STRATEGIES,
    ovcamo_file_name,
    save_single_object,
    single_object,
)
from ovseg.structures import Prediction
from ovseg.text.templates import resolve_templates
from ovseg.text.vocabulary import Vocabulary


def test_semantic_sum_picks_largest_total_and_scales():
    vocab = Vocabulary(["crab", "owl", "frog"])
    sem = torch.zeros(3, 4, 5)
    sem[0, 0, 0] = 5.0  # largest peak, small total
    sem[1] = 1.0
    sem[1, 2:, 2:] = 2.0  # largest total
    obj = single_object(Prediction(vocabulary=vocab, image_size=(4, 5), sem_seg=sem))
    assert (obj.class_name, obj.class_index) == ("owl", 1)
    assert obj.mask.dtype == np.uint8 and obj.mask.shape == (4, 5)
    assert obj.mask.min() == 0 and obj.mask.max() == 255 and obj.mask[3, 4] == 255


def test_tiny_model_both_strategies(tmp_path):
    from ovseg_testing import REPO

    from ovseg import Segmenter

    seg = Segmenter.from_config(REPO / "configs/tests/fcclip_tiny.yaml")
    rng_image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    vocab = ["crab", "owl", "frog"]
    pred = seg.predict(rng_image, vocab, task="semantic", return_intermediates=True)
    h, w = rng_image.shape[:2]
    for strategy in STRATEGIES:
        obj = single_object(pred, strategy)
        assert obj.class_name in vocab and obj.mask.shape == (h, w)
        path = save_single_object(obj, tmp_path, "ovc_te_0001")
        assert path.endswith(f"[{obj.class_name}]ovc_te_0001.png")
    with pytest.raises(ValueError, match="unknown single-object strategy"):
        single_object(pred, "biggest")


def test_names_and_camo_templates():
    assert ovcamo_file_name("leaf-tailed gecko", "x1") == "[leaf-tailed gecko]x1.png"
    with pytest.raises(ValueError, match="cannot appear"):
        ovcamo_file_name("a/b", "x1")
    camo = resolve_templates("camo")
    assert len(camo) == 6 and camo[0] == "A photo of the camouflaged {}."
