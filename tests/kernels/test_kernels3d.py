"""Numba 3D Joseph kernels: agreement with the torch kernels, adjointness, 2D ↔ 3D consistency."""
from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("numba")
torch = pytest.importorskip("torch")

from medvol.errors import GeometryError, InputError  # noqa: E402
from medvol.geometry import ConeBeam3D, FanBeam2D, ParallelBeam2D, ParallelBeam3D  # noqa: E402
from medvol.kernels import _cpu3d as c3  # noqa: E402
from medvol.kernels import _torch_kernels as tk  # noqa: E402



def _geoms():
    a_half = np.linspace(0.1, np.pi + 0.1, 9, endpoint=False)
    a_full = np.linspace(0.2, 2 * np.pi + 0.2, 9, endpoint=False)
    return {
        "par3d": (ParallelBeam3D(angles=a_half, n_rows=13, n_det=23, det_spacing=0.9,
                                 det_spacing_row=1.2, det_offset=0.35, det_offset_row=-0.45),
                  (11, 16, 19), (1.3, 1.1, 0.8)),
        "cone": (ConeBeam3D(angles=a_full, n_rows=15, n_det=27, det_spacing=1.6,
                            det_spacing_row=1.4, src_iso=60.0, iso_det=35.0, det_offset=0.45,
                            det_offset_row=-0.7), (12, 17, 14), (1.2, 0.9, 1.1)),
        # views at 0, 45°, 90°, ...: axis-aligned rays and near-ties of the dominant axis
        "cone_axes": (ConeBeam3D(angles=np.arange(8) * np.pi / 4, n_rows=9, n_det=21,
                                 det_spacing=1.0, det_spacing_row=1.0, src_iso=40.0,
                                 iso_det=20.0), (8, 12, 12), (1.0, 1.0, 1.0)),
    }


GEOMS = _geoms()


def _rng(seed):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("name", list(GEOMS))
def test_numba_matches_torch_float64(name):
    geom, vol, sp = GEOMS[name]
    x = _rng(1).random((2, *vol))
    y = _rng(2).random((2, *geom.sino_shape))
    fn = c3.forward(x, geom, sp)
    ft = tk.forward(torch.from_numpy(x), geom, sp).numpy()
    assert fn.shape == ft.shape == (2, *geom.sino_shape)
    assert np.abs(fn - ft).max() < 1e-5 * np.abs(ft).max()
    assert np.abs(fn - ft).max() < 1e-12 * np.abs(ft).max()  # same arithmetic, float64
    bn = c3.adjoint(y, geom, vol, sp)
    bt = tk.adjoint(torch.from_numpy(y), geom, vol, sp).numpy()
    assert bn.shape == (2, *vol)
    assert np.abs(bn - bt).max() < 1e-12 * np.abs(bt).max()


@pytest.mark.parametrize("name", list(GEOMS))
def test_numba_adjointness(name):
    geom, vol, sp = GEOMS[name]
    x = _rng(3).random((1, *vol))
    y = _rng(4).random((1, *geom.sino_shape))
    lhs = float((c3.forward(x, geom, sp) * y).sum())
    rhs = float((x * c3.adjoint(y, geom, vol, sp)).sum())
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


def test_float32_in_float32_out():
    geom, vol, sp = GEOMS["cone"]
    x = _rng(5).random((1, *vol))
    y = _rng(6).random((1, *geom.sino_shape))
    f64 = c3.forward(x, geom, sp)
    f32 = c3.forward(x.astype(np.float32), geom, sp)
    assert f32.dtype == np.float32
    assert np.abs(f32 - f64).max() < 1e-6 * np.abs(f64).max()
    b32 = c3.adjoint(y.astype(np.float32), geom, vol, sp)
    assert b32.dtype == np.float32
    b64 = c3.adjoint(y, geom, vol, sp)
    assert np.abs(b32 - b64).max() < 1e-6 * np.abs(b64).max()


def test_chunked_views_and_tiles_do_not_change_result(monkeypatch):
    geom, vol, sp = GEOMS["cone"]
    x = _rng(7).random((1, *vol))
    y = _rng(8).random((1, *geom.sino_shape))
    ref_f, ref_b = c3.forward(x, geom, sp), c3.adjoint(y, geom, vol, sp)
    per_view = geom.n_rows * geom.n_det * 6 * 8
    monkeypatch.setattr(c3, "TABLE_BYTES", 2 * per_view)  # 2 views per chunk, 9 views: uneven
    monkeypatch.setattr(c3, "ADJOINT_TILE", 37)
    np.testing.assert_allclose(c3.forward(x, geom, sp), ref_f, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c3.adjoint(y, geom, vol, sp), ref_b, rtol=0, atol=1e-12)


def test_parallel3d_rows_equal_parallel2d_of_each_slice():
    nz, ny, nx = 7, 15, 12
    sp = (1.4, 0.9, 1.1)
    x = _rng(9).random((1, nz, ny, nx))
    angles = np.linspace(0, np.pi, 10, endpoint=False) + 0.05
    g3 = ParallelBeam3D(angles=angles, n_rows=nz, n_det=21, det_spacing=0.8,
                        det_spacing_row=sp[0], det_offset=-0.3)
    g2 = ParallelBeam2D(angles=angles, n_det=21, det_spacing=0.8, det_offset=-0.3)
    p3 = c3.forward(x, g3, sp)[0]  # (views, rows, det)
    p2 = tk.forward(torch.from_numpy(x[0]), g2, sp[1:]).numpy()  # (nz, views, det)
    np.testing.assert_allclose(p3, p2.transpose(1, 0, 2), rtol=1e-12, atol=1e-12)


def test_cone_central_row_of_z_invariant_object_equals_fan2d():
    nz, ny, nx = 6, 14, 13
    sp = (0.7, 1.0, 1.1)
    img = _rng(10).random((ny, nx))
    vol = np.broadcast_to(img, (nz, ny, nx)).copy()[None]
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False) + 0.2
    kw = dict(n_det=25, det_spacing=1.3, src_iso=45.0, iso_det=30.0, det_offset=0.4)
    fan = FanBeam2D(angles=angles, **kw)
    cone = ConeBeam3D(angles=angles, n_rows=3, det_spacing_row=0.5, **kw)
    pc = c3.forward(vol, cone, sp)[0, :, 1]
    pf = tk.forward(torch.from_numpy(img[None]), fan, sp[1:]).numpy()[0]
    np.testing.assert_allclose(pc, pf, rtol=1e-12, atol=1e-12)


def test_point_lands_on_magnified_position():
    """A single voxel seen by the cone beam lands where the ray through it hits the detector."""
    nz, ny, nx = 9, 11, 13
    k, r, c = 2, 8, 3
    x = np.zeros((1, nz, ny, nx))
    x[0, k, r, c] = 1.0
    px, py, pz = c - (nx - 1) / 2, r - (ny - 1) / 2, k - (nz - 1) / 2
    theta, src, det = 0.7, 50.0, 25.0
    g = ConeBeam3D(angles=[theta], n_rows=81, n_det=81, det_spacing=0.3, det_spacing_row=0.3,
                   src_iso=src, iso_det=det)
    p = c3.forward(x, g, (1.0, 1.0, 1.0))[0, 0]
    pos = (np.arange(81) - 40) * 0.3
    mag = (src + det) / (src - px * np.sin(theta) + py * np.cos(theta))
    s_star = (px * np.cos(theta) + py * np.sin(theta)) * mag
    assert abs((p.sum(0) * pos).sum() / p.sum() - s_star) < 0.03
    assert abs((p.sum(1) * pos).sum() / p.sum() - pz * mag) < 0.03


def test_bad_inputs_raise_medvol_errors():
    geom, vol, sp = GEOMS["par3d"]
    with pytest.raises(GeometryError, match="ParallelBeam3D or ConeBeam3D"):
        c3.forward(np.zeros((1, 4, 4)), ParallelBeam2D(angles=[0.0], n_det=4), (1.0, 1.0))
    with pytest.raises(InputError, match="dtype"):
        c3.forward(np.zeros((1, *vol), dtype=np.int16), geom, sp)
    with pytest.raises(GeometryError, match="shape"):
        c3.adjoint(np.zeros((1, 3, 4, 5)), geom, vol, sp)
    with pytest.raises(GeometryError, match="spacing"):
        c3.forward(np.zeros((1, *vol)), geom, (1.0, -1.0, 1.0))


@pytest.mark.parametrize("kind", ["par2d", "fan"])
def test_numba2d_matches_torch2d(kind):
    from medvol.kernels import _cpu2d as c2

    vol, sp = (19, 14), (1.1, 0.8)
    angles = np.linspace(0.05, 2 * np.pi + 0.05, 16, endpoint=False)
    if kind == "par2d":
        geom = ParallelBeam2D(angles=np.r_[angles, np.pi / 4, 3 * np.pi / 4], n_det=27,
                              det_spacing=0.9, det_offset=0.3)
    else:
        geom = FanBeam2D(angles=angles, n_det=31, det_spacing=1.3, src_iso=40.0, iso_det=20.0,
                         det_offset=-0.7)
    x = _rng(11).random((2, *vol))
    y = _rng(12).random((2, *geom.sino_shape))
    fn, ft = c2.forward(x, geom, sp), tk.forward(torch.from_numpy(x), geom, sp).numpy()
    assert np.abs(fn - ft).max() < 1e-6 * np.abs(ft).max()
    bn = c2.adjoint(y, geom, vol, sp)
    bt = tk.adjoint(torch.from_numpy(y), geom, vol, sp).numpy()
    assert np.abs(bn - bt).max() < 1e-6 * np.abs(bt).max()
