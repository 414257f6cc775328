"""Simulated acquisitions: HU conversion, geometry defaults, noise statistics, projector use."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medvol.errors import GeometryError, InputError
from medvol.simulate import (MU_WATER_70KEV, add_poisson_noise, default_cone_geometry,
                             default_fan_geometry, default_parallel_geometry, hu_to_mu, mu_to_hu,
                             simulate_sinogram)


def test_hu_mu_round_trip_and_anchors():
    hu = np.array([-1000.0, 0.0, 1000.0, 40.0])
    mu = hu_to_mu(hu)
    np.testing.assert_allclose(mu, [0.0, 0.0192, 0.0384, 0.0192 * 1.04])
    np.testing.assert_allclose(mu_to_hu(mu), hu, atol=1e-9)
    assert hu_to_mu(np.array([-3024.0]))[0] == 0.0                     # padding → air
    assert hu_to_mu(np.array([-3024.0]), clip=False)[0] < 0
    assert MU_WATER_70KEV == pytest.approx(0.01929, abs=2e-4)           # NIST XCOM, 70 keV


def test_poisson_noise_variance_matches_delta_method():
    p = np.full(200_000, 1.0)
    I0 = 1e4
    y = add_poisson_noise(p, I0, seed=3)
    expected_var = 1.0 / (I0 * math.exp(-1.0))
    assert y.var() == pytest.approx(expected_var, rel=0.03)
    assert y.mean() == pytest.approx(1.0, abs=5 * math.sqrt(expected_var / p.size) + 1e-4)
    # lower dose → proportionally higher variance
    y2 = add_poisson_noise(p, I0 / 4, seed=3)
    assert y2.var() / y.var() == pytest.approx(4.0, rel=0.05)


def test_poisson_noise_seed_and_clipping():
    p = np.linspace(0, 3, 1000)
    np.testing.assert_array_equal(add_poisson_noise(p, 1e3, seed=7), add_poisson_noise(p, 1e3, seed=7))
    assert not np.array_equal(add_poisson_noise(p, 1e3, seed=7), add_poisson_noise(p, 1e3, seed=8))
    y = add_poisson_noise(np.full(100, 50.0), 100.0, seed=0)          # ~0 photons → 1 count
    np.testing.assert_allclose(y, math.log(100.0), rtol=1e-6)
    with pytest.raises(InputError, match="I0"):
        add_poisson_noise(p, 0.0)


def test_default_fan_geometry_clinical_and_covering():
    g = default_fan_geometry((512, 512), (0.69, 0.69))
    # 512 × 0.69 mm → diagonal ≈ 500 mm → clinical distances
    assert g.src_iso == pytest.approx(570, rel=0.01) and g.iso_det == pytest.approx(470, rel=0.01)
    assert g.n_views == 360
    # the fan covers the circle through the image corners: tan(half fan) ≥ R / sqrt(D² − R²)
    R = 0.5 * math.hypot(512 * 0.69, 512 * 0.69)
    assert math.tan(g.fan_angle / 2) >= R / math.sqrt(g.src_iso ** 2 - R ** 2)
    small = default_fan_geometry((64, 64), (1.0, 1.0), n_views=90)
    assert small.src_iso == pytest.approx(570 * math.hypot(64, 64) / 500)
    with pytest.raises(GeometryError):
        default_fan_geometry((4, 64, 64), (1, 1, 1))


def test_default_parallel_and_cone():
    g2 = default_parallel_geometry((64, 48), (1.0, 2.0), n_views=30)
    assert g2.n_det * g2.det_spacing >= math.hypot(64, 96)
    g3 = default_parallel_geometry((10, 32, 32), (2.5, 1.0, 1.0), n_views=12)
    assert (g3.n_rows, g3.det_spacing_row) == (10, 2.5)
    c = default_cone_geometry((16, 32, 32), (2.0, 1.0, 1.0), n_views=20)
    R = 0.5 * math.hypot(32, 32)
    D, SDD = c.src_iso, c.src_iso + c.iso_det
    assert c.n_rows * c.det_spacing_row / 2 >= 16.0 * SDD / (D - R)   # z half-height 16 mm


def test_simulate_matches_analytic_disk_and_subsamples():
    pytest.importorskip("torch")
    # a disk of μ = 0.02 /mm, radius 20 mm: central line integral = 2·R·μ = 0.8
    n = 96
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(xx - (n - 1) / 2, yy - (n - 1) / 2)
    img = np.where(r < 20, 0.02, 0.0).astype(np.float32)
    g = default_parallel_geometry((n, n), (1.0, 1.0), n_views=60)
    sino, gu = simulate_sinogram(img, g, spacing=(1.0, 1.0), backend="torch")
    assert sino.shape == (60, g.n_det) and sino.dtype == np.float32
    assert sino[:, g.n_det // 2 - 1: g.n_det // 2 + 1].mean() == pytest.approx(0.8, rel=0.03)
    sub, gs = simulate_sinogram(img, g, spacing=(1.0, 1.0), views=4, backend="torch")
    assert gs.n_views == 15
    np.testing.assert_allclose(gs.angles, g.angles[::4])
    np.testing.assert_allclose(sub, sino[::4], atol=1e-6)
    noisy, _ = simulate_sinogram(img, g, spacing=(1.0, 1.0), I0=1e5, seed=1, backend="torch")
    noisy2, _ = simulate_sinogram(img, g, spacing=(1.0, 1.0), I0=1e5, seed=1, backend="torch")
    np.testing.assert_array_equal(noisy, noisy2)
    assert 0 < np.std(noisy - sino) < 0.02
    with pytest.raises(InputError, match="Hounsfield"):
        simulate_sinogram(img * 0 - 1000, g, spacing=(1.0, 1.0), backend="torch")
    hu_sino, _ = simulate_sinogram(mu_to_hu(img), g, spacing=(1.0, 1.0), hu=True, backend="torch")
    np.testing.assert_allclose(hu_sino, sino, atol=1e-4)


def test_projector_cor_convention_round_trip():
    """Data made by the projector with det_offset = −δ must be estimated as an axis at +δ."""
    pytest.importorskip("torch")
    from medvol.geometry import ParallelBeam2D
    from medvol.recon.projections import estimate_center_of_rotation
    n = 96
    yy, xx = np.mgrid[:n, :n]
    img = (np.hypot(xx - 40, yy - 52) < 14) * 1.0 + (np.abs(xx - 60) + np.abs(yy - 35) < 8) * 0.5
    ang = np.linspace(0, np.pi, 121)
    delta = 4.3
    g = ParallelBeam2D(angles=ang, n_det=128, det_offset=-delta)
    sino, _ = simulate_sinogram(img.astype(np.float32), g, spacing=(1.0, 1.0), backend="torch")
    est = estimate_center_of_rotation(sino, ang, method="opposed")
    assert est.offset_px == pytest.approx(delta, abs=0.25)
    assert est.det_offset == pytest.approx(-delta, abs=0.25)
