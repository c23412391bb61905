import math

import numpy as np
import pytest

from tfpriors.perforation import (
    PerforationMask,
    grid_mask,
    kept_count,
    mask_from_scores,
    pooling_counts,
    structure_mask,
    uniform_mask,
)


def brute_force_nearest(shape, kept):
    rows, cols = np.divmod(np.arange(shape[0] * shape[1]), shape[1])
    kr, kc = np.divmod(np.asarray(kept), shape[1])
    distances = (rows[:, None] - kr[None]) ** 2 + (cols[:, None] - kc[None]) ** 2
    return distances.min(1), distances


@pytest.mark.parametrize("builder", [uniform_mask, grid_mask, structure_mask])
@pytest.mark.parametrize(
    "shape,rate", [((7, 9), 0.5), ((13, 13), 0.75), ((1, 5), 0.4), ((6, 6), 0.0)]
)
def test_masks_have_the_rate_and_a_true_nearest_map(builder, shape, rate):
    mask = builder(shape, rate, seed=3)
    size = shape[0] * shape[1]
    assert len(mask.kept) == kept_count(size, rate) or builder is grid_mask
    assert abs(mask.rate - rate) <= 0.2 + 1.0 / size
    assert np.all(np.diff(mask.kept) > 0)
    best, distances = brute_force_nearest(shape, mask.kept)
    chosen = distances[np.arange(size), mask.fill_index]
    np.testing.assert_array_equal(chosen, best)  # nearest (Euclidean), ties either way
    np.testing.assert_array_equal(mask.kept[mask.fill_index], mask.nearest)
    np.testing.assert_array_equal(mask.nearest[mask.kept], mask.kept)


def test_grid_positions_follow_the_formula():
    mask = grid_mask((16, 16), 0.75, seed=7)
    image = mask.kept_image()
    rows = np.flatnonzero(image.any(1))
    cols = np.flatnonzero(image.any(0))
    assert len(rows) * len(cols) == len(mask.kept) == 64
    rng = np.random.default_rng(7)
    for positions, n in ((rows, len(rows)), (cols, len(cols))):
        u = rng.uniform()
        expected = np.ceil(16 / n * (np.arange(n) + u)).astype(int) - 1
        np.testing.assert_array_equal(positions, expected)


def test_masks_are_seeded():
    assert uniform_mask((9, 9), 0.5, seed=1) == uniform_mask((9, 9), 0.5, seed=1)
    assert uniform_mask((9, 9), 0.5, seed=1) != uniform_mask((9, 9), 0.5, seed=2)
    assert grid_mask((9, 9), 0.5, seed=1) != grid_mask((9, 9), 0.5, seed=4)


def test_structure_keeps_positions_read_by_most_pooling_windows():
    counts = pooling_counts((7, 7), 3, 2)
    # 3x3 stride 2 windows overlap on even rows/cols 2 and 4: read 2x (edge) or 4x.
    assert counts[2, 2] == 4 and counts[2, 1] == 2 and counts[1, 1] == 1
    mask = structure_mask((7, 7), 1 - 4 / 49)
    assert sorted(mask.kept) == [16, 18, 30, 32]
    np.testing.assert_array_equal(pooling_counts((4, 4), 2), np.ones((4, 4)))
    assert pooling_counts((5, 5), 2, 2, "same")[4, 4] == 1


def test_mask_from_scores_keeps_the_highest():
    scores = np.arange(12.0).reshape(3, 4)
    assert mask_from_scores(scores, 0.75).kept.tolist() == [9, 10, 11]
    with pytest.raises(ValueError, match="scores"):
        mask_from_scores(np.array([1.0, np.nan]), 0.5)


def test_config_round_trip_and_equality():
    mask = uniform_mask((5, 6), 0.3, seed=0)
    again = PerforationMask.from_config(mask.get_config())
    assert again == mask and hash(again) == hash(mask)
    np.testing.assert_array_equal(again.fill_index, mask.fill_index)
    assert "rate=0.300" in repr(mask)
    assert math.isclose(mask.rate, 1 - len(mask.kept) / 30)


@pytest.mark.parametrize(
    "args,error,match",
    [
        (((4, 4), [0, 16]), ValueError, r"\[0, 16\)"),
        (((4, 4), [-1]), ValueError, "kept"),
        (((4, 4), [1, 1]), ValueError, "distinct"),
        (((4, 4), []), ValueError, "non-empty"),
        (((4, 4), [0.5]), TypeError, "integers"),
        (((0, 4), [0]), ValueError, "output_shape"),
        (((4,), [0]), ValueError, "output_shape"),
    ],
)
def test_mask_validation(args, error, match):
    with pytest.raises(error, match=match):
        PerforationMask(*args)


def test_rate_validation():
    with pytest.raises(ValueError, match="rate"):
        uniform_mask((4, 4), 1.0)
    with pytest.raises(TypeError, match="rate"):
        grid_mask((4, 4), "0.5")
    with pytest.raises(ValueError, match="config"):
        PerforationMask.from_config({"kept": [0]})
