"""GKC's losses (ovseg/models/losses/gkc.py) on hand-computed cases, and the criterion on the
tiny FC-CLIP model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from ovseg_testing import REPO

from ovseg.config import ConfigError, load_config
from ovseg.models.builder import build_model
from ovseg.models.losses.gkc import (
    GREY,
    crop_embeddings,
    distillation_terms,
    diversified_ce_sums,
    draw_seed,
    grey_crop,
    synonym_columns,
    tower_input_size,
)
from ovseg.text.vocabulary import Vocabulary

CFG = str(REPO / "ovseg/configs/tests/fcclip_tiny_train_gkc.yaml")


def test_synonym_columns_with_a_fixed_seed():
    # Classes 0, 1, 2 with 3, 1, 2 synonyms: rows 0-2, 3, 4-5.
    g = torch.Generator().manual_seed(0)
    # torch's draws for this seed, pinned: one randint per segment, over its class's synonyms.
    assert [int(torch.randint(n, (), generator=g)) for n in (3, 1, 3, 3, 2, 3)] == [
        2,
        0,
        2,
        0,
        1,
        0,
    ]
    cols = synonym_columns([0, 1, 0, 0, 2, 0], [3, 1, 2], torch.Generator().manual_seed(0))
    # seg 0: class 0 draws synonym 2 (row 2): first draw, it replaces column 0.
    # seg 1: class 1 draws its only synonym (row 3): column 1.
    # seg 2: class 0 draws row 2 again: column 0.
    # seg 3: class 0 draws synonym 0 (row 0), another synonym: a new column 3 of class 0.
    # seg 4: class 2 draws synonym 1 (row 5): replaces column 2.
    # seg 5: class 0 draws row 0: column 3 already holds it.
    assert cols.rows == [2, 3, 5, 0]
    assert cols.classes == [0, 1, 2, 0]
    assert cols.targets == [0, 1, 0, 3, 2, 3]


def test_synonym_columns_draw_only_allowed_synonyms():
    allowed = [[1], [0], [1], [0], [1], [1]]  # one choice each: the seed cannot matter
    cols = synonym_columns([0, 1, 0, 0, 2, 0], [3, 1, 2], torch.Generator().manual_seed(5), allowed)
    assert (cols.rows, cols.classes, cols.targets) == (
        [1, 3, 5, 0],
        [0, 1, 2, 0],
        [0, 1, 0, 3, 2, 0],
    )
    # A class absent from the image keeps its class-name column (row of its synonym 0).
    cols = synonym_columns([1], [3, 1, 2], torch.Generator().manual_seed(0))
    assert cols.rows == [0, 3, 4] and cols.targets == [1]


def test_draw_seed_depends_on_seed_step_and_index_only():
    assert draw_seed(0, 3, 7) == draw_seed(0, 3, 7)
    assert (
        len({draw_seed(0, 3, 7), draw_seed(1, 3, 7), draw_seed(0, 4, 7), draw_seed(0, 3, 8)}) == 4
    )
    assert 0 <= draw_seed(2**40, 2**40, 2**40) < 2**63


def test_distillation_terms_on_two_regions():
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    l2, structure = distillation_terms(v, c, t, torch.tensor(2.0))
    # ||v1 - c1||^2 = 0.4^2 + 0.8^2 = 0.8; ||v2 - c2||^2 = 1 + 1 = 2.
    assert l2.item() == pytest.approx(2.8)
    # s T T^T = 2 [[1, .6], [.6, 1]]; V C^T = [[.6, 1], [.8, 0]]; differences 1.4, .2, .4, 2:
    # (1.96 + 0.04 + 0.16 + 4) / 4.
    assert structure.item() == pytest.approx(1.54)


def test_diversified_ce_leaves_out_a_matched_querys_other_synonym_columns():
    eye = torch.eye(4)
    columns = eye  # columns 0, 1 (class 0), 2 (class 1), void last
    classes = torch.tensor([0, 0, 1])
    class_embed = torch.stack([eye[1], eye[3]])  # query 0 -> column 1; query 1 unmatched
    num, den = diversified_ce_sums(
        class_embed, columns, classes, torch.tensor(0.0), torch.tensor([0]), torch.tensor([1]), 0.1
    )
    # Logit scale exp(0) = 1, cosine logits. Query 0: column 0 (class 0) left out, logits
    # [1, 0, 0] over columns 1, 2, void: CE = log(e + 2) - 1. Query 1: logits [0, 0, 0, 1],
    # target void: CE = log(e + 3) - 1, weight 0.1.
    e = math.e
    expected_num = (math.log(e + 2) - 1) + 0.1 * (math.log(e + 3) - 1)
    assert num.item() == pytest.approx(expected_num, rel=1e-6)
    assert den.item() == pytest.approx(1.1)


def test_grey_crop_paints_crops_and_resizes():
    image = torch.arange(3 * 5 * 6, dtype=torch.uint8).view(3, 5, 6)
    mask = torch.zeros(5, 6, dtype=torch.bool)
    mask[1:4, 2:5] = True
    mask[2, 3] = False  # a hole inside the box is painted too
    crop = grey_crop(image, mask, 3)
    assert crop.dtype == torch.float32 and crop.shape == (3, 3, 3)
    # Channel 1, row 1, columns 2..4 of the image: 30 + 6 + 2 = 38, 39, 40.
    assert crop[1, 0].tolist() == [38.0, 39.0, 40.0]
    assert crop[:, 1, 1].tolist() == [GREY] * 3
    assert crop[0, 2].tolist() == [20.0, 21.0, 22.0]
    # Pixels outside the mask but outside the box are gone; resizing 3 -> 6 bilinearly
    # (align_corners=False): output column 1 samples input 0.25 -> 0.75 x[0] + 0.25 x[1].
    big = grey_crop(image, mask, 6)
    assert big.shape == (3, 6, 6)
    assert big[1, 0, 0].item() == 38.0
    assert big[1, 0, 1].item() == pytest.approx(0.75 * 38 + 0.25 * 39)


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config(CFG)
    torch.manual_seed(0)
    return cfg, build_model(cfg.model).train()


def test_teacher_is_the_frozen_towers_global_embedding_of_the_crop(tiny):
    _, model = tiny
    assert tower_input_size(model.backbone) == 320  # the tiny CLIP config's image_size
    image = torch.randint(0, 256, (1, 3, 40, 40), dtype=torch.uint8)
    mask = torch.zeros(40, 40, dtype=torch.bool)
    mask[5:30, 10:20] = True
    v = crop_embeddings(model.backbone, image, [(0, mask)], 64, model.pixel_mean, model.pixel_std)
    x = (grey_crop(image[0], mask, 64)[None] - model.pixel_mean) / model.pixel_std
    with torch.no_grad():
        dense = model.backbone(x)["clip_vis_dense"]
        direct = model.backbone.visual_context(dense)[:, 0]  # the global token
    assert torch.allclose(v, F.normalize(direct, dim=-1), atol=1e-5)
    assert not v.requires_grad


def _batch(labels, vocab):
    masks = torch.zeros(len(labels), 64, 64, dtype=torch.bool)
    for i in range(len(labels)):
        masks[i, 8 * i : 8 * i + 24, 4 + 10 * i : 20 + 10 * i] = True
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=g)
    targets = [{"labels": torch.tensor(labels), "masks": masks}] * 2
    return {"images": images, "targets": targets, "indices": [3, 5], "vocabulary": vocab}


def test_one_synonym_per_class_makes_the_diversified_ce_the_plain_one(tiny):
    cfg, model = tiny
    vocab = Vocabulary.parse("circle; square; sky [stuff]")
    torch.manual_seed(0)
    losses = model(_batch([0, 2], vocab))
    w = cfg.model.loss
    for suffix in ("", "_0", "_2"):
        plain = losses["loss_ce" + suffix] / w.class_weight
        gkc = losses["loss_gkc_ce" + suffix] / w.gkc.diversify_weight
        assert gkc.item() == pytest.approx(plain.item(), rel=1e-5)
    assert {"loss_gkc_distill", "loss_gkc_structure"} <= set(losses)
    assert "loss_gkc_distill_0" not in losses  # the distillation reads the last layer only


def test_criterion_counts_draws_and_trains_its_parameters(tiny):
    _, model = tiny
    vocab = Vocabulary.parse("circle, disc, ring; square, box; sky [stuff]")
    step = int(model.criterion.draw_step)
    model.zero_grad()
    torch.manual_seed(0)
    losses = model(_batch([0, 1, 0], vocab))
    assert int(model.criterion.draw_step) == step + 1
    sum(losses.values()).backward()
    crit = model.criterion
    assert crit.distill_proj.weight.grad.abs().sum() > 0 and crit.structure_scale.grad != 0
    keys = model.trainable_state_dict()
    assert {
        "criterion.draw_step",
        "criterion.distill_proj.weight",
        "criterion.structure_scale",
    } <= set(keys)


def test_gkc_options_need_the_gkc_loss_type():
    with pytest.raises(
        ConfigError, match="model.loss.gkc.diversify/distill need model.loss.type=gkc"
    ):
        load_config(CFG, ["model.loss.type=mask2former"])
    plain = load_config(str(REPO / "ovseg/configs/tests/fcclip_tiny_train.yaml"))
    assert not plain.model.loss.gkc.enabled and plain.model.loss.type == "mask2former"


def test_synonym_clip_filter_keeps_synonyms_scoring_above_it(tiny):
    """Every synonym scores above -2 (cosines): the draws of no filter. None scores above 2: only
    class names are drawn, every column is its class's first row."""
    cfg, model = tiny
    vocab = Vocabulary.parse("circle, disc, ring; square, box; sky [stuff]")
    batch = _batch([0, 1, 0], vocab)
    targets = [{"labels": t["labels"], "masks": t["masks"]} for t in batch["targets"]]
    context = {
        "model": model,
        "batch": batch,
        "text": model.encode_vocabulary(vocab),
        "vocabulary": vocab,
    }
    crit = model.criterion

    def columns(threshold):
        crit.gkc.synonym_clip_filter = threshold
        try:
            state = crit._prepare({}, targets, context, step=0)
        finally:
            crit.gkc.synonym_clip_filter = None
        return (
            [c.tolist() for c in state.column_classes],
            [s.tolist() for s in state.segment_columns],
            state.columns,
        )

    classes, segs, cols = columns(None)
    assert (classes, segs) == columns(-2.0)[:2]
    assert all(torch.equal(a, b) for a, b in zip(cols, columns(-2.0)[2]))
    classes, segs, cols = columns(2.0)
    text = model.encode_vocabulary(vocab).embeddings
    first_rows = text[[0, 3, 5]]  # circle, square, sky
    for c, s, col in zip(classes, segs, cols):
        assert c == [0, 1, 2] and s == [0, 1, 0]
        assert torch.allclose(col[:3], first_rows)


def test_an_fcclip_checkpoint_loads_into_a_gkc_model_and_predicts_the_same():
    """The official-format fixture has no criterion keys: they keep their initial values, and
    inference (which GKC does not touch) gives the plain model's outputs exactly."""
    import numpy as np
    from ovseg_testing import fixture_dir

    from ovseg import Segmenter

    ckpt = fixture_dir("fcclip_tiny") / "fcclip_tiny_a.pth"
    gkc = ["model.loss.type=gkc", "model.loss.gkc.diversify=true", "model.loss.gkc.distill=true"]
    a = Segmenter.from_pretrained(ckpt, config="tests/fcclip_tiny.yaml")
    b = Segmenter.from_pretrained(ckpt, config="tests/fcclip_tiny.yaml", overrides=gkc)
    assert b.model.criterion.structure_scale.item() == 1.0 and int(b.model.criterion.draw_step) == 0
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    pa = a.predict(image, "cat; dog; sky [stuff]", task="semantic")
    pb = b.predict(image, "cat; dog; sky [stuff]", task="semantic")
    assert torch.equal(torch.as_tensor(pa.sem_seg), torch.as_tensor(pb.sem_seg))
