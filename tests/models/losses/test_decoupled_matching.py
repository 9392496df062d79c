"""OpenSD's split matching: thing queries take thing targets only, stuff queries stuff targets only."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from ovseg.models.losses import HungarianMatcher, SetCriterion
from ovseg.models.losses.matcher import grouped_assignment

# Queries 0, 1 are thing queries, 2, 3 stuff queries; targets 0 and 2 are things, 1 is stuff.
COST = torch.tensor(
    [
        [0.1, 0.0, 0.9],
        [0.8, 0.0, 0.2],
        [0.0, 0.5, 0.0],
        [0.9, 0.6, 0.9],
    ]
)
QUERY_IS_THING = torch.tensor([True, True, False, False])
TARGET_IS_THING = torch.tensor([True, False, True])


def test_hand_made_cost_is_assigned_within_groups():
    q, t = grouped_assignment(COST, QUERY_IS_THING, TARGET_IS_THING)
    # things: [[0.1, 0.9], [0.8, 0.2]] -> q0-t0, q1-t2 (0.3); stuff: [0.5, 0.6] -> q2-t1.
    assert q.tolist() == [0, 1, 2] and t.tolist() == [0, 2, 1]
    assert q.dtype == torch.int64 and t.dtype == torch.int64
    # Unconstrained, the cheapest assignment (0.1) crosses the groups: q1-t1, q2-t2.
    rows, cols = linear_sum_assignment(COST.numpy())
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [0, 1, 2]


def test_more_targets_than_queries_in_a_group_leaves_the_dearest_unmatched():
    cost = torch.tensor([[0.3, 0.1, 0.0], [0.0, 0.7, 0.2]])  # q0 thing, q1 stuff
    q, t = grouped_assignment(cost, torch.tensor([True, False]), torch.tensor([False, False, True]))
    # q0 can only take t2; q1 takes the cheaper stuff target t0 (0.0 < 0.7).
    assert q.tolist() == [0, 1] and t.tolist() == [2, 0]
    # A group with no targets (or no queries) matches nothing.
    q, t = grouped_assignment(cost, torch.tensor([True, True]), torch.tensor([False, False, False]))
    assert q.numel() == 0 and t.numel() == 0


def _crossed_outputs() -> tuple[dict, list[dict]]:
    """Class 0 is a thing, class 1 stuff. The thing query 0 predicts the stuff class (logit 5)
    and the stuff query 1 the thing class: a plain matcher pairs them across the groups."""
    pred_logits = torch.tensor([[[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]]])
    pred_masks = torch.zeros(1, 2, 4, 4)
    outputs = {"pred_logits": pred_logits, "pred_masks": pred_masks}
    targets = [
        {
            "labels": torch.tensor([1, 0]),  # target 0 stuff, target 1 thing
            "masks": torch.ones(2, 16, 16, dtype=torch.bool),
            "class_is_thing": torch.tensor([True, False]),
        }
    ]
    return outputs, targets


def test_matcher_never_pairs_a_thing_query_with_a_stuff_target():
    outputs, targets = _crossed_outputs()
    matcher = HungarianMatcher(cost_class=1.0, cost_mask=0.0, cost_dice=0.0, num_points=16)
    ((q, t),) = matcher(outputs, targets)
    assert q.tolist() == [0, 1] and t.tolist() == [0, 1]  # default: q0-stuff, q1-thing
    ((q, t),) = matcher({**outputs, "query_is_thing": torch.tensor([True, False])}, targets)
    assert q.tolist() == [0, 1] and t.tolist() == [1, 0]  # q0-thing target, q1-stuff target


def test_split_matching_needs_the_targets_thing_flags():
    outputs, targets = _crossed_outputs()
    del targets[0]["class_is_thing"]
    matcher = HungarianMatcher(num_points=16)
    with pytest.raises(ValueError, match="target 0 has no 'class_is_thing'"):
        matcher({**outputs, "query_is_thing": torch.tensor([True, False])}, targets)
    with pytest.raises(ValueError, match=r"query_is_thing has shape \(3,\), expected \(2,\)"):
        matcher({**outputs, "query_is_thing": torch.ones(3, dtype=torch.bool)}, targets)


def test_classification_loss_follows_the_split_matching():
    """Hand-computed cross-entropy (no-object weight 0.1 is not involved: both queries are
    matched). Split: query 0 (logits [0, 5, 0]) must predict class 0 and query 1 (logits
    [5, 0, 0]) class 1: each -log(e^0 / (e^0 + e^5 + e^0)) = log(2 + e^5). Plain: each
    -log(e^5 / (e^5 + 2)) = log(1 + 2 e^-5)."""
    outputs, targets = _crossed_outputs()
    matcher = HungarianMatcher(cost_class=1.0, cost_mask=0.0, cost_dice=0.0, num_points=16)
    criterion = SetCriterion(None, matcher, {"loss_ce": 1.0}, eos_coef=0.1, losses=("labels",))
    plain = criterion(outputs, targets)["loss_ce"].item()
    split = criterion({**outputs, "query_is_thing": torch.tensor([True, False])}, targets)
    assert plain == pytest.approx(math.log(1 + 2 * math.exp(-5)), rel=1e-6)
    assert split["loss_ce"].item() == pytest.approx(math.log(2 + math.exp(5)), rel=1e-6)


def test_aux_outputs_are_matched_by_their_own_query_groups():
    outputs, targets = _crossed_outputs()
    flags = torch.tensor([True, False])
    matcher = HungarianMatcher(cost_class=1.0, cost_mask=0.0, cost_dice=0.0, num_points=16)
    criterion = SetCriterion(None, matcher, {"loss_ce": 1.0}, losses=("labels",))
    aux = {**outputs, "query_is_thing": flags}
    losses = criterion({**outputs, "query_is_thing": flags, "aux_outputs": [aux]}, targets)
    assert losses["loss_ce_0"].item() == pytest.approx(math.log(2 + math.exp(5)), rel=1e-6)
