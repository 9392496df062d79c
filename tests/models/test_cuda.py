"""The fixture model on CUDA gives the CPU results (runs only where a GPU is present)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ovseg_testing import REPO, fixture_dir

from ovseg import Segmenter, Vocabulary

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_fixture_on_cuda():
    fx = fixture_dir("fcclip_tiny")
    seg = Segmenter.from_pretrained(
        fx / "fcclip_tiny_a.pth",
        config=REPO / "ovseg/configs/tests/fcclip_tiny.yaml",
        device="cuda",
    )
    classes = json.loads((fx / "vocabulary.json").read_text())["classes"]
    vocab = Vocabulary([c["name"] for c in classes], isthing=[c["isthing"] for c in classes])
    pred = seg.predict(fx / "image.png", vocab, task="all")
    np.testing.assert_allclose(pred.sem_seg.cpu().numpy(), np.load(fx / "sem_seg.npy"), atol=1e-3)
    assert (pred.panoptic_seg.cpu().numpy() != np.load(fx / "panoptic_seg.npy")).mean() < 1e-3
