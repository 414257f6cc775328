"""Radial MRI: NUFFT against a direct DFT, Fourier-slice sinogram against exact line integrals,
gridding recon, trajectories, k-space file reading."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("finufft")

from medvol.errors import InputError  # noqa: E402
from medvol.geometry import ParallelBeam2D  # noqa: E402
from medvol.mri import (GOLDEN_ANGLE, RadialTrajectory, default_n_det,  # noqa: E402
                        density_compensation, golden_angle_trajectory, gridding_recon,
                        kspace_to_sinogram, nufft_adjoint, nufft_forward, read_radial_kspace,
                        sinogram_geometry, uniform_trajectory)
from medvol.phantoms import ellipse_image, ellipse_sinogram, shepp_logan_ellipses  # noqa: E402


def _phantom(n: int, pixel: float = 1.0):
    e = shepp_logan_ellipses(fov=0.85 * n * pixel)
    extra = np.array([[0.5, 0.08 * n * pixel, 0.04 * n * pixel, 0.25 * n * pixel,
                       -0.1 * n * pixel, 0.3]])       # off-centre, rotated: breaks symmetries
    e = np.vstack([e, extra])
    return e, ellipse_image(e, (n, n), (pixel, pixel))


def _corr(a, b) -> float:
    a = np.ravel(a) - np.mean(a)
    b = np.ravel(b) - np.mean(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_nufft_matches_direct_dft():
    rng = np.random.default_rng(0)
    img = rng.standard_normal((12, 10))
    tr = golden_angle_trajectory(5, 16)
    pixel = 0.7
    k = nufft_forward(img, tr, pixel=pixel)
    ny, nx = img.shape
    yy, xx = np.mgrid[:ny, :nx]
    X = (xx - (nx - 1) / 2) * pixel
    Y = (yy - (ny - 1) / 2) * pixel
    kx, ky = tr.kxy()
    kx, ky = kx / pixel, ky / pixel            # cycles/mm
    ref = np.array([[np.sum(img * np.exp(-2j * np.pi * (kx[i, j] * X + ky[i, j] * Y)))
                     for j in range(tr.n_read)] for i in range(tr.n_spokes)]) * pixel ** 2
    np.testing.assert_allclose(k, ref, rtol=0, atol=1e-6 * np.abs(ref).max())


def test_nufft_adjoint_is_adjoint():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 16)) + 1j * rng.standard_normal((16, 16))
    tr = uniform_trajectory(9, 32)
    y = rng.standard_normal((9, 32)) + 1j * rng.standard_normal((9, 32))
    lhs = np.vdot(y, nufft_forward(x, tr, pixel=1.3))
    rhs = np.vdot(nufft_adjoint(y, tr, (16, 16), pixel=1.3), x)
    assert abs(lhs - rhs) <= 1e-6 * abs(lhs)


@pytest.mark.parametrize("pixel", [1.0, 0.8])
def test_fourier_slice_sinogram_matches_radon(pixel):
    """Acceptance: full radial k-space → sinogram ≈ exact Radon transform (corr ≥ 0.99)."""
    n = 64
    ell, img = _phantom(n, pixel)
    tr = uniform_trajectory(2 * n, 2 * n)
    sino = kspace_to_sinogram(nufft_forward(img, tr, pixel=pixel), image_size=n, pixel=pixel)
    g = sinogram_geometry(tr, sino.shape[1], pixel)
    assert isinstance(g, ParallelBeam2D) and g.det_spacing == pixel
    exact = ellipse_sinogram(ell, g)             # analytic line integrals, mm × image units
    assert sino.shape == exact.shape == (2 * n, default_n_det(n, 2 * n))
    assert _corr(sino, exact) >= 0.99
    # same scale, not just the same shape: mass per view (the complex projection is exact to
    # band-limiting; the magnitude folds the ringing's negative lobes up by a few per cent)
    cplx = kspace_to_sinogram(nufft_forward(img, tr, pixel=pixel), image_size=n, pixel=pixel,
                              magnitude=False)
    np.testing.assert_allclose(cplx.real.sum(1), exact.sum(1), rtol=0.02)
    np.testing.assert_allclose(sino.sum(1), exact.sum(1), rtol=0.06)
    # a wrong angle convention (θ → −θ) would not correlate as well
    g_wrong = ParallelBeam2D(angles=-tr.angles, n_det=g.n_det, det_spacing=pixel)
    assert _corr(sino, ellipse_sinogram(ell, g_wrong)) < 0.95


def test_sinogram_bins_and_parity():
    assert default_n_det(128, 256) == 182
    assert default_n_det(256, 512) == 364
    with pytest.raises(InputError):
        kspace_to_sinogram(np.zeros((4, 256), complex), n_det=181)


def test_gridding_recon_full_vs_undersampled():
    n = 64
    _, img = _phantom(n)
    tr = uniform_trajectory(2 * n, 2 * n)
    full = gridding_recon(nufft_forward(img, tr), tr, (n, n))
    assert _corr(full, img) > 0.97
    cplx = gridding_recon(nufft_forward(img, tr), tr, (n, n), magnitude=False)
    assert abs(cplx.real.sum() / img.sum() - 1) < 0.08          # DC / overall scale
    inside = img > 0.1
    assert abs(np.median(full[inside] / img[inside]) - 1) < 0.1   # local scale
    sub = tr.subsample(16)
    under = gridding_recon(nufft_forward(img, sub), sub, (n, n))
    assert _corr(under, img) < _corr(full, img)


def test_density_compensation_is_ramp():
    tr = uniform_trajectory(8, 32)
    w = density_compensation(tr)
    r = np.abs(tr.radii())
    assert w.shape == (8, 32)
    np.testing.assert_allclose(w[0, r > 0] / r[r > 0], w[0, 1] / r[1])


def test_trajectories():
    tr = uniform_trajectory(256, 256)
    np.testing.assert_allclose(np.diff(tr.angles), math.pi / 256)
    assert tr.subsample(16).n_spokes == 16
    ga = golden_angle_trajectory(10, 32)
    np.testing.assert_allclose(np.mod(np.diff(ga.angles), 2 * math.pi),
                               GOLDEN_ANGLE % (2 * math.pi))
    assert math.isclose(math.degrees(GOLDEN_ANGLE), 111.246, abs_tol=1e-3)
    kx, ky = tr.kxy()
    assert kx.shape == (256, 256) and np.isclose(np.hypot(kx, ky).max(), 0.5)


def test_read_radial_kspace_formats(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    k = rng.standard_normal((6, 16)) + 1j * rng.standard_normal((6, 16))
    a = np.linspace(0, np.pi, 6, endpoint=False)
    with h5py.File(tmp_path / "k.h5", "w") as f:
        f["kspace"] = k
        f["angles"] = a
    np.savez(tmp_path / "k.npz", kspace=np.stack([k.real, k.imag], -1), angles=a)
    np.save(tmp_path / "k.npy", k)
    np.save(tmp_path / "k_angles.npy", a)
    for name in ("k.h5", "k.npz", "k.npy"):
        kk, tr = read_radial_kspace(tmp_path / name)
        np.testing.assert_allclose(kk, k)
        np.testing.assert_allclose(tr.angles, a)
        assert isinstance(tr, RadialTrajectory) and tr.n_read == 16
    np.save(tmp_path / "lone.npy", k)
    with pytest.raises(InputError, match="angles"):
        read_radial_kspace(tmp_path / "lone.npy")
    with pytest.raises(InputError, match="spoke angles for"):
        read_radial_kspace(tmp_path / "lone.npy", angles=a[:3])
    with pytest.raises(InputError, match="not found"):
        read_radial_kspace(tmp_path / "missing.h5")
