"""Sliding-window inference (``model.test.mode: slide``): the window grid, equality with
whole-image inference for one window, equality with a hand-made average of whole-image
predictions on the crops, and the errors for bad settings and non-semantic tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ovseg_testing import REPO

from ovseg import Segmenter, Vocabulary
from ovseg.config import ConfigError, load_config
from ovseg.inference.sliding import Window, axis_starts, sliding_windows
from ovseg.utils.image import resize_shortest_edge
from ovseg.utils.timing import StageTimer

TINY = REPO / "ovseg/configs/tests/fcclip_tiny.yaml"
VOCAB = Vocabulary.parse("person, man; zebra; dry grass, hay [stuff]; sky [stuff]")


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------- the grid
def test_grid_example_overlapping_and_flush():
    # 280 x 320 image, 200 x 240 crops every 50 / 60 px: mmseg's grids (80 + 49) // 50 + 1 = 3
    # rows and (80 + 59) // 60 + 1 = 3 columns; the last of each moved back to end at the border.
    wins = sliding_windows((280, 320), (200, 240), (50, 60))
    assert [(w.y1, w.x1) for w in wins] == [(y, x) for y in (0, 50, 80) for x in (0, 60, 80)]
    assert all(w.size == (200, 240) for w in wins)
    assert wins[-1] == Window(80, 280, 80, 320)


def test_grid_image_smaller_than_crop():
    assert sliding_windows((90, 130), (200, 240), (100, 100)) == [Window(0, 90, 0, 130)]
    assert sliding_windows((200, 240), (200, 240), (100, 100)) == [Window(0, 200, 0, 240)]
    # smaller along one axis only: full-height windows sliding along the width
    assert sliding_windows((90, 500), (200, 240), (100, 200)) == [
        Window(0, 90, 0, 240),
        Window(0, 90, 200, 440),
        Window(0, 90, 260, 500),
    ]


@pytest.mark.parametrize("size", [1, 7, 63, 64, 65, 100, 127, 128, 129, 1000])
@pytest.mark.parametrize("crop,stride", [(64, 64), (64, 43), (64, 1), (1, 1), (50, 49)])
def test_grid_axis_properties(size, crop, stride):
    starts = axis_starts(size, crop, stride)
    assert len(starts) == max(size - crop + stride - 1, 0) // stride + 1  # mmseg's count
    assert starts[0] == 0 and starts == sorted(set(starts)), "ascending, no duplicate window"
    ends = [min(s + crop, size) for s in starts]
    assert ends[-1] == size, "last window flush with the border"
    assert all(e - s == min(crop, size) for s, e in zip(starts, ends)), (
        "full crops inside the image"
    )
    assert all(b - a <= stride for a, b in zip(starts, starts[1:])), "steps of at most stride"
    covered = np.zeros(size, int)
    for s, e in zip(starts, ends):
        covered[s:e] += 1
    assert covered.min() >= 1, "every pixel covered"


def test_grid_covers_every_pixel_2d():
    wins = sliding_windows((333, 517), (128, 160), (96, 100))
    count = np.zeros((333, 517), int)
    for w in wins:
        count[w.y1 : w.y2, w.x1 : w.x2] += 1
    assert count.min() >= 1, "every pixel covered"
    assert len(wins) == len(axis_starts(333, 128, 96)) * len(axis_starts(517, 160, 100)) == 4 * 5
    assert count[0, 0] == 1 and count[210, 250] == 3 * 2  # rows 96/192/205, columns 200/300


def test_grid_bad_arguments():
    with pytest.raises(ValueError, match="must be >= 1"):
        axis_starts(100, 0, 10)
    with pytest.raises(ValueError, match="must be >= 1"):
        axis_starts(0, 10, 10)
    with pytest.raises(ValueError, match="stride 11 > crop 10"):
        axis_starts(100, 10, 11)


# ---------------------------------------------------------------------------------- inference
@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Segmenter.from_config(TINY).model


def segmenter(model, *overrides: str) -> Segmenter:
    """A segmenter over the shared tiny model with its own test settings."""
    return Segmenter(model, load_config(TINY, list(overrides)))


@pytest.mark.parametrize("shape", [(450, 210), (90, 130), (200, 300)])
def test_one_window_is_whole_image_inference(model, shape):
    # 450 x 210 resizes to 429 x 200 (short side 200) and 90 x 130 upsizes to 200 x 289: both
    # inside one 640 x 640 crop (the default); 200 x 300 is not resized and is exactly the crop.
    whole = segmenter(model).predict(image(*shape), VOCAB, task="semantic")
    crop = (
        "model.test.crop_size=[640,640]"
        if shape != (200, 300)
        else "model.test.crop_size=[200,300]"
    )
    slide = segmenter(model, "model.test.mode=slide", crop, "model.test.stride=[100,100]")
    pred = slide.predict(image(*shape), VOCAB, task="semantic")
    assert len(pred.extras["windows"]) == 1
    assert pred.extras["windows"][0].size == pred.extras["input_size"] == whole.extras["input_size"]
    assert pred.sem_seg.shape == (4, *shape)
    assert torch.equal(pred.sem_seg, whole.sem_seg)


@pytest.mark.parametrize("shape", [(280, 320), (140, 160)])
def test_overlapping_windows_average_whole_image_crops(model, shape):
    """Reference by hand: whole-image inference on each 200 x 240 crop of the resized image (a
    crop whose short side is the reference's min_size is not resized again), scores summed,
    divided by the number of windows covering each pixel, resized to the input image."""
    img = image(*shape, seed=1)
    slide = segmenter(model, "model.test.min_size=280", "model.test.mode=slide",
                      "model.test.crop_size=[200,240]", "model.test.stride=[50,60]")  # fmt: skip
    pred = slide.predict(img, VOCAB, task="semantic")

    resized = resize_shortest_edge(img, 280, 1333)
    assert resized.shape[:2] == pred.extras["input_size"] == (280, 320)
    per_crop = segmenter(model, "model.test.min_size=200")
    total = torch.zeros(4, 280, 320)
    count = torch.zeros(280, 320)
    for y in (0, 50, 80):
        for x in (0, 60, 80):
            crop = per_crop.predict(resized[y : y + 200, x : x + 240], VOCAB, task="semantic")
            assert crop.extras["input_size"] == (200, 240)
            total[:, y : y + 200, x : x + 240] += crop.sem_seg
            count[y : y + 200, x : x + 240] += 1
    assert count[0, 0] == 1 and count[100, 100] == 9 and count[279, 319] == 1
    expected = total / count
    if shape != (280, 320):
        expected = F.interpolate(expected[None], size=shape, mode="bilinear", align_corners=False)[
            0
        ]

    assert len(pred.extras["windows"]) == 9
    assert pred.sem_seg.shape == (4, *shape) and pred.image_size == shape
    assert torch.equal(pred.sem_seg, expected)
    whole = segmenter(model, "model.test.min_size=280").predict(img, VOCAB, task="semantic")
    assert (pred.sem_seg - whole.sem_seg).abs().max() > 1e-3, "windows see other context"


def test_text_encoded_once_per_call_and_stages_timed(model, monkeypatch):
    slide = segmenter(model, "model.test.mode=slide", "model.test.crop_size=[128,128]",
                      "model.test.stride=[64,64]")  # fmt: skip
    calls = {"text": 0, "classifier": 0}
    encode, with_void = slide.encode_vocabulary, model.classifier_with_void

    def count_encode(*a, **k):
        calls["text"] += 1
        return encode(*a, **k)

    def count_classifier(*a, **k):
        calls["classifier"] += 1
        return with_void(*a, **k)

    monkeypatch.setattr(slide, "encode_vocabulary", count_encode)
    monkeypatch.setattr(model, "classifier_with_void", count_classifier)
    timer = StageTimer()
    pred = slide.predict(image(200, 300), VOCAB, task="semantic", timer=timer)
    assert len(pred.extras["windows"]) == 3 * 4
    # The vocabulary is encoded once; the void row is appended inside the tensor seam, once per
    # window (a (S + 1, D) concatenation: the seam takes plain text embeddings).
    assert calls == {"text": 1, "classifier": 12}
    assert {"text", "preprocess", "backbone", "pixel_decoder", "transformer_decoder",
            "classifiers", "postprocess"} <= set(timer.times)  # fmt: skip


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "override,message",
    [
        (
            "model.test.mode=sliding",
            r"model\.test\.mode must be one of 'whole', 'slide'; got 'sliding'",
        ),
        (
            "model.test.crop_size=[0,640]",
            r"model\.test\.crop_size must be two positive integers \[h, w\]; got \[0, 640\]",
        ),
        (
            "model.test.stride=[426]",
            r"model\.test\.stride must be two positive integers \[h, w\]; got \[426\]",
        ),
        ("model.test.crop_size=640", r"model\.test\.crop_size"),
        (
            "model.test.stride=[700,426]",
            r"model\.test\.stride \[700, 426\] must not exceed model\.test\.crop_size \[640, 640\]",
        ),
    ],
)
def test_bad_settings_fail_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [override])


def test_settings_edited_after_loading_are_checked(model):
    seg = segmenter(model)
    seg.config.model.test.mode = "tiles"
    with pytest.raises(ConfigError, match="model.test.mode must be one of"):
        seg.predict(image(64, 64), VOCAB, task="semantic")


@pytest.mark.parametrize("task", ["panoptic", "instance", "all"])
def test_slide_is_semantic_only(model, task):
    slide = segmenter(model, "model.test.mode=slide")
    with pytest.raises(ValueError, match=rf"semantic task only; got task='{task}'"):
        slide.predict(image(64, 64), VOCAB, task=task)
    with pytest.raises(ValueError, match="return_intermediates"):
        slide.predict(image(64, 64), VOCAB, task="semantic", return_intermediates=True)
