"""Sharded evaluation over 2 gloo processes equals the single-process evaluation."""

from __future__ import annotations

import json
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from test_cityscapes_instance import _scene

from ovseg.evaluation import (
    CityscapesInstanceEvaluator,
    InstanceEvaluator,
    PanopticEvaluator,
    SemSegEvaluator,
    read_panoptic_png,
)

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _evaluate_all(fixtures: Path, rank: int, world_size: int) -> dict:
    """Every evaluator over this rank's shard (images[rank::world_size])."""
    out = {}
    sem = fixtures / "semantic"
    case = json.loads((sem / "expected.json").read_text())["cases"]["c150_reduce_zero_label"]
    for convention in ("mmseg", "detectron2"):
        ev = SemSegEvaluator(150, reduce_zero_label=True, convention=convention)
        for name in case["images"][rank::world_size]:
            gt = np.array(Image.open(sem / case["gt_dir"] / name))
            pred = np.array(Image.open(sem / case["pred_dir"] / name))
            ev.process(pred, gt, name)
        out[f"semantic_{convention}"] = ev.evaluate()

    pan = fixtures / "panoptic"
    gt_json = json.loads((pan / "panoptic_gt.json").read_text())
    preds = {
        a["image_id"]: a
        for a in json.loads((pan / "panoptic_pred.json").read_text())["annotations"]
    }
    ev = PanopticEvaluator(gt_json["categories"])
    for ann in gt_json["annotations"][rank::world_size]:
        p = preds[ann["image_id"]]
        ev.process(
            read_panoptic_png(pan / "panoptic_gt" / ann["file_name"]),
            ann["segments_info"],
            read_panoptic_png(pan / "panoptic_pred" / p["file_name"]),
            p["segments_info"],
            image_id=ann["image_id"],
        )
    out["panoptic"] = ev.evaluate()

    ins = fixtures / "instance"
    ev = InstanceEvaluator(ins / "instances_gt.json")
    dets = json.loads((ins / "detections.json").read_text())
    image_ids = sorted(ev.coco_gt.imgs)[rank::world_size]
    for image_id in image_ids:
        ev.process(image_id, [d for d in dets if d["image_id"] == image_id])
    out["instance"] = ev.evaluate()

    # official Cityscapes AP on generated scenes (the same 10 on every rank, each scored once)
    rng = np.random.default_rng(7)
    scenes = [_scene(rng) for _ in range(10)]
    ev = CityscapesInstanceEvaluator()
    for i in range(rank, len(scenes), world_size):
        gt, preds = scenes[i]
        masks = np.stack([m for m, _, _ in preds]) if preds else np.zeros((0, *gt.shape), bool)
        ev.process(i, gt, masks, [p[1] for p in preds], [p[2] for p in preds])
    out["cityscapes_instance"] = ev.evaluate()
    return out


def _worker(rank: int, port: int, fixtures: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        result = _evaluate_all(Path(fixtures), rank, WORLD_SIZE)
        (Path(out_dir) / f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    finally:
        dist.destroy_process_group()


def _assert_close(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        # sums of IoUs add in another order across ranks: equal up to float64 rounding
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12, nan_ok=True), path
    else:
        assert a == b, path


def test_two_process_gloo_equals_single_process(metrics_dir, tmp_path):
    single = _evaluate_all(metrics_dir, 0, 1)
    mp.spawn(
        _worker,
        args=(_free_port(), str(metrics_dir), str(tmp_path)),
        nprocs=WORLD_SIZE,
        join=True,
    )
    for rank in range(WORLD_SIZE):
        sharded = pickle.loads((tmp_path / f"rank{rank}.pkl").read_bytes())
        _assert_close(sharded, single, f"rank{rank}")
    # and the single-process numbers are the reference ones
    assert single["panoptic"]["summary"]["All"]["n"] == 12
    assert single["semantic_detectron2"]["num_images"] == 12
    assert single["cityscapes_instance"]["num_images"] == 10
