"""Analytic phantoms: exact line integrals vs numerical integration, mass conservation, scikit-image
and the Projector."""
from __future__ import annotations

import numpy as np
import pytest

from medvol.errors import GeometryError, InputError
from medvol.geometry import ConeBeam3D, FanBeam2D, ParallelBeam2D, ParallelBeam3D
from medvol.phantoms import (ellipse_image, ellipse_sinogram, ellipsoid_volume,
                             shepp_logan_2d, shepp_logan_3d, shepp_logan_ellipses,
                             shepp_logan_ellipsoids)


def _inside_2d(pts, e):
    """Independent point-in-ellipse sum (pts (..., 2))."""
    val = np.zeros(pts.shape[:-1])
    for A, a, b, x0, y0, phi in e:
        dx, dy = pts[..., 0] - x0, pts[..., 1] - y0
        p = np.cos(phi) * dx + np.sin(phi) * dy
        q = -np.sin(phi) * dx + np.cos(phi) * dy
        val += A * ((p / a) ** 2 + (q / b) ** 2 <= 1)
    return val


def _inside_3d(pts, e):
    val = np.zeros(pts.shape[:-1])
    for A, a, b, c, x0, y0, z0, phi in e:
        dx, dy, dz = pts[..., 0] - x0, pts[..., 1] - y0, pts[..., 2] - z0
        p = np.cos(phi) * dx + np.sin(phi) * dy
        q = -np.sin(phi) * dx + np.cos(phi) * dy
        val += A * ((p / a) ** 2 + (q / b) ** 2 + (dz / c) ** 2 <= 1)
    return val


def _numeric_line(start, end, inside, e, h=0.005):
    """Midpoint-rule integral of the phantom along the segment start→end (step h mm)."""
    L = np.linalg.norm(end - start)
    n = int(np.ceil(L / h))
    t = (np.arange(n) + 0.5) / n
    pts = start[None] + t[:, None] * (end - start)[None]
    return inside(pts, e).sum() * L / n


E64 = shepp_logan_ellipses(64.0)


def test_parallel_mass_conservation():
    # ∫ p(θ, s) ds = Σ value·π·a·b for every view (independent of the chord formula's details)
    g = ParallelBeam2D(np.linspace(0, np.pi, 5, endpoint=False), n_det=2000, det_spacing=0.04)
    y = ellipse_sinogram(E64, g)
    mass = (E64[:, 0] * np.pi * E64[:, 1] * E64[:, 2]).sum()
    np.testing.assert_allclose(y.sum(1) * g.det_spacing, mass, rtol=2e-4)


def test_parallel_rays_vs_numerical_integration():
    rng = np.random.default_rng(0)
    ang = rng.uniform(0, 2 * np.pi, 4)
    g = ParallelBeam2D(ang, n_det=9, det_spacing=5.0, det_offset=1.3)
    y = ellipse_sinogram(E64, g)
    s = (np.arange(9) - 4) * 5.0 + 1.3
    for i, th in enumerate(ang):
        u, d = np.array([np.cos(th), np.sin(th)]), np.array([-np.sin(th), np.cos(th)])
        for k in range(9):
            num = _numeric_line(s[k] * u - 40 * d, s[k] * u + 40 * d, _inside_2d, E64)
            assert abs(num - y[i, k]) < 0.02, (i, k, num, y[i, k])
    assert y.max() > 10  # rays do cross the phantom


def test_fan_rays_vs_numerical_integration():
    rng = np.random.default_rng(1)
    ang = rng.uniform(0, 2 * np.pi, 3)
    g = FanBeam2D(ang, n_det=7, det_spacing=9.0, src_iso=120.0, iso_det=60.0, det_offset=-2.0)
    y = ellipse_sinogram(E64, g)
    s = (np.arange(7) - 3) * 9.0 - 2.0
    for i, th in enumerate(ang):
        u, d = np.array([np.cos(th), np.sin(th)]), np.array([-np.sin(th), np.cos(th)])
        src = -120.0 * d
        for k in range(7):
            det = 60.0 * d + s[k] * u
            num = _numeric_line(src, det, _inside_2d, E64)
            assert abs(num - y[i, k]) < 0.02, (i, k, num, y[i, k])


def test_cone_and_parallel3d_rays_vs_numerical_integration():
    E3 = shepp_logan_ellipsoids(64.0)
    th = np.array([0.3, 2.0])
    gc = ConeBeam3D(th, n_rows=3, n_det=4, det_spacing=12.0, det_spacing_row=10.0,
                    src_iso=150.0, iso_det=50.0, det_offset_row=1.0)
    gp = ParallelBeam3D(th, n_rows=3, n_det=4, det_spacing=9.0, det_spacing_row=7.0)
    yc, yp = ellipse_sinogram(E3, gc), ellipse_sinogram(E3, gp)
    for i, t in enumerate(th):
        u = np.array([np.cos(t), np.sin(t), 0.0])
        d = np.array([-np.sin(t), np.cos(t), 0.0])
        ez = np.array([0.0, 0.0, 1.0])
        for r in range(3):
            for k in range(4):
                sc, vc = (k - 1.5) * 12.0, (r - 1) * 10.0 + 1.0
                num = _numeric_line(-150.0 * d, 50.0 * d + sc * u + vc * ez, _inside_3d, E3)
                assert abs(num - yc[i, r, k]) < 0.02
                sp, vp = (k - 1.5) * 9.0, (r - 1) * 7.0
                o = sp * u + vp * ez
                num = _numeric_line(o - 40 * d, o + 40 * d, _inside_3d, E3)
                assert abs(num - yp[i, r, k]) < 0.02
    assert yc.max() > 5 and yp.max() > 5


def test_shepp_logan_matches_scikit_image():
    from skimage.data import shepp_logan_phantom

    ref = shepp_logan_phantom()                       # (400, 400), modified values
    ours = shepp_logan_2d(400, supersample=1)
    assert np.abs(ours - ref).mean() < 0.01           # edge pixels only
    assert np.abs(ours[::-1] - ref).mean() > 0.03     # orientation matters: flipped is wrong
    assert ours.max() == pytest.approx(1.0) and ours.min() == pytest.approx(0.0, abs=1e-12)


def test_shepp_logan_point_values():
    img = shepp_logan_2d(129, supersample=1)          # odd: pixel 64 is the isocentre
    assert img[64, 64] == pytest.approx(0.2)          # 1.0 (skull) − 0.8 (brain)
    assert img[0, 0] == 0.0
    orig = shepp_logan_2d(129, modified=False, supersample=1)
    assert orig[64, 64] == pytest.approx(2.0 - 0.98)


def test_ellipse_image_partial_volume():
    # a disc of radius 10.3 mm: supersampled image area → π r² (pixel 1 mm)
    e = np.array([[1.0, 10.3, 10.3, 0.4, -0.2, 0.0]])
    area = ellipse_image(e, (40, 40), (1.0, 1.0), supersample=8).sum()
    assert area == pytest.approx(np.pi * 10.3 ** 2, rel=2e-3)
    vol = ellipsoid_volume(np.array([[1.0, 8, 6, 5, 0, 0, 0.5, 0.3]]), (24, 24, 24),
                           (1.0, 1.0, 1.0), supersample=4).sum()
    assert vol == pytest.approx(4 / 3 * np.pi * 8 * 6 * 5, rel=5e-3)


def test_shepp_logan_3d_central_section():
    vol = shepp_logan_3d(33, supersample=1)
    assert vol.shape == (33, 33, 33)
    assert vol[16, 16, 16] == pytest.approx(0.2)
    assert vol[0].max() == 0.0  # top slice outside the skull (c = 0.81 · 16.5 mm)


def test_bad_inputs():
    g = ParallelBeam2D([0.0], n_det=4)
    with pytest.raises(InputError):
        ellipse_sinogram(np.ones((3, 5)), g)
    with pytest.raises(InputError):
        ellipse_sinogram(np.array([[1.0, -1, 1, 0, 0, 0]]), g)
    with pytest.raises(GeometryError):
        ellipse_sinogram(E64, object())
    with pytest.raises(InputError):
        shepp_logan_ellipses(-1.0)


def test_analytic_sinogram_vs_projector():
    """A(image) agrees with the analytic sinogram up to pixelisation (parallel and fan)."""
    pytest.importorskip("torch")
    from medvol.kernels import Projector
    n = 96
    E = shepp_logan_ellipses(float(n))
    img = ellipse_image(E, (n, n), (1.0, 1.0), supersample=4).astype(np.float32)
    for g in (ParallelBeam2D(np.linspace(0, np.pi, 60, endpoint=False), n_det=140),
              FanBeam2D(np.linspace(0, 2 * np.pi, 60, endpoint=False), n_det=200,
                        det_spacing=1.0, src_iso=250.0, iso_det=120.0)):
        A = Projector(g, (n, n), (1.0, 1.0), backend="torch")
        y = np.asarray(A(img), dtype=np.float64)
        ya = ellipse_sinogram(E, g)
        rel = np.linalg.norm(y - ya) / np.linalg.norm(ya)
        print(type(g).__name__, "relative L2 A(image) vs analytic:", rel)
        assert rel < 0.045
        # a wrong geometry convention (e.g. detector reversed) would be far off
        assert np.linalg.norm(y[:, ::-1] - ya) / np.linalg.norm(ya) > 0.2


def test_analytic_cone_projection_vs_projector():
    """3D: A(volume) of one ellipsoid agrees with the exact cone/parallel projections."""
    pytest.importorskip("torch")
    from medvol.kernels import Projector
    n = 32
    e = np.array([[1.0, 10.0, 7.0, 6.0, 2.0, -1.0, 1.5, 0.4]])
    vol = ellipsoid_volume(e, (n, n, n), (1.0, 1.0, 1.0), supersample=4).astype(np.float32)
    for g in (ConeBeam3D(np.linspace(0, 2 * np.pi, 40, endpoint=False), n_rows=48, n_det=48,
                         det_spacing=1.5, det_spacing_row=1.5, src_iso=128.0, iso_det=64.0),
              ParallelBeam3D(np.linspace(0, np.pi, 40, endpoint=False), n_rows=32, n_det=48)):
        y = np.asarray(Projector(g, (n, n, n), (1.0, 1.0, 1.0), backend="torch")(vol), float)
        ya = ellipse_sinogram(e, g)
        rel = np.linalg.norm(y - ya) / np.linalg.norm(ya)
        print(type(g).__name__, "relative L2 A(volume) vs analytic:", rel)
        assert rel < 0.08
        # half a voxel off in z is clearly detected
        shifted = ellipse_sinogram(e + [0, 0, 0, 0, 0, 0, 0.5, 0], g)
        assert np.linalg.norm(y - shifted) / np.linalg.norm(shifted) > 1.8 * rel
