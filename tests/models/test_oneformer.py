"""OneFormer's option (docs/oneformer.md): the query-text InfoNCE against a hand-computed case,
the per-task targets of a hand-made panoptic image, the seeded task draw, and the task token:
it changes the queries, and the requested test-time task selects it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ovseg_testing import REPO

from ovseg import Segmenter, Vocabulary
from ovseg.models.losses.contrastive import symmetric_info_nce
from ovseg.models.oneformer import OneFormerHead, sample_task, task_targets

CFG = REPO / "ovseg/configs/tests/fcclip_tiny_train_oneformer.yaml"


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_info_nce_equals_the_hand_computed_2x2_case():
    # cosines image_i . text_j = [[1, 0.6], [0, 0.8]]; inverse temperature exp(log 10) = 10.
    image = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # any norm: normalised inside
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scale = torch.tensor(math.log(10.0))
    # image -> text: row 0 logits (10, 6), label 0; row 1 logits (0, 8), label 1.
    image_to_text = (_softplus(6 - 10) + _softplus(0 - 8)) / 2
    # text -> image: row 0 logits (10, 0), label 0; row 1 logits (6, 8), label 1.
    text_to_image = (_softplus(0 - 10) + _softplus(6 - 8)) / 2
    loss = symmetric_info_nce(image, text, scale)
    assert float(loss) == pytest.approx(image_to_text + text_to_image, rel=1e-6)
    # The inverse temperature is clamped at 100: exp(log 1000) scores as 100. Near-equal
    # cosines keep the float32 logits apart by ~1 at that scale.
    near = torch.tensor([[0.71, 0.70], [0.70, 0.71]])
    norm = math.hypot(0.71, 0.70)
    margin = 100 * (0.71 - 0.70) / norm  # every row: own cosine 0.71/n, the other 0.70/n
    high = symmetric_info_nce(torch.eye(2), near, torch.tensor(math.log(1000.0)))
    assert float(high) == pytest.approx(2 * _softplus(-margin), rel=1e-4)


def test_info_nce_rejects_mismatched_sets():
    with pytest.raises(ValueError, match=r"must be \(B, K\)"):
        symmetric_info_nce(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor(0.0))


def _toy_panoptic():
    """A 4 x 4 image: two "cat" instances (thing 0), one "dog" (thing 1), "sky" (stuff 2)."""
    seg = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    labels = torch.tensor([0, 2, 0, 1])  # segment k: class of segment id k
    masks = torch.from_numpy(seg[None] == np.arange(4)[:, None, None])
    return labels, masks, torch.tensor([True, True, False])


def test_task_targets_of_a_hand_made_panoptic_image():
    labels, masks, isthing = _toy_panoptic()
    pan_l, pan_m = task_targets(labels, masks, isthing, 2)
    assert pan_l.tolist() == [0, 2, 0, 1] and torch.equal(pan_m, masks)
    inst_l, inst_m = task_targets(labels, masks, isthing, 1)
    assert inst_l.tolist() == [0, 0, 1]  # sky (stuff) has no instance
    assert torch.equal(inst_m, masks[[0, 2, 3]])
    sem_l, sem_m = task_targets(labels, masks, isthing, 0)
    assert sem_l.tolist() == [0, 1, 2]  # one mask per class, the two cats merged
    cats = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(sem_m[0], cats)
    assert torch.equal(sem_m[1], masks[3]) and torch.equal(sem_m[2], masks[1])
    empty_l, empty_m = task_targets(labels[:0], masks[:0], isthing, 0)
    assert empty_l.numel() == 0 and empty_m.shape == (0, 4, 4)


def test_task_draw_depends_on_the_sample_seed_alone():
    probs = (1 / 3, 1 / 3, 1 / 3)
    draws = [sample_task(s, probs) for s in range(3000)]
    assert draws == [sample_task(s, probs) for s in range(3000)]  # no hidden state
    counts = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(counts, [1 / 3] * 3, atol=0.03)
    assert {sample_task(s, (0.0, 1.0, 0.0)) for s in range(200)} == {1}
    assert {sample_task(s, (0.0, 0.0, 1.0)) for s in range(200)} == {2}


def test_text_entries_are_the_segments_then_the_task_padding():
    head = OneFormerHead(task_text=None, embed_dim=4, hidden_dim=8, num_queries=5)
    idx = head.text_indices(torch.tensor([3, 0, 3]), task=1, num_classes=4)
    assert idx.tolist() == [3, 0, 3, 4 + 1, 4 + 1]  # "a instance photo" is row C + 1
    many = head.text_indices(torch.arange(7) % 4, task=0, num_classes=4)
    assert many.tolist() == [0, 1, 2, 3, 0]  # cut at Q entries


@pytest.fixture(scope="module")
def seg():
    torch.manual_seed(0)
    return Segmenter.from_config(CFG, overrides=["model.test.vocabulary=null"])


def test_head_settings_are_the_papers(seg):
    head = seg.model.oneformer
    assert head.task_conditioning and head.contrastive_weight == 0.5
    assert float(head.logit_scale.detach().exp()) == pytest.approx(1 / 0.07, rel=1e-6)
    assert head.task_text.shape == (3, seg.model.backbone.embed_dim)
    torch.testing.assert_close(head.task_text.norm(dim=-1), torch.ones(3))
    # the buffer is the frozen tower's embedding of "the task is {task}"
    again = seg.model.encode_sentences(["the task is instance"])[0]
    torch.testing.assert_close(head.task_text[1], again)
    layers = head.task_mlp.layers
    assert len(layers) == 2 and layers[-1].out_features == seg.config.model.decoder.hidden_dim
    assert "oneformer.task_text" in seg.model.trainable_state_dict()


def test_task_token_changes_the_queries_and_the_request_selects_it(seg):
    m = seg.model.eval()
    vocab = Vocabulary.parse("circle; square; sky [stuff]")
    text = seg.encode_vocabulary(vocab)
    torch.manual_seed(1)
    x = m.normalize_and_pad([torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)])
    seen = m.seen_mask(vocab)
    out = {}
    with torch.no_grad():
        for task in ("semantic", "instance", "panoptic", "all"):
            m.select_task(task)
            out[task] = m.predict_logits(x, text.embeddings, text.synonym_index, seen)
        trained = m.forward_features(
            x,
            m.classifier_with_void(text.embeddings),
            text.synonym_index,
            len(vocab),
            task_ids=torch.tensor([0]),
        )[0]
    for a, b in (("semantic", "instance"), ("semantic", "panoptic"), ("instance", "panoptic")):
        assert (out[a][1] - out[b][1]).abs().max() > 1e-4, (a, b)  # masks move with the token
    for got, want in zip(out["all"], out["panoptic"]):
        assert torch.equal(got, want)  # "all" runs the panoptic token
    # the training path with task id 0 (semantic) is the test-time semantic token
    torch.testing.assert_close(trained["pred_masks"], out["semantic"][1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown task 'depth'"):
        m.select_task("depth")
    # the Segmenter picks the token of the output it is asked for
    image = np.zeros((64, 64, 3), np.uint8)
    seg.predict(image, vocab, task="semantic")
    assert m.oneformer.task_index == 0
    seg.predict(image, vocab, task="all")
    assert m.oneformer.task_index == 2
    m.select_task("panoptic")


def test_the_default_config_has_no_oneformer_head():
    plain = Segmenter.from_config(
        REPO / "ovseg/configs/tests/fcclip_tiny_train.yaml",
        overrides=["model.test.vocabulary=null"],
    )
    assert plain.model.oneformer is None
    assert not any(k.startswith("oneformer.") for k in plain.model.state_dict())


def test_training_forward_trains_each_image_on_its_task_targets(tmp_path):
    """task_probs (0, 1, 0): every image trains the instance task, so the criterion sees the
    thing segments only; the contrastive term is logged beside the Hungarian losses."""
    from ovseg.config import load_config
    from ovseg.models.builder import build_model

    torch.manual_seed(0)
    cfg = load_config(
        str(CFG), ["model.test.vocabulary=null", "model.decoder.task_probs=[0.0,1.0,0.0]"]
    )
    model = build_model(cfg.model).train()
    seen = []  # the real criterion's inputs, recorded by a hook
    model.criterion.register_forward_pre_hook(
        lambda _, args: seen.append([t["labels"].tolist() for t in args[1]])
    )
    labels, masks, _ = _toy_panoptic()
    big = masks.repeat_interleave(16, 1).repeat_interleave(16, 2)  # 64 x 64
    batch = {
        "images": torch.zeros(2, 3, 64, 64, dtype=torch.uint8),
        "targets": [{"labels": labels, "masks": big}] * 2,
        "seeds": [5, 6],
        "indices": [0, 1],
        "vocabulary": Vocabulary.parse("cat; dog; sky [stuff]"),
    }
    losses = model(batch)
    assert seen == [[[0, 0, 1], [0, 0, 1]]]
    assert "loss_contrastive" in losses and float(losses["loss_contrastive"].detach()) > 0


def test_training_batches_carry_the_samplers_stream_seeds(tmp_path):
    from ovseg.config.data import DataConfig, DatasetConfig
    from ovseg.data import build_train_loader, make_synthetic_coco_panoptic
    from ovseg.data.samplers import sample_seed

    make_synthetic_coco_panoptic(tmp_path, num_images=4, size=(32, 32), seed=0, split="t")
    train = DatasetConfig(
        image_root=str(tmp_path / "t"),
        panoptic_json=str(tmp_path / "annotations/panoptic_t.json"),
        panoptic_root=str(tmp_path / "annotations/panoptic_t"),
    )
    cfg = DataConfig(train=train, batch_size=2, num_workers=0, pin_memory=False)
    cfg.aug.crop_size = 32
    loader = build_train_loader(cfg, seed=7, rank=1, world_size=2)
    batch = next(iter(loader))
    # rank 1 of 2 reads global positions 1 and 3
    assert batch["seeds"] == [sample_seed(7, 1), sample_seed(7, 3)]
