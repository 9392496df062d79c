"""SetCriterion on hand-made cases."""

import math

import pytest
import torch

from ovseg.models.losses import (
    HungarianMatcher,
    LossConfig,
    SetCriterion,
    build_criterion,
    dice_loss,
    matched_masks,
    sigmoid_ce_loss,
)


def _targets():
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, :16] = True
    masks[1, 16:, 8:24] = True
    return [{"labels": torch.tensor([1, 0]), "masks": masks}]


def _perfect(targets, num_queries=4, num_classes=3):
    masks, labels = targets[0]["masks"], targets[0]["labels"]
    n = len(labels)
    pred_masks = torch.full((1, num_queries, 8, 8), -30.0)
    pred_masks[0, :n] = torch.where(masks[:, ::4, ::4], 30.0, -30.0)
    pred_logits = torch.full((1, num_queries, num_classes + 1), -30.0)
    pred_logits[0, torch.arange(n), labels] = 30.0
    pred_logits[0, n:, num_classes] = 30.0
    return {"pred_logits": pred_logits, "pred_masks": pred_masks}


def test_perfect_prediction_has_near_zero_losses():
    # Bilinear point sampling blurs every mask edge over one pixel (and the image border, where
    # grid_sample pads with zeros), so the mask losses of a perfect prediction are small but not 0:
    # they are compared with those of the inverted prediction.
    criterion = build_criterion(LossConfig(train_num_points=1024), num_classes=3)
    torch.manual_seed(0)
    losses = criterion(_perfect(_targets()), _targets())
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"}
    assert losses["loss_ce"].item() < 1e-6
    wrong = _perfect(_targets())
    wrong["pred_masks"] = -wrong["pred_masks"]
    wrong["pred_logits"] = wrong["pred_logits"].roll(1, dims=-1)
    torch.manual_seed(0)
    wrong_losses = criterion(wrong, _targets())
    assert wrong_losses["loss_ce"] > 10
    # Importance sampling puts 75 % of the points on the edges, where the two blurs differ.
    assert losses["loss_mask"] < 0.1 * wrong_losses["loss_mask"]
    assert losses["loss_dice"] < 0.25 * wrong_losses["loss_dice"]
    assert losses["loss_dice"] / 5.0 < 0.1  # unweighted dice of 2 masks


def test_dice_and_bce_match_hand_computation():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [10.0, -10.0, 0.0, 2.0]])
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    # Mask 0: sigmoid = 0.5 everywhere: dice = 1 - (2*1 + 1) / (2 + 2 + 1) = 0.4; BCE = ln 2.
    s = torch.sigmoid(logits[1])
    dice1 = 1 - (2 * (s[0] + s[2]) + 1) / (s.sum() + 2 + 1)
    bce1 = -(math.log(s[0]) + math.log(1 - s[1]) + math.log(s[2]) + math.log(1 - s[3])) / 4
    num_masks = 2.0
    torch.testing.assert_close(dice_loss(logits, targets, num_masks), (0.4 + dice1) / num_masks)
    torch.testing.assert_close(
        sigmoid_ce_loss(logits, targets, num_masks),
        torch.tensor((math.log(2) + bce1) / num_masks),
    )


def test_classification_loss_with_no_object_weight():
    # One query matched to class 0, one unmatched: weighted CE = (ce0 * 1 + ce_noobj * 0.1) / 1.1.
    targets = [{"labels": torch.tensor([0]), "masks": torch.ones(1, 8, 8, dtype=torch.bool)}]
    pred_logits = torch.tensor([[[2.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])  # C = 2, + no-object
    pred_masks = torch.stack([torch.full((2, 2), 10.0), torch.full((2, 2), -10.0)])[None]
    criterion = SetCriterion(
        2,
        HungarianMatcher(num_points=16),
        {"loss_ce": 1.0, "loss_mask": 1.0, "loss_dice": 1.0},
        eos_coef=0.1,
        losses=("labels",),
        num_points=16,
    )
    losses = criterion({"pred_logits": pred_logits, "pred_masks": pred_masks}, targets)
    ce0 = -torch.log_softmax(pred_logits[0, 0], -1)[0]
    ce1 = -torch.log_softmax(pred_logits[0, 1], -1)[2]
    torch.testing.assert_close(losses["loss_ce"], (ce0 + 0.1 * ce1) / 1.1)
    assert set(losses) == {"loss_ce"}


def test_deep_supervision_keys_and_weights():
    cfg = LossConfig(train_num_points=64)
    criterion = build_criterion(cfg, num_classes=3, num_decoder_layers=3)
    torch.manual_seed(0)
    aux = [
        {"pred_logits": torch.randn(1, 4, 4), "pred_masks": torch.randn(1, 4, 8, 8)}
        for _ in range(3)
    ]
    outputs = {**_perfect(_targets()), "aux_outputs": aux}
    losses = criterion(outputs, _targets())
    expected = {f"loss_{k}{s}" for k in ("ce", "mask", "dice") for s in ("", "_0", "_1", "_2")}
    assert set(losses) == expected
    assert all(losses[f"loss_ce_{i}"] > 0.1 for i in range(3))
    # The weight is applied: with class_weight doubled the aux CE doubles (same matching).
    criterion2 = build_criterion(
        LossConfig(train_num_points=64, class_weight=4.0),
        num_classes=3,
        num_decoder_layers=3,
    )
    losses2 = criterion2(outputs, _targets())
    torch.testing.assert_close(losses2["loss_ce_1"], 2 * losses["loss_ce_1"])
    # Without deep supervision the aux outputs are ignored.
    no_ds = build_criterion(LossConfig(train_num_points=64, deep_supervision=False), num_classes=3)
    assert set(no_ds(outputs, _targets())) == {"loss_ce", "loss_mask", "loss_dice"}


def test_empty_targets_work_and_backpropagate():
    criterion = build_criterion(LossConfig(train_num_points=64), num_classes=3)
    pred_logits = torch.randn(2, 4, 4, requires_grad=True)
    pred_masks = torch.randn(2, 4, 8, 8, requires_grad=True)
    targets = [
        {
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 32, 32, dtype=torch.bool),
        }
    ] * 2
    losses = criterion({"pred_logits": pred_logits, "pred_masks": pred_masks}, targets)
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    # Every query must predict no-object: CE = 2 * mean(-log p_noobj) (weight 0.1 cancels).
    expected = -torch.log_softmax(pred_logits, -1)[..., 3].mean() * 2.0
    torch.testing.assert_close(losses["loss_ce"], expected)
    sum(losses.values()).backward()
    assert pred_masks.grad is not None and pred_logits.grad.abs().sum() > 0


def test_mixed_batch_and_gradients_flow():
    criterion = build_criterion(LossConfig(train_num_points=128), num_classes=3)
    torch.manual_seed(0)
    pred_logits = torch.randn(2, 5, 4, requires_grad=True)
    pred_masks = torch.randn(2, 5, 8, 8, requires_grad=True)
    targets = [
        _targets()[0],
        {
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 32, 32, dtype=torch.bool),
        },
    ]
    losses = criterion({"pred_logits": pred_logits, "pred_masks": pred_masks}, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert pred_masks.grad[0].abs().sum() > 0
    assert pred_masks.grad[1].abs().sum() == 0  # image 1 has no masks to learn


def test_wrong_class_count_is_named():
    criterion = build_criterion(LossConfig(train_num_points=16), num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        criterion(
            {
                "pred_logits": torch.randn(1, 2, 3),
                "pred_masks": torch.randn(1, 2, 4, 4),
            },
            _targets(),
        )


def test_open_vocabulary_criterion_takes_the_class_count_from_the_logits():
    criterion = build_criterion(LossConfig(train_num_points=64))  # num_classes=None
    for num_classes in (3, 7):
        pred_logits = torch.randn(1, 4, num_classes + 1)
        losses = criterion(
            {"pred_logits": pred_logits, "pred_masks": torch.randn(1, 4, 8, 8)},
            _targets(),
        )
        assert torch.isfinite(losses["loss_ce"])
    with pytest.raises(ValueError, match=r"target labels \[0, 1\] fall outside the 1 classes"):
        criterion(
            {
                "pred_logits": torch.randn(1, 4, 2),
                "pred_masks": torch.randn(1, 4, 8, 8),
            },
            _targets(),
        )
    assert "empty_weight" not in criterion.state_dict()


def test_build_criterion_from_a_mapping_or_nothing():
    from omegaconf import OmegaConf

    c = build_criterion(OmegaConf.create({"class_weight": 3.0, "train_num_points": 100}))
    assert c.weight_dict["loss_ce"] == 3.0 and c.matcher.num_points == 100
    assert build_criterion().matcher.num_points == 12544
    with pytest.raises(TypeError, match=r"unknown loss setting\(s\) \['dice_wieght'\]"):
        build_criterion({"dice_wieght": 1.0})


def test_matched_masks_from_mask_embed_give_the_dense_losses_and_gradients():
    """Training decoders hand detached ``pred_masks`` plus ``mask_embed`` / ``mask_features``;
    the mask losses recompute the matched rows. Losses and gradients equal the dense path's."""
    g = torch.Generator().manual_seed(0)
    criterion = build_criterion(LossConfig(train_num_points=48), num_classes=3)
    embed = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    features = torch.randn(2, 6, 8, 8, generator=g, dtype=torch.float64)
    logits = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    targets = [
        _targets()[0],
        {"labels": torch.tensor([2]), "masks": torch.rand(1, 32, 32, generator=g) > 0.5},
    ]

    def run(lean: bool):
        e = embed.clone().requires_grad_()
        f = features.clone().requires_grad_()
        dense = torch.einsum("bqc,bchw->bqhw", e, f)
        out = {"pred_logits": logits, "pred_masks": dense.detach() if lean else dense}
        if lean:
            out.update(mask_embed=e, mask_features=f)
        out["aux_outputs"] = [dict(out)]
        torch.manual_seed(0)  # the same random points on both paths
        losses = criterion(out, targets)
        grads = torch.autograd.grad(sum(losses.values()), (e, f))
        return losses, grads

    (dense_losses, dense_grads), (lean_losses, lean_grads) = run(False), run(True)
    assert dense_losses.keys() == lean_losses.keys()
    for k in dense_losses:
        torch.testing.assert_close(lean_losses[k], dense_losses[k], rtol=1e-12, atol=1e-12)
    for a, b in zip(lean_grads, dense_grads):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # The rows themselves, image by image in matching order.
    indices = [(torch.tensor([3, 0]), torch.tensor([0, 1])), (torch.tensor([4]), torch.tensor([0]))]
    dense = torch.einsum("bqc,bchw->bqhw", embed, features)
    outputs = {"pred_masks": dense, "mask_embed": embed, "mask_features": features}
    rows = matched_masks(outputs, indices)
    assert torch.equal(rows, torch.stack([dense[0, 3], dense[0, 0], dense[1, 4]]))
    # Their gradient is the dense product's, for these rows.
    e, f = embed.clone().requires_grad_(), features.clone().requires_grad_()
    up = torch.randn(rows.shape, generator=g, dtype=torch.float64)
    lean = torch.autograd.grad(
        (matched_masks({**outputs, "mask_embed": e, "mask_features": f}, indices) * up).sum(),
        (e, f),
    )
    full = torch.einsum("bqc,bchw->bqhw", e, f)
    ref = torch.autograd.grad(
        (torch.stack([full[0, 3], full[0, 0], full[1, 4]]) * up).sum(), (e, f)
    )
    for a, b in zip(lean, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_every_layers_matching_samples_the_shared_feature_rows(monkeypatch):
    """Training outputs (mask_embed x mask_features, two aux layers): the criterion forms the
    features' rows once and every layer's matcher samples them; the losses are those of
    matching on the masks themselves."""
    import ovseg.models.losses.matcher as matcher_mod

    torch.manual_seed(0)
    features = torch.randn(1, 8, 8, 8)

    def layer():
        embed = torch.randn(1, 6, 8)
        return {
            "pred_logits": torch.randn(1, 6, 4),
            "pred_masks": torch.einsum("bqc,bchw->bqhw", embed, features),
            "mask_embed": embed,
            "mask_features": features,
        }

    main, aux = layer(), [layer(), layer()]
    training = {**main, "aux_outputs": aux}
    plain = {
        **{k: main[k] for k in ("pred_logits", "pred_masks")},
        "aux_outputs": [{k: a[k] for k in ("pred_logits", "pred_masks")} for a in aux],
    }
    crit = build_criterion(LossConfig(train_num_points=64), num_decoder_layers=2)
    calls = []
    real = matcher_mod.point_sample_rows

    def counting(*args, **kwargs):
        calls.append(args[0].data_ptr())
        return real(*args, **kwargs)

    monkeypatch.setattr(matcher_mod, "point_sample_rows", counting)
    torch.manual_seed(1)
    fast = crit(training, _targets())
    assert len(calls) == 3 and len(set(calls)) == 1  # three layers, one shared table
    torch.manual_seed(1)
    reference = crit(plain, _targets())
    assert len(calls) == 3  # outputs without mask_embed sample the masks
    assert fast.keys() == reference.keys()
    for k in fast:
        torch.testing.assert_close(fast[k], reference[k], rtol=1e-5, atol=1e-6)
