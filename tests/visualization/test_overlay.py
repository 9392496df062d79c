"""Overlay, legend, label maps and segments tables on hand-made predictions (real dataclasses)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.structures import Instances, Prediction
from ovseg.text.vocabulary import Vocabulary
from ovseg.visualization import (
    class_color,
    draw_legend,
    label_map,
    legend_entries,
    overlay,
    segments_table,
    visualize,
)

H, W = 40, 60
VOCAB = Vocabulary.parse("zebra, zebras; dry grass, hay [stuff]; sky [stuff]; tree; person")


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _panoptic() -> Prediction:
    pan = torch.zeros(H, W, dtype=torch.int32)
    pan[0:10, :] = 7  # sky, top band: bbox [0, 0, 60, 10]
    pan[10:40, 0:30] = 3  # grass
    pan[15:25, 35:55] = 12  # zebra
    # pan[10:40, 30:60] outside the zebra stays void (0)
    info = [
        {"id": 3, "category_id": 1, "isthing": False, "score": 0.8, "label": "dry grass"},
        {"id": 7, "category_id": 2, "isthing": False, "score": 0.95, "label": "sky"},
        {"id": 12, "category_id": 0, "isthing": True, "score": 0.9, "label": "zebra"},
    ]
    return Prediction(vocabulary=VOCAB, image_size=(H, W), panoptic_seg=pan, segments_info=info)


def _semantic() -> Prediction:
    scores = torch.zeros(len(VOCAB), H, W)
    scores[2] = 0.1  # sky wins wherever nothing else is set
    scores[1, 20:40, :] = 0.6  # grass: rows 20..39
    scores[4, 25:30, 5:15] = 0.9  # person: a 5 x 10 block inside the grass
    return Prediction(vocabulary=VOCAB, image_size=(H, W), sem_seg=scores)


def _instances() -> Prediction:
    masks = torch.zeros(3, H, W, dtype=torch.bool)
    masks[0, 5:15, 5:25] = True  # zebra, 0.6
    masks[1, 10:30, 20:40] = True  # zebra, 0.9, overlaps mask 0
    masks[2, 30:35, 50:55] = True  # tree, 0.2 (below a 0.5 threshold)
    inst = Instances(
        masks=masks, scores=torch.tensor([0.6, 0.9, 0.2]), labels=torch.tensor([0, 0, 3])
    )
    return Prediction(vocabulary=VOCAB, image_size=(H, W), instances=inst)


def _blend(pixel: np.ndarray, color: tuple[int, int, int], alpha: float) -> np.ndarray:
    return np.round((1 - alpha) * pixel.astype(np.float64) + alpha * np.array(color)).astype(
        np.uint8
    )


# ----------------------------------------------------------------------------- overlay
def test_panoptic_overlay_tints_regions_with_class_colour():
    img = _image()
    out = overlay(img, _panoptic(), "panoptic", alpha=0.5)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    # Interior pixels (away from boundaries) are blended with their class colour.
    np.testing.assert_array_equal(out[20, 45], _blend(img[20, 45], class_color(0), 0.5))  # zebra
    np.testing.assert_array_equal(out[25, 10], _blend(img[25, 10], class_color(1), 0.5))  # grass
    np.testing.assert_array_equal(out[4, 30], _blend(img[4, 30], class_color(2), 0.5))  # sky
    # Void is left untouched.
    np.testing.assert_array_equal(out[35, 45], img[35, 45])
    # Boundary pixels are drawn in a darker shade of the segment's class colour.
    edge = np.round(np.array(class_color(0)) * 0.45).astype(np.uint8)
    np.testing.assert_array_equal(out[15, 45], edge)
    np.testing.assert_array_equal(out[20, 35], edge)


def test_overlay_alpha_and_no_boundaries():
    img = _image()
    full = overlay(img, _panoptic(), "panoptic", alpha=1.0, boundaries=False)
    assert tuple(full[15, 45]) == class_color(0)  # no outline when boundaries=False
    none = overlay(img, _panoptic(), "panoptic", alpha=0.0, boundaries=False)
    np.testing.assert_array_equal(none, img)
    with pytest.raises(ValueError, match="alpha"):
        overlay(img, _panoptic(), "panoptic", alpha=1.5)


def test_semantic_overlay():
    img = _image()
    out = overlay(img, _semantic(), "semantic", alpha=0.3)
    np.testing.assert_array_equal(out[27, 10], _blend(img[27, 10], class_color(4), 0.3))
    np.testing.assert_array_equal(out[35, 40], _blend(img[35, 40], class_color(1), 0.3))
    np.testing.assert_array_equal(out[5, 5], _blend(img[5, 5], class_color(2), 0.3))


def test_instance_overlay_threshold_and_overlap():
    img = _image()
    pred = _instances()
    out = overlay(img, pred, "instance", alpha=0.5, score_threshold=0.5)
    np.testing.assert_array_equal(out[8, 10], _blend(img[8, 10], class_color(0), 0.5))
    np.testing.assert_array_equal(out[32, 52], img[32, 52])  # the 0.2 tree is not drawn
    np.testing.assert_array_equal(out[2, 2], img[2, 2])  # background
    # Both outlines survive the overlap: mask 0's right edge inside mask 1's area is outlined.
    edge = np.round(np.array(class_color(0)) * 0.45).astype(np.uint8)
    np.testing.assert_array_equal(out[12, 24], edge)
    with_tree = overlay(img, pred, "instance", alpha=0.5, score_threshold=0.0)
    np.testing.assert_array_equal(with_tree[32, 52], _blend(img[32, 52], class_color(3), 0.5))


def test_overlay_errors():
    img = _image()
    with pytest.raises(ValueError, match="no semantic output"):
        overlay(img, _panoptic(), "semantic")
    with pytest.raises(ValueError, match="task must be one of"):
        overlay(img, _panoptic(), "depth")
    with pytest.raises(ValueError, match="40x60"):
        overlay(np.zeros((10, 10, 3), np.uint8), _panoptic(), "panoptic")


# ----------------------------------------------------------------------------- legend
def _panel_colours(canvas: np.ndarray) -> set[tuple[int, int, int]]:
    panel = canvas[:, W:].reshape(-1, 3)
    return {tuple(int(v) for v in c) for c in np.unique(panel, axis=0)}


@pytest.mark.parametrize(
    ("make", "task", "threshold", "expected"),
    [
        (_panoptic, "panoptic", 0.0, ["zebra", "dry grass", "sky"]),
        (_semantic, "semantic", 0.0, ["dry grass", "sky", "person"]),
        (_instances, "instance", 0.5, ["zebra"]),
        (_instances, "instance", 0.0, ["zebra", "tree"]),
    ],
)
def test_legend_lists_exactly_the_labels_present(make, task, threshold, expected):
    pred = make()
    entries = legend_entries(pred, task, threshold)
    assert [e.label for e in entries] == expected  # vocabulary order, no absent class
    canvas = visualize(_image(), pred, task, score_threshold=threshold)
    assert canvas.dtype == np.uint8 and canvas.shape[1] > W and canvas.shape[0] >= H
    colours = _panel_colours(canvas)
    for c in range(len(VOCAB)):
        # A swatch for each listed class, and no swatch for any other class.
        assert (class_color(c) in colours) == (VOCAB.names[c] in expected), VOCAB.names[c]


def test_legend_never_covers_the_image():
    img = _image()
    pred = _panoptic()
    canvas = visualize(img, pred, "panoptic")
    np.testing.assert_array_equal(canvas[:H, :W], overlay(img, pred, "panoptic"))


def test_legend_grows_columns_or_canvas_for_many_labels():
    img = np.zeros((30, 20, 3), np.uint8)  # too short for more than one line per column
    vocab = Vocabulary([f"class {i}" for i in range(12)])
    from ovseg.visualization import LegendEntry

    entries = [LegendEntry(i, n, class_color(i)) for i, n in enumerate(vocab.names)]
    canvas = draw_legend(img, entries)
    np.testing.assert_array_equal(canvas[:30, :20], img)
    colours = {tuple(int(v) for v in c) for c in np.unique(canvas[:, 20:].reshape(-1, 3), axis=0)}
    assert all(class_color(i) in colours for i in range(12))
    empty = draw_legend(img, [])
    assert empty.shape[1] > 20  # a "(no segments)" panel


# ----------------------------------------------------------------------------- tables
def test_panoptic_segments_table():
    rows = segments_table(_panoptic(), "panoptic")
    assert rows == [
        {"id": 3, "category_id": 1, "label": "dry grass", "isthing": False, "score": 0.8,
         "area": 30 * 30, "bbox": [0, 10, 30, 40]},
        {"id": 7, "category_id": 2, "label": "sky", "isthing": False, "score": 0.95,
         "area": 10 * 60, "bbox": [0, 0, 60, 10]},
        {"id": 12, "category_id": 0, "label": "zebra", "isthing": True, "score": 0.9,
         "area": 10 * 20, "bbox": [35, 15, 55, 25]},
    ]  # fmt: skip


def test_semantic_segments_table():
    rows = segments_table(_semantic(), "semantic")
    by_label = {r["label"]: r for r in rows}
    assert [r["category_id"] for r in rows] == [1, 2, 4]
    assert by_label["person"]["area"] == 50 and by_label["person"]["bbox"] == [5, 25, 15, 30]
    assert by_label["dry grass"]["area"] == 20 * 60 - 50
    assert by_label["dry grass"]["bbox"] == [0, 20, 60, 40]
    assert by_label["sky"]["area"] == 20 * 60 and by_label["sky"]["bbox"] == [0, 0, 60, 20]
    assert by_label["person"]["score"] == pytest.approx(0.9)
    assert by_label["sky"]["score"] == pytest.approx(0.1)
    assert by_label["sky"]["isthing"] is False and by_label["person"]["isthing"] is True
    np.testing.assert_array_equal(label_map(_semantic(), "semantic")[27, 10], 4)


def test_instance_segments_table_and_label_map():
    pred = _instances()
    rows = segments_table(pred, "instance", score_threshold=0.5)
    assert [(r["id"], r["label"], r["score"]) for r in rows] == [
        (1, "zebra", 0.9),
        (2, "zebra", 0.6),
    ]
    assert rows[0]["area"] == 20 * 20 and rows[0]["bbox"] == [20, 10, 40, 30]
    assert rows[1]["area"] == 10 * 20 and rows[1]["bbox"] == [5, 5, 25, 15]  # full mask, overlap in
    lm = label_map(pred, "instance", score_threshold=0.5)
    assert lm.shape == (H, W)
    assert lm[12, 22] == 1  # the overlap goes to the higher score
    assert lm[6, 6] == 2 and lm[32, 52] == 0 and lm[0, 0] == 0
    assert len(segments_table(pred, "instance")) == 3


def test_bbox_matches_a_per_segment_reference():
    rng = np.random.default_rng(1)
    pan = rng.integers(0, 6, (33, 47)).astype(np.int32)
    pan[:, :3] = 4  # id 4 spans every row
    info = [
        {"id": i, "category_id": i % len(VOCAB), "isthing": True, "score": 0.5} for i in range(1, 8)
    ]  # ids 6 and 7 have no pixels
    pred = Prediction(vocabulary=VOCAB, image_size=(33, 47), panoptic_seg=torch.from_numpy(pan),
                      segments_info=info)  # fmt: skip
    for row in segments_table(pred, "panoptic"):
        ys, xs = np.nonzero(pan == row["id"])
        assert row["area"] == len(ys)
        if len(ys):
            assert row["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        else:
            assert row["bbox"] is None
        assert row["label"] == VOCAB.names[row["category_id"]]  # falls back to the vocabulary
