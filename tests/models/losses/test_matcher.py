"""Hungarian matcher on hand-made cases."""

import torch

from ovseg.models.losses import (
    HungarianMatcher,
    batch_dice_cost,
    batch_sigmoid_ce_cost,
    mask_feature_rows,
)


def _perfect_outputs(masks: torch.Tensor, labels: torch.Tensor, num_queries: int, num_classes: int):
    """Queries 0..N-1 predict the targets exactly (logits +-20), the rest predict no-object."""
    n, h, w = masks.shape
    pred_masks = torch.full((1, num_queries, h // 4, w // 4), -20.0)
    down = masks[:, ::4, ::4]  # the stride-4 view of the targets (masks are 4-pixel aligned)
    pred_masks[0, :n] = torch.where(down, 20.0, -20.0)
    pred_logits = torch.full((1, num_queries, num_classes + 1), -20.0)
    pred_logits[0, torch.arange(n), labels] = 20.0
    pred_logits[0, n:, num_classes] = 20.0
    return {"pred_logits": pred_logits, "pred_masks": pred_masks}


def _block_masks(h: int = 32, w: int = 32) -> torch.Tensor:
    masks = torch.zeros(3, h, w, dtype=torch.bool)
    masks[0, :16, :16] = True
    masks[1, :16, 16:] = True
    masks[2, 16:, :] = True
    return masks


def test_perfect_prediction_gives_identity():
    masks, labels = _block_masks(), torch.tensor([2, 0, 1])
    outputs = _perfect_outputs(masks, labels, num_queries=5, num_classes=3)
    ((q, t),) = HungarianMatcher(num_points=500)(outputs, [{"labels": labels, "masks": masks}])
    assert q.dtype == torch.int64 and t.dtype == torch.int64
    assert q.tolist() == [0, 1, 2] and t.tolist() == [0, 1, 2]


def test_permuted_prediction_is_recovered():
    masks, labels = _block_masks(), torch.tensor([2, 0, 1])
    outputs = _perfect_outputs(masks, labels, num_queries=5, num_classes=3)
    perm = torch.tensor([3, 0, 4, 1, 2])  # query perm[k] now holds what query k held
    outputs = {k: v[:, torch.argsort(perm)] for k, v in outputs.items()}
    ((q, t),) = HungarianMatcher(num_points=500)(outputs, [{"labels": labels, "masks": masks}])
    matched = dict(zip(t.tolist(), q.tolist()))
    assert matched == {0: 3, 1: 0, 2: 4}


def test_class_cost_alone_breaks_mask_ties():
    # Two identical masks with different classes: only the class cost can tell them apart.
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, :4] = True
    labels = torch.tensor([1, 0])
    pred_logits = torch.tensor([[[5.0, -5.0, -5.0], [-5.0, 5.0, -5.0]]])
    pred_masks = torch.where(masks[:, ::4, ::4], 10.0, -10.0)[None]
    ((q, t),) = HungarianMatcher(num_points=64)(
        {"pred_logits": pred_logits, "pred_masks": pred_masks},
        [{"labels": labels, "masks": masks}],
    )
    assert dict(zip(t.tolist(), q.tolist())) == {0: 1, 1: 0}


def test_empty_targets_give_empty_matches():
    outputs = {
        "pred_logits": torch.randn(2, 4, 3),
        "pred_masks": torch.randn(2, 4, 8, 8),
    }
    targets = [
        {
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 32, 32, dtype=torch.bool),
        },
        {"labels": torch.tensor([1]), "masks": torch.ones(1, 32, 32, dtype=torch.bool)},
    ]
    (q0, t0), (q1, t1) = HungarianMatcher(num_points=50)(outputs, targets)
    assert q0.numel() == 0 and t0.numel() == 0
    assert len(q1) == 1 and t1.tolist() == [0]


def test_batch_costs_match_hand_computation():
    inputs = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])  # 2 predictions, 2 points
    targets = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])  # 3 targets
    sig = torch.sigmoid(inputs)
    dice = torch.empty(2, 3)
    bce = torch.empty(2, 3)
    for i in range(2):
        for j in range(3):
            dice[i, j] = 1 - (2 * (sig[i] * targets[j]).sum() + 1) / (
                sig[i].sum() + targets[j].sum() + 1
            )
            p, y = sig[i], targets[j]
            bce[i, j] = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    torch.testing.assert_close(batch_dice_cost(inputs, targets), dice)
    torch.testing.assert_close(batch_sigmoid_ce_cost(inputs, targets), bce)


def test_matching_on_feature_rows_equals_matching_on_the_masks():
    """Training outputs carry mask_embed x mask_features = pred_masks: the matcher samples the
    features' rows and multiplies; the assignment is that of sampling the masks themselves."""
    torch.manual_seed(0)
    embed, features = torch.randn(2, 30, 16), torch.randn(2, 16, 12, 12)
    outputs = {
        "pred_logits": torch.randn(2, 30, 5),
        "pred_masks": torch.einsum("bqc,bchw->bqhw", embed, features),
        "mask_embed": embed,
        "mask_features": features,
    }
    targets = [
        {"labels": torch.randint(0, 4, (n,)), "masks": torch.rand(n, 48, 48) > 0.5} for n in (6, 3)
    ]
    matcher = HungarianMatcher(num_points=300)
    rows = mask_feature_rows(outputs)
    assert rows.shape == (2, 144, 16)
    torch.manual_seed(1)
    plain = matcher(outputs, targets)
    torch.manual_seed(1)  # the same points
    fast = matcher({**outputs, "mask_feature_rows": rows}, targets)
    for (q0, t0), (q1, t1) in zip(plain, fast):
        assert torch.equal(q0, q1) and torch.equal(t0, t1)
    # The rows are what the costs come from: negated rows (inverted masks) match otherwise.
    torch.manual_seed(1)
    flipped = matcher({**outputs, "mask_feature_rows": -rows}, targets)
    assert any(not torch.equal(t0, t1) for (_, t0), (_, t1) in zip(plain, flipped))
    # Without mask_embed (inference-style outputs) there are no rows to share.
    assert (
        mask_feature_rows({"pred_masks": outputs["pred_masks"], "mask_features": features}) is None
    )
