"""Image-quality metrics against scikit-image and closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medvol.errors import InputError
from medvol.metrics import mae, mse, psnr, rmse, ssim


def _sk_ssim(x, ref, L):
    return structural_similarity(x, ref, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=L)


@pytest.fixture
def pair2d():
    from skimage.data import camera
    ref = camera()[::4, ::4].astype(np.float64)                        # 128×128, 0…255
    x = ref + np.random.default_rng(0).normal(0, 12, ref.shape)
    return x, ref


def test_ssim_2d_matches_skimage(pair2d):
    x, ref = pair2d
    L = float(ref.max() - ref.min())
    assert ssim(x, ref, data_range=L) == pytest.approx(_sk_ssim(x, ref, L), abs=1e-6)
    assert ssim(x, ref, data_range="ref") == pytest.approx(_sk_ssim(x, ref, L), abs=1e-6)
    # a different (wrong) data range gives a different number: the keyword matters
    assert abs(ssim(x, ref, data_range=4 * L) - ssim(x, ref, data_range=L)) > 0.01


def test_ssim_3d_matches_skimage():
    rng = np.random.default_rng(1)
    from scipy.ndimage import gaussian_filter
    ref = gaussian_filter(rng.random((24, 28, 32)), 2)
    x = ref + rng.normal(0, 0.02, ref.shape)
    L = float(ref.max() - ref.min())
    assert ssim(x, ref, data_range=L) == pytest.approx(_sk_ssim(x, ref, L), abs=1e-6)


def _wang_ssim(a, b, L, sigma=1.5):
    """Wang et al. (2004) written out (the formula medvol computed by hand before it called
    scikit-image): Gaussian moments, population covariance, 5-px border excluded."""
    from scipy.ndimage import gaussian_filter

    def f(v):
        return gaussian_filter(v, sigma=sigma, truncate=3.5, mode="reflect")

    ux, uy = f(a), f(b)
    vx, vy, vxy = f(a * a) - ux * ux, f(b * b) - uy * uy, f(a * b) - ux * uy
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    smap = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    inner = smap[tuple(slice(5, n - 5) for n in smap.shape)]
    return float(inner.mean()), smap


def test_ssim_unchanged_from_the_written_out_formula(pair2d):
    """Moving SSIM onto scikit-image changed no number: 2D, 3D and the map, to 1e-12."""
    x, ref = pair2d
    L = float(ref.max() - ref.min())
    want, want_map = _wang_ssim(x, ref, L)
    got, got_map = ssim(x, ref, data_range=L, full=True)
    assert got == pytest.approx(want, abs=1e-12)
    np.testing.assert_allclose(got_map, want_map, atol=1e-12)
    rng = np.random.default_rng(3)
    a3, b3 = rng.random((14, 16, 18)), rng.random((14, 16, 18))
    assert ssim(a3, b3, data_range=1.0) == pytest.approx(_wang_ssim(a3, b3, 1.0)[0], abs=1e-12)


def test_ssim_identity_and_map(pair2d):
    _, ref = pair2d
    assert ssim(ref, ref, data_range=255.0) == pytest.approx(1.0, abs=1e-12)
    val, smap = ssim(ref * 0.5, ref, data_range=255.0, full=True)
    assert smap.shape == ref.shape and val < 1.0


def test_psnr_mse_rmse_mae_closed_form(pair2d):
    x, ref = pair2d
    e = np.mean((x - ref) ** 2)
    assert mse(x, ref) == pytest.approx(e)
    assert rmse(x, ref) == pytest.approx(math.sqrt(e))
    assert mae(x, ref) == pytest.approx(np.mean(np.abs(x - ref)))
    assert psnr(x, ref, data_range=255.0) == pytest.approx(10 * math.log10(255 ** 2 / e))
    assert psnr(x, ref, data_range=255.0) == pytest.approx(
        peak_signal_noise_ratio(ref, x, data_range=255.0), abs=1e-9)
    assert psnr(ref, ref, data_range=1.0) == math.inf
    # constant offset of 3 → RMSE = MAE = 3 exactly
    assert rmse(ref + 3, ref) == pytest.approx(3.0) and mae(ref + 3, ref) == pytest.approx(3.0)


def test_mask_restricts_pixels():
    ref = np.zeros((4, 4))
    x = ref.copy()
    x[0, 0] = 10.0
    m = np.zeros((4, 4), bool)
    m[2:, 2:] = True
    assert rmse(x, ref, mask=m) == 0.0
    assert mae(x, ref, mask=~m) == pytest.approx(10 / 12)
    with pytest.raises(InputError, match="empty"):
        rmse(x, ref, mask=np.zeros((4, 4), bool))


def test_torch_inputs(pair2d):
    torch = pytest.importorskip("torch")
    x, ref = pair2d
    L = float(ref.max() - ref.min())
    assert ssim(torch.from_numpy(x), torch.from_numpy(ref), data_range=L) == pytest.approx(
        _sk_ssim(x, ref, L), abs=1e-6)
    assert psnr(torch.from_numpy(x).float(), torch.from_numpy(ref).float(), data_range=L) == \
        pytest.approx(psnr(x.astype(np.float32), ref.astype(np.float32), data_range=L), abs=1e-9)


def test_input_errors():
    a = np.zeros((16, 16))
    with pytest.raises(TypeError):
        psnr(a, a)                              # data_range is a required keyword
    with pytest.raises(InputError, match="shape"):
        rmse(a, np.zeros((16, 15)))
    with pytest.raises(InputError, match="data_range"):
        ssim(a + 1, a, data_range=0.0)
    with pytest.raises(InputError, match="window"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)), data_range=1.0)
    with pytest.raises(InputError, match="data_range"):
        psnr(a, a, data_range="max")
