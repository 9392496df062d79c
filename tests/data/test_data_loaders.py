"""Training and test loaders on the synthetic dataset: batch layout, exact resume, sharding."""

import itertools

import pytest
import torch

from ovseg.data import (
    DataConfig,
    DatasetConfig,
    TrainAugConfig,
    build_test_loader,
    build_train_loader,
)
from ovseg.data.synthetic import make_synthetic_coco_panoptic


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    out = make_synthetic_coco_panoptic(tmp_path_factory.mktemp("synth"), 10, (48, 64), seed=2)
    ds = DatasetConfig(image_root=str(out.image_root), panoptic_json=str(out.panoptic_json),
                       panoptic_root=str(out.panoptic_root))  # fmt: skip
    return DataConfig(train=ds, test=ds, batch_size=3, num_workers=0, pin_memory=False,
                      aug=TrainAugConfig(crop_size=56, min_scale=0.5, max_scale=1.5))  # fmt: skip


def _batches(loader, n):
    return list(itertools.islice(iter(loader), n))


def _same(a, b):
    assert a["indices"] == b["indices"] and a["image_sizes"] == b["image_sizes"]
    assert torch.equal(a["images"], b["images"])
    for ta, tb in zip(a["targets"], b["targets"]):
        assert torch.equal(ta["labels"], tb["labels"]) and torch.equal(ta["masks"], tb["masks"])


def test_train_batch_layout(cfg):
    batch = _batches(build_train_loader(cfg, seed=0), 1)[0]
    images = batch["images"]
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 56, 56)
    for img, t, (h, w) in zip(images, batch["targets"], batch["image_sizes"]):
        assert t["labels"].dtype == torch.int64 and t["masks"].dtype == torch.bool
        assert t["masks"].shape == (len(t["labels"]), 56, 56)
        assert len(t["labels"]) > 0 and t["masks"].flatten(1).any(1).all()  # no empty mask
        assert not img[:, h:].any() and not img[:, :, w:].any()  # zero padding
        assert not t["masks"][:, h:].any() and not t["masks"][:, :, w:].any()
        assert t["masks"][:, :h, :w].sum(0).max() <= 1
    assert batch["num_skipped"] == 0
    assert batch["vocabulary"].names == [
        "circle",
        "square",
        "triangle",
        "sky",
        "grass",
        "water",
    ]


def test_exact_resume_matches_a_straight_run(cfg):
    straight = _batches(build_train_loader(cfg, seed=7), 6)
    loader = build_train_loader(cfg, seed=7)
    first = _batches(loader, 2)
    state = loader.state_dict()
    assert state["position"] == 6
    resumed = build_train_loader(cfg, seed=7)
    resumed.load_state_dict(state)
    for a, b in zip(first + _batches(resumed, 4), straight):
        _same(a, b)


def test_workers_do_not_change_the_data(cfg):
    base = _batches(build_train_loader(cfg, seed=1), 3)
    cfg2 = DataConfig(**{**cfg.__dict__, "num_workers": 2})
    loader = build_train_loader(cfg2, seed=1)
    for a, b in zip(base, _batches(loader, 3)):
        _same(a, b)
    # A prefetching loader still reports the samples handed out, not those prefetched.
    assert loader.state_dict()["position"] == 9


def test_two_ranks_equal_one_process_with_the_same_global_batch(cfg):
    single = _batches(
        build_train_loader(DataConfig(**{**cfg.__dict__, "batch_size": 4}), seed=3), 2
    )
    half = DataConfig(**{**cfg.__dict__, "batch_size": 2})
    ranks = [_batches(build_train_loader(half, seed=3, rank=r, world_size=2), 2) for r in range(2)]
    for step in range(2):
        got = {}
        for r in range(2):
            b = ranks[r][step]
            for i, img, t in zip(b["indices"], b["images"], b["targets"]):
                got[i] = (img, t["masks"])
        ref = single[step]
        assert sorted(got) == sorted(ref["indices"])
        for i, img, t in zip(ref["indices"], ref["images"], ref["targets"]):
            assert torch.equal(got[i][0], img) and torch.equal(got[i][1], t["masks"])


def test_test_loader_shards_and_records(cfg):
    seen = []
    for rank in range(3):
        for (sample,) in build_test_loader(cfg, rank=rank, world_size=3):
            assert sample["image"].shape == (3, 48, 64) and sample["image"].dtype == torch.uint8
            assert sample["record"]["image_id"] == sample["index"] + 1
            seen.append(sample["index"])
    assert seen == list(range(10))
