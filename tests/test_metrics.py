"""metrics: the measures the demo, the benchmarks and training report."""

import numpy as np
import pytest

from hyperspy_partialscan.metrics import BLUR_SIGMA, blur_target, psnr, rmse, rmse_percent


def test_blur_target_is_the_seeds_5x5_gaussian():
    impulse = np.zeros((11, 11))
    impulse[5, 5] = 1.0
    kernel = blur_target(impulse)
    assert kernel.sum() == pytest.approx(1.0)  # preserves intensity
    assert np.count_nonzero(kernel > 1e-12) == 25  # 5x5 support (truncate 0.8 x sigma 2.5 = 2 px)
    assert BLUR_SIGMA == 2.5
    flat = np.full((8, 8), 3.0)
    np.testing.assert_allclose(blur_target(flat), flat)


def test_rmse_variants():
    a, b = np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.5, 0.0])
    assert rmse(a, b) == pytest.approx(np.sqrt(1 / 3))
    assert rmse_percent(a, b) == pytest.approx(100 * np.sqrt(1 / 3))
    assert rmse_percent(a, b, data_range=2.0) == pytest.approx(50 * np.sqrt(1 / 3))
    assert rmse_percent(a, b, data_range=None) == pytest.approx(200 * np.sqrt(1 / 3))  # b spans 0.5
    assert np.isnan(rmse_percent(a, np.zeros(3), data_range=None))  # a flat reference has no range


def test_psnr():
    clean = np.zeros((4, 4))
    assert psnr(clean + 0.1, clean) == pytest.approx(20.0)
    assert psnr(clean, clean) == pytest.approx(200.0)  # exact match capped, not inf
    assert psnr(clean + 10, clean, data_range=100) == pytest.approx(20.0)
