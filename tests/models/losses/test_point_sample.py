"""Point sampling and uncertain-point selection."""

import torch

from ovseg.models.losses import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)


def test_point_sample_at_pixel_centres_equals_indexing():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 7)
    ys = torch.tensor([0, 4, 2, 3, 1])
    xs = torch.tensor([0, 6, 3, 5, 2])
    coords = torch.stack([(xs + 0.5) / 7, (ys + 0.5) / 5], dim=-1)  # (P, 2) as (x, y)
    out = point_sample(x, coords[None].expand(2, -1, -1))
    assert out.shape == (2, 3, 5)
    torch.testing.assert_close(out, x[:, :, ys, xs])


def test_point_sample_interpolates_bilinearly_between_centres():
    x = torch.tensor([[[[0.0, 10.0]]]])  # (1, 1, 1, 2)
    coords = torch.tensor([[[0.5, 0.5]]])  # midway between the two pixel centres
    assert point_sample(x, coords).item() == 5.0


def test_uncertain_points_are_the_most_uncertain_candidates():
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 8, 8) * 5
    torch.manual_seed(1)
    coords = get_uncertain_point_coords_with_randomness(logits, calculate_uncertainty, 20, 3.0, 1.0)
    assert coords.shape == (3, 20, 2)
    torch.manual_seed(1)
    candidates = torch.rand(3, 60, 2)  # the same draw the function makes first
    uncertainty = -point_sample(logits, candidates).abs()[:, 0]  # (3, 60)
    for i in range(3):
        expected = candidates[i, uncertainty[i].argsort(descending=True)[:20]]
        assert sorted(map(tuple, coords[i].tolist())) == sorted(map(tuple, expected.tolist()))
    chosen = point_sample(logits, coords).abs()
    assert chosen.max() <= -uncertainty.median()  # all from the uncertain half


def test_uncertain_points_mix_random_points():
    logits = torch.randn(4, 1, 16, 16)
    coords = get_uncertain_point_coords_with_randomness(
        logits, calculate_uncertainty, 50, 3.0, 0.75
    )
    assert coords.shape == (4, 50, 2)
    coords = get_uncertain_point_coords_with_randomness(logits, calculate_uncertainty, 50, 1.0, 0.0)
    assert coords.shape == (4, 50, 2)
