"""The evaluation runner: ground truth fed back as the prediction scores 100 (proving the
vocabulary-index -> dataset-id mapping on a config dataset and on a benchmark whose panoptic ids
are 0-based while its vocabulary ids are 1-based), wrong ids do not, 2-process gloo equals one
process, and ``evaluate`` with the tiny model honours ``limit`` and the instance JSON subset."""

from __future__ import annotations

import json
import math
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from ovseg.data import DatasetConfig, build_dataset, make_synthetic_coco_panoptic
from ovseg.data.benchmarks import load_benchmark
from ovseg.evaluation.instance import encode_mask
from ovseg.evaluation.panoptic import id2rgb
from ovseg.evaluation.runner import (
    EvalSource,
    TaskEvaluators,
    as_source,
    evaluate,
    summarize,
)
from ovseg.structures import Instances, Prediction
from ovseg.text.vocabulary import Vocabulary

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "ovseg" / "configs" / "tests" / "fcclip_tiny.yaml"


def gt_prediction(source: EvalSource, index: int, shift: int = 0) -> Prediction:
    """The ground truth of record ``index`` as a model would return it (vocabulary indices);
    ``shift`` moves every class index by that much (a wrong id mapping)."""
    vocab = source.vocabulary
    n = len(vocab)
    to_index = {cid: k for k, cid in enumerate(source.category_ids)}
    record = source.records[index]
    h, w = record["height"], record["width"]
    pred = Prediction(vocabulary=vocab, image_size=(h, w))
    if "semantic" in source.tasks:
        gt = source.semantic_gt(index)
        if source.reduce_zero_label:
            gt = np.where(gt == 0, 0, gt - 1)
        labels = np.where((gt >= 0) & (gt < n), (gt + shift) % n, 0)
        pred.sem_seg = torch.nn.functional.one_hot(torch.from_numpy(labels), n).permute(2, 0, 1)
        pred.sem_seg = pred.sem_seg.float()
    if "panoptic" in source.tasks or "instance" in source.tasks:
        ids, segments = source.panoptic_gt(index)
        # crowd regions are left unpredicted (panopticapi ignores only one crowd region per class)
        crowd = [s["id"] for s in segments if s.get("iscrowd", 0)]
        ids = np.where(np.isin(ids, crowd), 0, ids)
        segments = [s for s in segments if not s.get("iscrowd", 0)]
        pred.panoptic_seg = torch.from_numpy(ids.astype(np.int32))
        pred.segments_info = [
            {"id": s["id"], "category_id": (to_index[s["category_id"]] + shift) % n,
             "isthing": vocab[to_index[s["category_id"]]].isthing, "score": 1.0}
            for s in segments
        ]  # fmt: skip
        things = [s for s in segments if vocab[to_index[s["category_id"]]].isthing]
        masks = np.stack([ids == s["id"] for s in things]) if things else np.zeros((0, h, w), bool)
        pred.instances = Instances(
            masks=torch.from_numpy(masks),
            scores=torch.ones(len(things)),
            labels=torch.tensor([(to_index[s["category_id"]] + shift) % n for s in things]),
        )
    return pred


def _score(source: EvalSource, shift: int = 0, indices=None) -> dict:
    ev = TaskEvaluators(source, "all")
    for i in range(len(source)) if indices is None else indices:
        ev.process(i, gt_prediction(source, i, shift))
    return ev.evaluate()


@pytest.fixture(scope="module")
def coco_source(tmp_path_factory) -> EvalSource:
    root = tmp_path_factory.mktemp("coco")
    syn = make_synthetic_coco_panoptic(root, num_images=4, size=(48, 64), split="val2017",
                                       crowd_prob=0.3, seed=3)  # fmt: skip
    cfg = DatasetConfig(type="coco_panoptic", image_root=str(syn.image_root),
                        panoptic_json=str(syn.panoptic_json), panoptic_root=str(syn.panoptic_root))  # fmt: skip
    return as_source(build_dataset(cfg, train=False))


def test_config_dataset_ground_truth_scores_100(coco_source):
    assert coco_source.tasks == ("semantic", "panoptic", "instance")
    assert coco_source.category_ids == [1, 2, 3, 21, 22, 23]
    result = _score(coco_source)
    s = summarize(result)
    assert s["PQ"] == pytest.approx(100.0) and s["PQ_th"] == pytest.approx(100.0)
    assert s["mIoU"] == pytest.approx(100.0) and s["aAcc"] == pytest.approx(100.0)
    assert s["AP"] == pytest.approx(100.0)
    assert result["panoptic"]["summary"]["All"]["n"] == 6
    assert result["instance"]["num_images"] == 4


def test_wrong_class_mapping_is_penalised(coco_source):
    s = summarize(_score(coco_source, shift=1))
    assert s["PQ"] == 0.0 and s["mIoU"] == 0.0 and s["AP"] == 0.0


def _write_ade150(root: Path, num_images: int = 2) -> None:
    """An ADE20K-150 layout: panoptic ids 0..149 (FC-CLIP's), labels 0..149, instance JSON with the
    same 0-based ids for the 100 thing classes; a wall (0), a floor (3) and a bed (7) + person (12)."""
    base = root / "ADEChallengeData2016"
    vocab = Vocabulary.from_name("ade20k-150")
    folders = ["images/validation", "annotations_detectron2/validation", "ade20k_panoptic_val"]
    for f in folders:
        (base / f).mkdir(parents=True, exist_ok=True)
    images, pan_anns, ins_anns = [], [], []
    h, w = 24, 32
    for k in range(num_images):
        stem = f"ADE_val_{k + 1:08d}"
        ids = np.zeros((h, w), np.int64)  # void on the last column
        ids[:12, :-1] = 1  # wall
        ids[12:, :-1] = 2  # floor
        ids[4:10, 4 + k : 12 + k] = 3  # bed
        ids[14:22, 20:26] = 4  # person
        segs = [(1, 0), (2, 3), (3, 7), (4, 12)]
        label = np.full((h, w), 255, np.uint8)
        for sid, cid in segs:
            label[ids == sid] = cid
        Image.fromarray(np.full((h, w, 3), 90 + 40 * k, np.uint8)).save(
            base / "images/validation" / f"{stem}.jpg"
        )
        Image.fromarray(label).save(base / "annotations_detectron2/validation" / f"{stem}.png")
        Image.fromarray(id2rgb(ids)).save(base / "ade20k_panoptic_val" / f"{stem}.png")
        images.append({"id": k + 1, "file_name": f"{stem}.jpg", "height": h, "width": w})
        pan_anns.append({"image_id": k + 1, "file_name": f"{stem}.png", "segments_info": [
            {"id": sid, "category_id": cid, "iscrowd": 0, "area": int((ids == sid).sum())}
            for sid, cid in segs]})  # fmt: skip
        for sid, cid in segs:
            if vocab[cid].isthing:
                ins_anns.append({"id": len(ins_anns) + 1, "image_id": k + 1, "category_id": cid,
                                 "segmentation": encode_mask(ids == sid), "iscrowd": 0,
                                 "area": int((ids == sid).sum())})  # fmt: skip
    cats = [{"id": i, "name": c.name, "isthing": int(c.isthing)} for i, c in enumerate(vocab)]
    (base / "ade20k_panoptic_val.json").write_text(
        json.dumps({"images": images, "annotations": pan_anns, "categories": cats})
    )
    things = [c for c in cats if c["isthing"]]
    (base / "ade20k_instance_val.json").write_text(
        json.dumps({"images": images, "annotations": ins_anns, "categories": things})
    )


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    _write_ade150(root)
    return root


def test_benchmark_ground_truth_scores_100(ade_root):
    source = as_source(load_benchmark("ade20k-150", ade_root))
    # vocabulary ids are 1-based (FC-CLIP's txt), the panoptic json's 0-based: the json wins
    assert source.vocabulary[0].id == 1 and source.category_ids[:3] == [0, 1, 2]
    assert source.instances_json is not None
    result = _score(source)
    s = summarize(result)
    assert s["PQ"] == pytest.approx(100.0)
    assert s["mIoU"] == pytest.approx(100.0)
    assert s["AP"] == pytest.approx(100.0)
    assert result["panoptic"]["summary"]["All"]["n"] == 4
    # semantic classes without ground truth are NaN (detectron2): only 4 of 150 count
    iou = result["semantic"]["per_class_percent"]["IoU"]
    assert [i for i, v in enumerate(iou) if v is not None] == [0, 3, 7, 12]


def test_instance_json_restricted_to_processed_images(ade_root):
    source = as_source(load_benchmark("ade20k-150", ade_root))
    result = _score(source, indices=[0])
    assert result["instance"]["num_images"] == 1
    assert summarize(result)["AP"] == pytest.approx(100.0)  # image 2's objects are not misses


def test_task_not_in_ground_truth_is_named(tmp_path):
    from ovseg.data import make_synthetic_semantic_folder
    from ovseg.evaluation.errors import EvaluationError

    syn = make_synthetic_semantic_folder(tmp_path, num_images=1, size=(16, 16))
    cfg = DatasetConfig(type="semantic_folder", image_dir=str(syn.image_dir),
                        label_dir=str(syn.label_dir), classes=str(syn.classes), img_suffix=".png")  # fmt: skip
    source = as_source(build_dataset(cfg, train=False))
    assert source.tasks == ("semantic",)
    with pytest.raises(EvaluationError, match="no panoptic ground truth"):
        TaskEvaluators(source, "panoptic")
    assert summarize(_score(source))["mIoU"] == pytest.approx(100.0)


def _write_cityscapes(root: Path) -> None:
    """A one-image Cityscapes val set: 2 cars, a person, a crowd of cars, void pixels."""
    from ovseg.data.prepare import prepare

    key = "frankfurt_000000_000294"
    raw = root / "raw"
    img = raw / "leftImg8bit/val/frankfurt" / f"{key}_leftImg8bit.png"
    gt = raw / "gtFine/val/frankfurt"
    img.parent.mkdir(parents=True)
    gt.mkdir(parents=True)
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(img)
    label = np.full((48, 64), 7, np.uint8)
    label[:8] = 23
    label[8:12, :8] = 4  # static: void
    inst = label.astype(np.uint16)
    for value, (y, x, h, w) in {26000: (12, 0, 12, 16), 26001: (12, 20, 12, 16),
                                24000: (30, 0, 16, 10), 26: (30, 30, 10, 20)}.items():  # fmt: skip
        label[y : y + h, x : x + w] = value // 1000 or value
        inst[y : y + h, x : x + w] = value
    Image.fromarray(label).save(gt / f"{key}_gtFine_labelIds.png")
    Image.fromarray(inst).save(gt / f"{key}_gtFine_instanceIds.png")
    prepare("cityscapes", raw, root / "data")


def test_cityscapes_instances_use_the_official_rules(tmp_path):
    from ovseg.evaluation.cityscapes_instance import evaluate_cityscapes_instance_dirs

    _write_cityscapes(tmp_path)
    source = as_source(load_benchmark("cityscapes", tmp_path / "data"))
    assert source.cityscapes_instances
    ev = TaskEvaluators(source, "all", export_dir=tmp_path / "export")
    ev.process(0, gt_prediction(source, 0))
    result = ev.evaluate()
    classes = result["instance"]["averages"]["classes"]
    assert classes["car"]["ap"] == pytest.approx(1.0)
    assert classes["person"]["ap"] == pytest.approx(1.0)
    assert classes["bus"]["ap"] is None or math.isnan(classes["bus"]["ap"])  # no ground truth
    assert summarize(result)["AP"] == pytest.approx(100.0)
    # the exported official-format predictions give the same numbers offline
    offline = evaluate_cityscapes_instance_dirs(
        tmp_path / "data/cityscapes/gtFine/val", tmp_path / "export/cityscapes_instance"
    )
    np.testing.assert_array_equal(offline["resultApMatrix"], result["instance"]["resultApMatrix"])
    # a wrong vocabulary -> label id mapping is penalised
    assert summarize(_score(source, shift=1))["AP"] < 50


# ------------------------------------------------------------------------ distributed
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _noisy(source: EvalSource) -> dict:
    """Images 0 and 2 perfect, 1 and 3 with shifted classes: a result that is not all 0 or 100."""
    ev = TaskEvaluators(source, "all")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    for i in list(range(len(source)))[rank::world]:
        ev.process(i, gt_prediction(source, i, shift=i % 2))
    return ev.evaluate()


def _worker(rank: int, port: int, source_pkl: bytes, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)  # fmt: skip
    try:
        result = _noisy(pickle.loads(source_pkl))
        (Path(out_dir) / f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    finally:
        dist.destroy_process_group()


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12, nan_ok=True), path
    else:
        assert a == b, path


def test_two_process_gloo_equals_single_process(coco_source, tmp_path):
    # a picklable source: the config dataset's semantic reader is a bound method of the dataset
    single = _noisy(coco_source)
    s = summarize(single)
    assert 0 < s["PQ"] < 100 and 0 < s["mIoU"] < 100 and 0 < s["AP"] < 100
    mp.spawn(_worker, args=(_free_port(), pickle.dumps(coco_source), str(tmp_path)), nprocs=2,
             join=True)  # fmt: skip
    for rank in range(2):
        _close(pickle.loads((tmp_path / f"rank{rank}.pkl").read_bytes()), single, f"rank{rank}")


# ------------------------------------------------------------------------ with the model
@pytest.mark.skipif(not TINY.is_file(), reason="tiny config missing")
def test_evaluate_with_tiny_model_limit_and_exports(ade_root, tmp_path):
    from ovseg.inference.segmenter import Segmenter

    seg = Segmenter.from_config(TINY, overrides=["model.test.min_size=32",
                                                 "model.test.max_size=48"])  # fmt: skip
    bench = load_benchmark("ade20k-150", ade_root, tasks=["panoptic", "semantic"])
    result = evaluate(seg, bench, out_dir=tmp_path, save_predictions=True, limit=1,
                      progress=False, meta={"weights": None})  # fmt: skip
    assert set(result) == {"semantic", "panoptic", "meta"}
    meta = result["meta"]
    assert meta["num_images"] == 1 and meta["test_size"] == [32, 48]
    assert meta["tasks"] == ["semantic", "panoptic"] and meta["weights"] is None
    assert result["semantic"]["num_images"] == 1 and result["panoptic"]["num_images"] == 1
    assert math.isfinite(result["semantic"]["summary_percent"]["aAcc"])
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["meta"]["dataset"] == "ade20k-150"
    sem = np.asarray(Image.open(tmp_path / "predictions/semantic/ADE_val_00000001.png"))
    assert sem.shape == (24, 32) and sem.max() < 150
    pan = json.loads((tmp_path / "predictions/panoptic.json").read_text())
    assert [a["file_name"] for a in pan["annotations"]] == ["ADE_val_00000001.png"]
    assert len(pan["categories"]) == 150
    # slide mode scores the semantic task only: asking for more fails before any image
    from ovseg.evaluation.errors import EvaluationError

    seg.config.model.test.mode = "slide"
    with pytest.raises(EvaluationError, match="semantic task only; got semantic, panoptic"):
        evaluate(seg, bench, limit=1, progress=False)
    slid = evaluate(seg, bench, tasks="semantic", limit=1, progress=False)
    assert slid["meta"]["test_mode"] == "slide" and slid["semantic"]["num_images"] == 1
