"""Point sampling and uncertain-point selection."""

import torch

from ovseg.models.losses import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
    point_sample_rows,
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


def test_point_sample_rows_equals_grid_sample_including_the_zero_border():
    torch.manual_seed(0)
    x = torch.randn(1, 40, 9, 13)
    # Uniform points plus points in the outer half-pixel, where corners fall off the map.
    coords = torch.cat(
        [torch.rand(500, 2), torch.tensor([[0.0, 0.0], [0.999, 0.999], [0.01, 0.6]])]
    )
    rows = x[0].flatten(1).T.contiguous()  # (H * W, C)
    out = point_sample_rows(rows, (9, 13), coords)
    assert out.shape == (503, 40)
    torch.testing.assert_close(out, point_sample(x, coords[None])[0].T, rtol=1e-5, atol=1e-6)
    # The corner point of the map is a quarter of its corner pixel (three corners are off it).
    torch.testing.assert_close(out[500], x[0, :, 0, 0] / 4)


def test_point_sample_rows_refuses_a_map_of_another_size():
    import pytest

    with pytest.raises(ValueError, match="a 3x4 map has 12"):
        point_sample_rows(torch.zeros(10, 2), (3, 4), torch.rand(5, 2))


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
