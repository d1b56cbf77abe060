"""Global-coordinate noise (I3): a function of (seed, level, stream, channel, y, x) only."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ourgan_dist.planning import noise
from ourgan_dist.planning.geometry import Box


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**40), st.integers(0, 6), st.integers(0, 500), st.integers(0, 500), st.integers(1, 40), st.integers(1, 40))
def test_noise_window_equals_crop_of_larger_window(seed, level, y0, x0, h, w):
    big = Box(max(0, y0 - 7), y0 + h + 9, max(0, x0 - 3), x0 + w + 5)
    small = Box(y0, y0 + h, x0, x0 + w)
    a = noise.normal(seed, level, 0, 3, big)
    b = noise.normal(seed, level, 0, 3, small)
    ys, xs = small.relative_to(big)
    assert np.array_equal(a[:, ys, xs], b)


def test_noise_is_standard_normal_and_keyed():
    box = Box(0, 256, 0, 256)
    a = noise.normal(7, 1, 0, 3, box)
    assert a.dtype == np.float32 and a.shape == (3, 256, 256)
    assert abs(a.mean()) < 0.02 and abs(a.std() - 1) < 0.02
    assert not np.array_equal(a, noise.normal(8, 1, 0, 3, box))  # seed
    assert not np.array_equal(a, noise.normal(7, 2, 0, 3, box))  # level
    assert not np.array_equal(a, noise.normal(7, 1, 1, 3, box))  # stream
    assert not np.array_equal(a[0], a[1])  # channels independent
    # neighbouring pixels are uncorrelated
    assert abs(np.corrcoef(a[0, :, :-1].ravel(), a[0, :, 1:].ravel())[0, 1]) < 0.02


def test_noise_far_away_coordinates():
    far = Box(2**27, 2**27 + 4, 2**27 - 4, 2**27)
    v = noise.normal(1, 3, 0, 3, far)
    assert np.isfinite(v).all() and v.std() > 0


def test_y_coordinates_global():
    full = noise.y_coordinates(0, 101, 101)
    assert full[0] == -1 and full[-1] == 1 and abs(full[50]) < 1e-7
    assert np.array_equal(noise.y_coordinates(30, 60, 101), full[30:60])
