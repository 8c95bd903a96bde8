"""blocks: NaN-aware block means and their spread back over the frame."""

import numpy as np
import pytest

from hyperspy_partialscan.blocks import block_mean, block_spread


def test_block_mean_means_the_samples_of_each_block():
    p = np.full((5, 4), np.nan)
    p[0, 0], p[1, 1], p[2, 3] = 1.0, 3.0, 7.0
    b = block_mean(p, 2)
    assert b.shape == (2, 2)
    assert b[0, 0] == 2.0 and b[1, 1] == 7.0 and np.isnan(b[0, 1]) and np.isnan(b[1, 0])


def test_block_mean_of_a_measured_frame_is_the_plain_mean_and_leaves_the_input_alone():
    x = np.arange(36, dtype=np.float32).reshape(6, 6)
    before = x.copy()
    np.testing.assert_allclose(block_mean(x, 3), x.reshape(2, 3, 2, 3).mean(axis=(1, 3)))
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("shape", [(8, 8), (9, 11)])
def test_block_spread_inverts_block_mean_on_constant_blocks(shape):
    small = np.random.default_rng(0).normal(size=(shape[0] // 2, shape[1] // 2))
    big = block_spread(small, shape, 2)
    assert big.shape == shape
    np.testing.assert_allclose(block_mean(big, 2), small)
    assert block_spread(small, small.shape, 1) is small
