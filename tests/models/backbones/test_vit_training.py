"""The tiny ViT config trains end to end with tools/train.py: the loss falls."""

from __future__ import annotations

import json

import numpy as np
import torch
from ovseg_testing import REPO

from ovseg.cli.train import main
from ovseg.data import make_synthetic_coco_panoptic

CFG = str(REPO / "configs/tests/fcclip_tiny_vit_train.yaml")


def test_tiny_vit_trains_and_the_loss_falls(tmp_path):
    root = tmp_path / "synthetic_coco"
    make_synthetic_coco_panoptic(root, num_images=4, size=(96, 96), seed=0, split="train2017")
    wd = tmp_path / "run"
    data = [
        f"data.train.image_root={root}/train2017",
        f"data.train.panoptic_json={root}/annotations/panoptic_train2017.json",
        f"data.train.panoptic_root={root}/annotations/panoptic_train2017",
        f"data.test.image_root={root}/train2017",
        f"data.test.panoptic_json={root}/annotations/panoptic_train2017.json",
        f"data.test.panoptic_root={root}/annotations/panoptic_train2017",
        "data.aug.crop_size=96",
        "data.aug.min_scale=1.0",
        "data.aug.max_scale=1.0",
        "data.batch_size=2",
        "model.loss.train_num_points=256",
        "schedule.max_iter=40",
        "schedule.steps=[100]",
        "schedule.log_period=1",
        "schedule.checkpoint_period=1000",
        "optim.lr=0.002",
    ]
    assert main([CFG, "--work-dir", str(wd), "--no-progress", *data]) == 0
    logged = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    losses = [x["total_loss"] for x in logged if "total_loss" in x]
    assert len(losses) >= 30 and np.all(np.isfinite(losses))
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    assert last < 0.8 * first, (first, last)

    final = torch.load(wd / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    # the trainable pyramid is saved with the decoders (its gradients: test_backbones.py)
    assert any(k.startswith("backbone.pyramid.") for k in final)
