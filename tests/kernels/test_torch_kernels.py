"""Torch Joseph projectors: adjointness, analytic projections, geometry conventions, autograd."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medvol.errors import GeometryError, InputError  # noqa: E402
from medvol.geometry import ConeBeam3D, FanBeam2D, ParallelBeam2D, ParallelBeam3D  # noqa: E402
from medvol.kernels import _torch_kernels as tk  # noqa: E402

F64 = torch.float64


def _geoms(n_views=7):
    """One of each geometry with offsets and non-trivial spacings; with matching grids."""
    a_half = np.linspace(0.1, np.pi + 0.1, n_views, endpoint=False)
    a_full = np.linspace(0.2, 2 * np.pi + 0.2, n_views, endpoint=False)
    return {
        "par2d": (ParallelBeam2D(angles=a_half, n_det=29, det_spacing=0.9, det_offset=0.35),
                  (17, 23), (1.1, 0.7)),
        "fan": (FanBeam2D(angles=a_full, n_det=33, det_spacing=1.3, src_iso=45.0, iso_det=25.0,
                          det_offset=-0.6), (19, 14), (0.8, 1.2)),
        "par3d": (ParallelBeam3D(angles=a_half, n_rows=11, n_det=21, det_spacing=0.9,
                                 det_spacing_row=1.2, det_offset=0.3, det_offset_row=-0.4),
                  (9, 12, 15), (1.3, 1.1, 0.8)),
        "cone": (ConeBeam3D(angles=a_full, n_rows=13, n_det=25, det_spacing=1.6,
                            det_spacing_row=1.4, src_iso=60.0, iso_det=35.0, det_offset=0.45,
                            det_offset_row=-0.7), (10, 13, 11), (1.2, 0.9, 1.1)),
    }


GEOMS = _geoms()
NAMES = list(GEOMS)


def _rand(shape, seed, dtype=F64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=dtype).to(device)


@pytest.mark.parametrize("name", NAMES)
def test_adjointness_float64(name):
    geom, vol, sp = GEOMS[name]
    x = _rand((2, *vol), 1)
    y = _rand((2, *geom.sino_shape), 2)
    lhs = float((tk.forward(x, geom, sp) * y).sum())
    rhs = float((x * tk.adjoint(y, geom, vol, sp)).sum())
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)  # scatter of the very same weights


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtype_and_float32(name):
    geom, vol, sp = GEOMS[name]
    x64 = _rand((3, *vol), 3)
    y64 = tk.forward(x64, geom, sp)
    assert y64.shape == (3, *geom.sino_shape) and y64.dtype == F64
    y32 = tk.forward(x64.float(), geom, sp)
    assert y32.dtype == torch.float32
    assert float((y32.double() - y64).abs().max()) <= 1e-5 * float(y64.abs().max())
    b32 = tk.adjoint(y64.float(), geom, vol, sp)
    assert b32.shape == (3, *vol) and b32.dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_batch_items_are_independent(name):
    geom, vol, sp = GEOMS[name]
    x = _rand((2, *vol), 4)
    both = tk.forward(x, geom, sp)
    assert torch.allclose(both[1], tk.forward(x[1:], geom, sp)[0], rtol=0, atol=1e-12)
    y = _rand((2, *geom.sino_shape), 5)
    both = tk.adjoint(y, geom, vol, sp)
    assert torch.allclose(both[0], tk.adjoint(y[:1], geom, vol, sp)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["fan", "cone"])
def test_chunking_does_not_change_result(name, monkeypatch):
    geom, vol, sp = GEOMS[name]
    x = _rand((1, *vol), 6)
    y = _rand((1, *geom.sino_shape), 7)
    ref_f, ref_b = tk.forward(x, geom, sp), tk.adjoint(y, geom, vol, sp)
    monkeypatch.setattr(tk, "CHUNK_BYTES", 40000)  # a handful of rays per chunk, uneven split
    assert torch.allclose(tk.forward(x, geom, sp), ref_f, rtol=0, atol=1e-12)
    assert torch.allclose(tk.adjoint(y, geom, vol, sp), ref_b, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------
# conventions against hand-computed truth
# ------------------------------------------------------------------------------------------
def test_parallel2d_theta0_is_column_sums_times_sy_and_90deg_row_sums_times_sx():
    ny, nx, sy, sx = 13, 9, 1.3, 0.7
    x = _rand((1, ny, nx), 8)
    # θ = 0: rays along +y, s = x -> detector bins on the column centres
    g0 = ParallelBeam2D(angles=[0.0], n_det=nx, det_spacing=sx)
    p0 = tk.forward(x, g0, (sy, sx))[0, 0]
    assert torch.allclose(p0, x[0].sum(0) * sy, rtol=1e-13, atol=0)
    # θ = π/2: u = (0, 1), rays along -x, s = y -> bins on the row centres
    g1 = ParallelBeam2D(angles=[np.pi / 2], n_det=ny, det_spacing=sy)
    p1 = tk.forward(x, g1, (sy, sx))[0, 0]
    assert torch.allclose(p1, x[0].sum(1) * sx, rtol=1e-13, atol=0)
    # a detector offset of exactly one column shifts the profile by one bin
    g2 = ParallelBeam2D(angles=[0.0], n_det=nx, det_spacing=sx, det_offset=sx)
    p2 = tk.forward(x, g2, (sy, sx))[0, 0]
    assert torch.allclose(p2[:-1], p0[1:], rtol=1e-13, atol=0) and float(p2[-1]) == 0.0


def _disc(n, spacing, radius, sub=4):
    """Area fraction of a centred disc per pixel, (n, n) with pixel size ``spacing``."""
    o = (np.arange(sub) + 0.5) / sub - 0.5
    c = (np.arange(n) - (n - 1) / 2) * spacing
    xx = (c[None, :, None, None] + o[None, None, None, :] * spacing)
    yy = (c[:, None, None, None] + o[None, None, :, None] * spacing)
    return ((xx ** 2 + yy ** 2) <= radius ** 2).mean(axis=(2, 3))


def _ball(n, spacing, radius, sub=4):
    o = (np.arange(sub) + 0.5) / sub - 0.5
    c = (np.arange(n) - (n - 1) / 2) * spacing
    acc = np.zeros((n, n, n))
    for oz in o:
        for oy in o:
            for ox in o:
                z = (c + oz * spacing)[:, None, None]
                y = (c + oy * spacing)[None, :, None]
                x = (c + ox * spacing)[None, None, :]
                acc += (x ** 2 + y ** 2 + z ** 2) <= radius ** 2
    return acc / sub ** 3


def test_disc_chord_length_parallel2d():
    n, h, r = 64, 0.5, 12.0
    img = torch.from_numpy(_disc(n, h, r))[None]
    angles = np.array([0.0, 0.3, np.pi / 4, 1.2, 2.0, 2.9])
    g = ParallelBeam2D(angles=angles, n_det=80, det_spacing=0.4, det_offset=0.1)
    p = tk.forward(img, g, (h, h))[0].numpy()
    s = (np.arange(80) - 39.5) * 0.4 + 0.1
    chord = 2 * np.sqrt(np.clip(r ** 2 - s ** 2, 0, None))
    # pixelisation tolerance (partial-volume rim pixels, worst at 45°): 0.4 px in the core,
    # 0.5 px up to two pixels from the rim, 0.1 px on average in the core
    core = np.abs(s) < r / 2
    assert np.abs(p[:, core] - chord[core]).max() < 0.4 * h
    assert np.abs(p[:, core] - chord[core]).mean() < 0.1 * h
    inner = np.abs(s) < r - 2 * h
    assert np.abs(p[:, inner] - chord[inner]).max() < 0.5 * h
    assert np.abs(p[:, np.abs(s) > r + 2 * h]).max() < 1e-12
    # mass: ∫ p ds = disc area for every view
    np.testing.assert_allclose(p.sum(1) * 0.4, np.pi * r ** 2, rtol=1e-3)


def test_ball_chord_length_parallel3d():
    n, h, r = 32, 1.0, 11.0
    vol = torch.from_numpy(_ball(n, h, r))[None]
    g = ParallelBeam3D(angles=[0.0, 0.7, 2.2], n_rows=31, n_det=33, det_spacing=0.9,
                       det_spacing_row=0.8, det_offset=0.2, det_offset_row=-0.3)
    p = tk.forward(vol, g, (h, h, h))[0].numpy()
    s = (np.arange(33) - 16) * 0.9 + 0.2
    v = (np.arange(31) - 15) * 0.8 - 0.3
    rho2 = s[None, :] ** 2 + v[:, None] ** 2
    chord = 2 * np.sqrt(np.clip(r ** 2 - rho2, 0, None))
    # pixelisation tolerance of an 11-voxel ball: 0.5 voxel worst case, 0.15 voxel on average
    inner = rho2 < (r - 1.5 * h) ** 2
    assert np.abs(p[:, inner] - chord[inner]).max() < 0.5 * h
    assert np.abs(p[:, inner] - chord[inner]).mean() < 0.15 * h
    assert np.abs(p[:, rho2 > (r + 2 * h) ** 2]).max() < 1e-12
    # mass: ∫∫ p ds dv = ball volume for every view
    np.testing.assert_allclose(p.sum((1, 2)) * 0.9 * 0.8, 4 / 3 * np.pi * r ** 3, rtol=3e-3)


def test_ball_chord_length_cone_central_row():
    n, h, r = 32, 1.0, 11.0
    vol = torch.from_numpy(_ball(n, h, r))[None]
    src, det = 80.0, 40.0
    g = ConeBeam3D(angles=[0.0, 1.0, 4.0], n_rows=5, n_det=41, det_spacing=1.0,
                   det_spacing_row=1.0, src_iso=src, iso_det=det, det_offset=0.25)
    p = tk.forward(vol, g, (h, h, h))[0, :, 2].numpy()  # central row: v = 0
    s = (np.arange(41) - 20) * 1.0 + 0.25
    dist = src * np.abs(s) / np.sqrt(s ** 2 + (src + det) ** 2)  # ray distance to the centre
    chord = 2 * np.sqrt(np.clip(r ** 2 - dist ** 2, 0, None))
    inner = dist < r - 1.5 * h
    assert np.abs(p[:, inner] - chord[inner]).max() < 0.5 * h
    assert np.abs(p[:, inner] - chord[inner]).mean() < 0.15 * h
    assert np.abs(p[:, dist > r + 2 * h]).max() < 1e-12


def _centroid(w, pos):
    return float((w * pos).sum() / w.sum())


def _point_image(shape, index):
    x = torch.zeros((1, *shape), dtype=F64)
    x[(0, *index)] = 1.0
    return x


@pytest.mark.parametrize("theta", [0.0, 0.4, 1.3, 2.5, 4.0, 5.6])
def test_point_projects_to_analytic_position_2d(theta):
    ny, nx, sy, sx = 21, 25, 1.0, 0.8
    r, c = 5, 19
    px, py = (c - (nx - 1) / 2) * sx, (r - (ny - 1) / 2) * sy
    x = _point_image((ny, nx), (r, c))
    cos, sin = np.cos(theta), np.sin(theta)
    n_det, ds, off = 401, 0.1, 0.37
    s = (np.arange(n_det) - (n_det - 1) / 2) * ds + off
    # parallel: s = x cosθ + y sinθ ; mass = pixel area
    g = ParallelBeam2D(angles=[theta], n_det=n_det, det_spacing=ds, det_offset=off)
    p = tk.forward(x, g, (sy, sx))[0, 0].numpy()
    assert abs(_centroid(p, s) - (px * cos + py * sin)) < 0.01
    assert abs(p.sum() * ds - sx * sy) < 0.01 * sx * sy
    # fan: the ray from the source through the point, magnified onto the detector
    src, det = 40.0, 30.0
    gf = FanBeam2D(angles=[theta], n_det=n_det, det_spacing=ds * 2, src_iso=src, iso_det=det,
                   det_offset=off)
    sf = (np.arange(n_det) - (n_det - 1) / 2) * ds * 2 + off
    pf = tk.forward(x, gf, (sy, sx))[0, 0].numpy()
    along_u = px * cos + py * sin
    along_d = -px * sin + py * cos
    s_star = along_u * (src + det) / (src + along_d)
    assert abs(_centroid(pf, sf) - s_star) < 0.02


@pytest.mark.parametrize("theta", [0.0, 0.9, 2.3, 3.9])
def test_point_projects_to_analytic_position_3d(theta):
    nz, ny, nx = 9, 11, 13
    sz, sy, sx = 1.2, 1.0, 0.9
    k, r, c = 6, 2, 9
    px, py, pz = (c - (nx - 1) / 2) * sx, (r - (ny - 1) / 2) * sy, (k - (nz - 1) / 2) * sz
    x = _point_image((nz, ny, nx), (k, r, c))
    cos, sin = np.cos(theta), np.sin(theta)
    along_u = px * cos + py * sin
    along_d = -px * sin + py * cos
    nr, nd, ds, dr = 81, 81, 0.15, 0.15
    g = ParallelBeam3D(angles=[theta], n_rows=nr, n_det=nd, det_spacing=ds, det_spacing_row=dr,
                       det_offset=0.3, det_offset_row=-0.2)
    s = (np.arange(nd) - (nd - 1) / 2) * ds + 0.3
    v = (np.arange(nr) - (nr - 1) / 2) * dr - 0.2
    p = tk.forward(x, g, (sz, sy, sx))[0, 0].numpy()
    assert abs(_centroid(p.sum(0), s) - along_u) < 0.01
    assert abs(_centroid(p.sum(1), v) - pz) < 0.01
    assert abs(p.sum() * ds * dr - sx * sy * sz) < 0.01 * sx * sy * sz
    src, det = 50.0, 25.0
    gc = ConeBeam3D(angles=[theta], n_rows=nr, n_det=nd, det_spacing=2 * ds,
                    det_spacing_row=2 * dr, src_iso=src, iso_det=det, det_offset=0.3,
                    det_offset_row=-0.2)
    sc = (np.arange(nd) - (nd - 1) / 2) * 2 * ds + 0.3
    vc = (np.arange(nr) - (nr - 1) / 2) * 2 * dr - 0.2
    pc = tk.forward(x, gc, (sz, sy, sx))[0, 0].numpy()
    mag = (src + det) / (src + along_d)
    # perspective makes the footprint slightly asymmetric: 0.03 mm (0.1 detector pixel)
    assert abs(_centroid(pc.sum(0), sc) - along_u * mag) < 0.03
    assert abs(_centroid(pc.sum(1), vc) - pz * mag) < 0.03


# ------------------------------------------------------------------------------------------
# consistency between geometries
# ------------------------------------------------------------------------------------------
def test_parallel3d_rows_equal_parallel2d_of_each_slice():
    nz, ny, nx = 6, 14, 11
    sp = (1.4, 0.9, 1.1)
    x = _rand((2, nz, ny, nx), 9)
    angles = np.linspace(0, np.pi, 9, endpoint=False) + 0.05
    g3 = ParallelBeam3D(angles=angles, n_rows=nz, n_det=19, det_spacing=0.8,
                        det_spacing_row=sp[0], det_offset=0.3)
    g2 = ParallelBeam2D(angles=angles, n_det=19, det_spacing=0.8, det_offset=0.3)
    p3 = tk.forward(x, g3, sp)
    p2 = tk.forward(x.reshape(2 * nz, ny, nx), g2, sp[1:]).reshape(2, nz, 9, 19)
    assert torch.allclose(p3, p2.permute(0, 2, 1, 3), rtol=1e-12, atol=1e-12)


def test_cone_with_distant_source_approaches_parallel3d():
    vol, sp = (8, 12, 10), (1.1, 0.9, 1.2)
    x = _rand((1, *vol), 10)
    angles = np.linspace(0, 2 * np.pi, 11, endpoint=False) + 0.1
    kw = dict(angles=angles, n_rows=9, n_det=17, det_spacing=0.9, det_spacing_row=1.1,
              det_offset=0.2, det_offset_row=0.3)
    pp = tk.forward(x, ParallelBeam3D(**kw), sp)
    pc = tk.forward(x, ConeBeam3D(src_iso=1e7, iso_det=0.0, **kw), sp)
    assert float((pc - pp).abs().max()) < 1e-5 * float(pp.abs().max())
    pc_near = tk.forward(x, ConeBeam3D(src_iso=30.0, iso_det=0.0, **kw), sp)
    assert float((pc_near - pp).abs().max()) > 1e-2 * float(pp.abs().max())  # test is sensitive


def test_cone_of_z_invariant_object_matches_fan2d():
    nz, ny, nx = 24, 15, 13
    sp = (0.5, 1.0, 1.1)
    img = torch.from_numpy(_disc(15, 1.0, 5.5))[None, :, 1:14].contiguous()  # (1, 15, 13)
    img = img * (1 + _rand((1, ny, nx), 11))  # not symmetric
    vol = img[:, None].expand(1, nz, ny, nx).contiguous()
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False) + 0.2
    src, det, n_det, ds, off = 50.0, 30.0, 27, 1.2, -0.4
    fan = FanBeam2D(angles=angles, n_det=n_det, det_spacing=ds, src_iso=src, iso_det=det,
                    det_offset=off)
    pf = tk.forward(img, fan, sp[1:])[0]
    # rows at v = -1.6, -0.8, 0, 0.8, 1.6 mm
    cone = ConeBeam3D(angles=angles, n_rows=5, n_det=n_det, det_spacing=ds,
                      det_spacing_row=0.8, src_iso=src, iso_det=det, det_offset=off)
    pc = tk.forward(vol, cone, sp)[0]
    # central row (v = 0): exactly the fan projection
    assert torch.allclose(pc[:, 2], pf, rtol=1e-12, atol=1e-12)
    # off-centre rows: the same line integral stretched by 1/cos(cone angle) (ray stays in z)
    s = (np.arange(n_det) - (n_det - 1) / 2) * ds + off
    for row, vr in ((0, -1.6), (3, 0.8), (4, 1.6)):
        stretch = np.sqrt(s ** 2 + (src + det) ** 2 + vr ** 2) / np.sqrt(s ** 2 + (src + det) ** 2)
        np.testing.assert_allclose(pc[:, row].numpy(), pf.numpy() * stretch[None, :],
                                   rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------
# autograd
# ------------------------------------------------------------------------------------------
def _tiny():
    a = np.array([0.3, 1.1, 2.0, 4.1])
    return {
        "par2d": (ParallelBeam2D(angles=a[:3], n_det=7, det_spacing=1.1, det_offset=0.2),
                  (5, 6), (1.0, 0.8)),
        "fan": (FanBeam2D(angles=a, n_det=8, det_spacing=1.4, src_iso=20.0, iso_det=10.0),
                (6, 5), (0.9, 1.1)),
        "par3d": (ParallelBeam3D(angles=a[:3], n_rows=4, n_det=6, det_spacing=1.1,
                                 det_spacing_row=0.9, det_offset_row=0.2), (3, 4, 5),
                  (1.0, 1.2, 0.9)),
        "cone": (ConeBeam3D(angles=a[:3], n_rows=4, n_det=6, det_spacing=1.5, det_spacing_row=1.3,
                            src_iso=20.0, iso_det=8.0, det_offset=0.3), (4, 5, 4), (1.1, 0.9, 1.0)),
    }


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_forward_and_adjoint(name):
    geom, vol, sp = _tiny()[name]
    x = _rand((1, *vol), 12).requires_grad_(True)
    y = _rand((1, *geom.sino_shape), 13).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: tk.forward(t, geom, sp), (x,), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(lambda t: tk.adjoint(t, geom, vol, sp), (y,), eps=1e-6,
                                    atol=1e-7)


def test_gradgradcheck_fan():
    geom, vol, sp = _tiny()["fan"]
    x = _rand((1, *vol), 14).requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda t: tk.forward(t, geom, sp) ** 2, (x,), eps=1e-6,
                                        atol=1e-6)


def test_backward_of_forward_is_adjoint():
    geom, vol, sp = GEOMS["cone"]
    x = _rand((2, *vol), 15).requires_grad_(True)
    w = _rand((2, *geom.sino_shape), 16)
    (tk.forward(x, geom, sp) * w).sum().backward()
    assert torch.allclose(x.grad, tk.adjoint(w, geom, vol, sp), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------
# input errors
# ------------------------------------------------------------------------------------------
def test_bad_inputs_raise_medvol_errors():
    geom, vol, sp = GEOMS["par2d"]
    with pytest.raises(GeometryError, match="spacing"):
        tk.forward(_rand((1, *vol), 0), geom, (1.0,))
    with pytest.raises(GeometryError, match="shape"):
        tk.forward(_rand((1, 4, *vol), 0), geom, sp)
    with pytest.raises(InputError, match="dtype"):
        tk.forward(torch.ones((1, *vol), dtype=torch.int32), geom, sp)
    with pytest.raises(GeometryError, match="shape"):
        tk.adjoint(_rand((1, 3, 4), 0), geom, vol, sp)
    with pytest.raises(GeometryError, match="unsupported geometry"):
        tk.forward(_rand((1, *vol), 0), object(), sp)


# ------------------------------------------------------------------------------------------
# CUDA
# ------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    geom, vol, sp = GEOMS[name]
    x = _rand((2, *vol), 17)
    y = _rand((2, *geom.sino_shape), 18)
    for dtype, tol in ((F64, 1e-12), (torch.float32, 1e-5)):
        fc = tk.forward(x.to(dtype), geom, sp)
        fg = tk.forward(x.to(dtype).cuda(), geom, sp)
        assert fg.device.type == "cuda" and fg.dtype == dtype
        assert float((fg.cpu() - fc).abs().max()) <= tol * float(fc.abs().max())
        bc = tk.adjoint(y.to(dtype), geom, vol, sp)
        bg = tk.adjoint(y.to(dtype).cuda(), geom, vol, sp)
        assert bg.device.type == "cuda" and bg.dtype == dtype
        assert float((bg.cpu() - bc).abs().max()) <= tol * float(bc.abs().max())
    xg = x.cuda().requires_grad_(True)
    yg = y.cuda()
    (tk.forward(xg, geom, sp) * yg).sum().backward()
    assert torch.allclose(xg.grad.cpu(), tk.adjoint(y, geom, vol, sp), rtol=0, atol=1e-10)
