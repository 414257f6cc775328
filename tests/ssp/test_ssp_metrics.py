"""Metrics against independent implementations (scipy, sklearn-style formulas, skimage)."""
import numpy as np
import pytest
from scipy import stats

from medvol.ssp import metrics as M


def test_pearson_matches_scipy_and_is_affine_invariant():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(40, 50))
    p = 0.5 * t + rng.normal(size=t.shape)
    assert M.pearson(p, t) == pytest.approx(stats.pearsonr(p.ravel(), t.ravel())[0], abs=1e-12)
    assert M.pearson(3 * p + 7, t) == pytest.approx(M.pearson(p, t), abs=1e-12)


def test_mse_mae_r2_known_values():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.0, 2.0, 3.0, 6.0])
    assert M.mse(p, t) == pytest.approx(1.0)
    assert M.mae(p, t) == pytest.approx(0.5)
    assert M.r2(p, t) == pytest.approx(1 - 4 / 5)
    assert M.r2(t, t) == 1.0


def test_ssim_perfect_and_worse_with_noise():
    t = np.random.default_rng(1).normal(size=(64, 64))
    assert M.ssim(t, t) == pytest.approx(1.0)
    assert M.ssim(t + np.random.default_rng(2).normal(size=t.shape), t) < 0.9


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        M.mse(np.zeros(3), np.zeros(4))
