"""LSJ augmentation keeps image and masks aligned; test-time resize matches detectron2."""

import numpy as np
import pytest

from ovseg.data import TrainAugConfig, build_train_transform, shortest_edge_size
from ovseg.data.transforms import apply_train_transform

COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)


def _scene(h=90, w=120):
    """A segment map of 4 blocks (left-right asymmetric) and an image coloured by segment."""
    seg = np.zeros((h, w), np.uint16)
    seg[: h // 2, w // 3 :] = 1
    seg[h // 2 :, : w // 4] = 2
    seg[h // 2 :, w // 2 :] = 3
    return COLOURS[seg], seg


@pytest.mark.parametrize("seed", range(8))
def test_masks_stay_aligned_with_the_image(seed):
    image, seg = _scene()
    transform = build_train_transform(TrainAugConfig(crop_size=64, min_scale=0.3, max_scale=2.5))
    out_img, out_seg = apply_train_transform(transform, image, seg, seed=seed)
    assert out_img.shape[:2] == out_seg.shape and max(out_seg.shape) <= 64
    assert out_img.dtype == np.uint8 and out_seg.dtype == np.uint16
    # Away from segment edges (bilinear blending) every pixel has its segment's colour.
    interior = np.ones(out_seg.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            interior &= np.roll(out_seg, (dy, dx), axis=(0, 1)) == out_seg
    interior[[0, -1]] = interior[:, [0, -1]] = False
    diff = np.abs(out_img.astype(int) - COLOURS[out_seg].astype(int)).max(-1)
    assert interior.sum() > 0.3 * interior.size
    assert (diff[interior] <= 2).all()


def test_scale_is_random_and_seeded():
    image, seg = _scene(64, 64)
    transform = build_train_transform(TrainAugConfig(crop_size=64, min_scale=0.5, max_scale=1.5))
    outs = [apply_train_transform(transform, image, seg, seed=s) for s in range(16)]
    sizes = {o[1].shape for o in outs}
    assert len(sizes) > 4  # random scales
    a = apply_train_transform(transform, image, seg, seed=5)
    b = apply_train_transform(transform, image, seg, seed=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_flip_only_mirrors_image_and_mask_together():
    image, seg = _scene(40, 40)
    cfg = TrainAugConfig(crop_size=40, min_scale=1.0, max_scale=1.0, hflip=True)
    transform = build_train_transform(cfg)
    seen = set()
    for s in range(12):
        img, out = apply_train_transform(transform, image, seg, seed=s)
        assert out.shape == (40, 40)
        mirrored = np.array_equal(out, seg[:, ::-1])
        assert mirrored or np.array_equal(out, seg)
        np.testing.assert_array_equal(img, COLOURS[out])
        seen.add(mirrored)
    assert seen == {True, False}


def test_lsj_output_size_follows_detectron2():
    # scale fixed at 0.5 of a 100 crop: the long side becomes 50, the crop keeps all of it.
    image, seg = _scene(80, 40)
    cfg = TrainAugConfig(crop_size=100, min_scale=0.5, max_scale=0.5, hflip=False)
    _out_img, out_seg = apply_train_transform(build_train_transform(cfg), image, seg, seed=0)
    assert out_seg.shape == (50, 25)
    # scale 2: 80x40 → 200x100, then a random 100x100 window
    cfg = TrainAugConfig(crop_size=100, min_scale=2.0, max_scale=2.0, hflip=False)
    _, out_seg = apply_train_transform(build_train_transform(cfg), image, seg, seed=0)
    assert out_seg.shape == (100, 100)


def test_shortest_edge_size_matches_detectron2():
    # detectron2 ResizeShortestEdge.get_output_shape(h, w, short, max)
    assert shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    assert shortest_edge_size(640, 480, 800, 1333) == (1067, 800)
    assert shortest_edge_size(300, 1000, 800, 1333) == (400, 1333)
    assert shortest_edge_size(512, 683, 640, 2560) == (640, 854)
    assert shortest_edge_size(100, 100, 50) == (50, 50)
