"""medvol.kernels.Projector (backend='torch'): adjointness, analytic answers, autograd, errors."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medvol.errors import BackendError, GeometryError, InputError  # noqa: E402
from medvol.geometry import ConeBeam3D, FanBeam2D, ParallelBeam2D, ParallelBeam3D  # noqa: E402
from medvol.kernels import Projector  # noqa: E402

CUDA = torch.cuda.is_available()


def _angles(n, full=np.pi, off=0.0123):
    return np.linspace(0, full, n, endpoint=False) + off


def _geoms():
    """(id, geometry, volume_shape, spacing) covering all four geometries, anisotropic grids."""
    return [
        ("par2d", ParallelBeam2D(_angles(23), n_det=41, det_spacing=0.8, det_offset=0.9),
         (24, 30), (1.1, 0.9)),
        ("fan2d", FanBeam2D(_angles(29, 2 * np.pi), n_det=57, det_spacing=1.1, src_iso=80.0,
                            iso_det=40.0, det_offset=-1.7), (26, 22), (1.0, 1.2)),
        ("par3d", ParallelBeam3D(_angles(11), n_rows=9, n_det=31, det_spacing=1.0,
                                 det_spacing_row=1.2, det_offset=0.4, det_offset_row=-0.3),
         (7, 16, 18), (1.3, 1.0, 1.1)),
        ("cone3d", ConeBeam3D(_angles(13, 2 * np.pi), n_rows=12, n_det=36, det_spacing=1.2,
                              det_spacing_row=1.1, src_iso=70.0, iso_det=35.0, det_offset=0.6,
                              det_offset_row=0.5), (8, 16, 18), (1.0, 1.1, 0.9)),
    ]


def _need_3d(g):
    """The 3D numba kernels must exist (a missing kernel module fails, never skips)."""
    if g.ndim == 3:
        from medvol.kernels import _cpu3d  # noqa: F401


GEOMS = _geoms()
IDS = [g[0] for g in GEOMS]


# ------------------------------------------------------------------------------ adjointness
@pytest.mark.parametrize("case", GEOMS, ids=IDS)
def test_adjointness_float64(case):
    _, g, vs, sp = case
    _need_3d(g)
    A = Projector(g, vs, sp, backend="torch")
    for seed in (0, 1):
        assert A.adjointness_test(torch.float64, seed=seed) < 1e-10  # criterion is 1e-5


@pytest.mark.parametrize("case", GEOMS[:2], ids=IDS[:2])
def test_adjointness_float32(case):
    _, g, vs, sp = case
    A = Projector(g, vs, sp, backend="torch")
    assert A.adjointness_test(torch.float32) < 1e-5


def test_adjointness_mixed_dominance_fan():
    """Wide fan at 45°: rays of one view split between row- and column-stepping."""
    g = FanBeam2D(np.array([np.pi / 4, 0.3, 1.9]), n_det=64, det_spacing=1.5, src_iso=40.0,
                  iso_det=40.0)
    A = Projector(g, (20, 20), backend="torch")
    assert A.adjointness_test() < 1e-10


# ------------------------------------------------------------------------------ known answers
def _disc(n, spacing, radius, supersample=8):
    """Anti-aliased disc of value 1 (area fraction per pixel) on the centred grid."""
    off = (np.arange(supersample) + 0.5) / supersample - 0.5
    c = (np.arange(n) - (n - 1) / 2.0) * spacing
    fine = (c[:, None] + off[None, :] * spacing).reshape(-1)
    inside = (fine[:, None] ** 2 + fine[None, :] ** 2) <= radius ** 2
    return inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))


def test_disc_chord_length():
    """Parallel projection of a disc = 2·sqrt(R² − s²); relative L2 error < 1 %."""
    R, n, px = 20.0, 96, 0.5
    img = _disc(n, px, R)
    g = ParallelBeam2D(np.array([0.0, 0.37, np.pi / 4 + 0.01, 1.3, 2.6]), n_det=120,
                       det_spacing=0.4, det_offset=0.13)
    y = Projector(g, (n, n), (px, px), backend="torch")(img.astype(np.float64))
    s = (np.arange(g.n_det) - (g.n_det - 1) / 2) * g.det_spacing + g.det_offset
    truth = 2 * np.sqrt(np.clip(R ** 2 - s ** 2, 0, None))
    for row in y:
        rel = np.linalg.norm(row - truth) / np.linalg.norm(truth)
        assert rel < 0.01, rel
        assert abs(row.sum() * g.det_spacing - np.pi * R ** 2) / (np.pi * R ** 2) < 5e-3


def test_theta0_is_column_sums_times_sy():
    sy, sx = 0.7, 1.3
    rng = np.random.default_rng(0)
    img = rng.random((11, 9))
    g = ParallelBeam2D(np.array([0.0]), n_det=9, det_spacing=sx)
    y = Projector(g, img.shape, (sy, sx), backend="torch")(img)
    np.testing.assert_allclose(y[0], img.sum(axis=0) * sy, rtol=1e-12)


def _centroid(row, s):
    return float((row * s).sum() / row.sum())


def test_point_parallel_lands_on_s():
    n, px = 64, 0.5
    r0, c0 = 12, 47  # off-centre pixel
    x0, y0 = (c0 - (n - 1) / 2) * px, (r0 - (n - 1) / 2) * px
    img = np.zeros((n, n))
    img[r0, c0] = 1.0
    th = np.array([0.0, 0.5, 1.1, 2.0, 2.9, 4.0])
    g = ParallelBeam2D(th, n_det=301, det_spacing=0.15)
    y = Projector(g, (n, n), (px, px), backend="torch")(img)
    s = (np.arange(g.n_det) - (g.n_det - 1) / 2) * g.det_spacing
    for row, t in zip(y, th):
        assert abs(_centroid(row, s) - (x0 * np.cos(t) + y0 * np.sin(t))) < 0.02
        # mass conservation: Σ p ds = pixel area
        assert abs(row.sum() * g.det_spacing - px * px) < 0.03 * px * px


def test_point_fan_lands_on_magnified_position():
    n, px = 64, 0.5
    r0, c0 = 50, 9
    x0, y0 = (c0 - (n - 1) / 2) * px, (r0 - (n - 1) / 2) * px
    img = np.zeros((n, n))
    img[r0, c0] = 1.0
    sid, idd = 120.0, 60.0
    th = np.array([0.0, 0.7, 1.9, 3.3, 5.0])
    g = FanBeam2D(th, n_det=401, det_spacing=0.2, src_iso=sid, iso_det=idd)
    y = Projector(g, (n, n), (px, px), backend="torch")(img)
    s = (np.arange(g.n_det) - (g.n_det - 1) / 2) * g.det_spacing
    for row, t in zip(y, th):
        pu = x0 * np.cos(t) + y0 * np.sin(t)
        pd = -x0 * np.sin(t) + y0 * np.cos(t)
        expect = (sid + idd) * pu / (sid + pd)
        assert abs(_centroid(row, s) - expect) < 0.05, (t, _centroid(row, s), expect)


@pytest.mark.parametrize("kind", ["par", "fan"])
def test_det_offset_shifts_by_whole_bins(kind):
    rng = np.random.default_rng(3)
    img = rng.random((20, 20))
    th = _angles(9, 2 * np.pi)
    shift = 3
    mk = (lambda off: ParallelBeam2D(th, 40, 0.9, det_offset=off)) if kind == "par" else \
        (lambda off: FanBeam2D(th, 48, 1.2, 60.0, 30.0, det_offset=off))
    g0 = mk(0.0)
    g1 = mk(shift * g0.det_spacing)
    y0 = Projector(g0, img.shape, backend="torch")(img)
    y1 = Projector(g1, img.shape, backend="torch")(img)
    np.testing.assert_allclose(y1[:, :-shift], y0[:, shift:], rtol=1e-9, atol=1e-12)


def test_spacing_scales_line_integrals():
    """Doubling every length (pixel, detector, distances) doubles the line integrals."""
    rng = np.random.default_rng(5)
    img = rng.random((16, 16))
    th = _angles(12, 2 * np.pi)
    y1 = Projector(FanBeam2D(th, 30, 1.0, 50.0, 25.0), img.shape, (1.0, 1.0), backend="torch")(img)
    y2 = Projector(FanBeam2D(th, 30, 2.0, 100.0, 50.0), img.shape, (2.0, 2.0),
                   backend="torch")(img)
    np.testing.assert_allclose(y2, 2 * y1, rtol=1e-10)


# ------------------------------------------------------------------------------ agreement
@pytest.mark.parametrize("case", GEOMS, ids=IDS)
def test_numba_matches_torch_kernels(case):
    from medvol.kernels import _torch_kernels as tk

    _, g, vs, sp = case
    _need_3d(g)
    A = Projector(g, vs, sp, backend="torch")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((2, *vs), generator=gen, dtype=torch.float64)
    y = torch.rand((2, *g.sino_shape), generator=gen, dtype=torch.float64)
    ref_f = tk.forward(x, g, sp)
    ref_b = tk.adjoint(y, g, vs, sp)
    assert float((A(x) - ref_f).norm() / ref_f.norm()) < 1e-5
    assert float((A.T(y) - ref_b).norm() / ref_b.norm()) < 1e-5


# ------------------------------------------------------------------------------ autograd
@pytest.mark.parametrize("case", [GEOMS[0], GEOMS[1]], ids=IDS[:2])
def test_gradcheck_through_A_and_AT(case):
    _, g, _, sp = case
    g = replace(g[:4], n_det=9)
    vs = (5, 6)
    A = Projector(g, vs, sp, backend="torch")
    x = torch.rand((1, *vs), dtype=torch.float64, requires_grad=True)
    y = torch.rand((1, *g.sino_shape), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(A, (x,), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(A.T, (y,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", GEOMS, ids=IDS)
def test_gradient_of_data_term(case):
    _, g, vs, sp = case
    _need_3d(g)
    A = Projector(g, vs, sp, backend="torch")
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(vs, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.rand(g.sino_shape, generator=gen, dtype=torch.float64)
    loss = ((A(x) - y) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, x)
    with torch.no_grad():
        expect = 2 * A.T(A(x) - y)
    torch.testing.assert_close(grad, expect, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------ batching, types
def test_batching_matches_loop():
    _, g, vs, sp = GEOMS[1]
    A = Projector(g, vs, sp, backend="torch")
    x = torch.rand((2, 3, *vs), dtype=torch.float64)
    y = A(x)
    assert y.shape == (2, 3, *g.sino_shape)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(y[i, j], A(x[i, j]), rtol=1e-12, atol=1e-12)
    xb = A.T(y)
    assert xb.shape == x.shape
    torch.testing.assert_close(xb[1, 2], A.T(y[1, 2]), rtol=1e-12, atol=1e-12)


def test_numpy_in_numpy_out_and_dtypes():
    _, g, vs, sp = GEOMS[0]
    A = Projector(g, vs, sp, backend="torch")
    x = np.random.default_rng(0).random(vs).astype(np.float32)
    y = A(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == g.sino_shape
    y64 = A(x.astype(np.float64))
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y, y64, rtol=1e-4, atol=1e-4 * np.abs(y64).max())
    t = A(torch.from_numpy(x))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32


def test_transpose_object_and_properties():
    _, g, vs, sp = GEOMS[0]
    A = Projector(g, vs, sp, backend="torch")
    assert A.T.T is A
    assert A.domain_shape == vs and A.range_shape == g.sino_shape
    assert A.T.domain_shape == g.sino_shape and A.T.range_shape == vs
    assert A.geometry is g and A.backend == "torch" and "torch" in A.backend_name
    assert "ParallelBeam2D" in repr(A)


def test_norm_matches_svd():
    g = ParallelBeam2D(_angles(10), n_det=14, det_spacing=1.0)
    vs = (8, 9)
    A = Projector(g, vs, backend="torch")
    M = np.stack([A(e.reshape(vs)).ravel() for e in np.eye(72)], axis=1)  # dense matrix
    smax = np.linalg.svd(M, compute_uv=False)[0]
    # a second independent value: plain power iteration on the dense normal matrix
    v = np.random.default_rng(0).standard_normal(M.shape[1])
    for _ in range(500):
        v = M.T @ (M @ v)
        v /= np.linalg.norm(v)
    power = float(np.linalg.norm(M @ v))
    assert abs(power - smax) / smax < 1e-6
    n1 = A.norm(n_iter=200)
    assert abs(n1 - smax) / smax < 1e-3
    n2 = A.norm(n_iter=200)  # a repeated (possibly cached) call is still the true norm
    assert abs(n2 - power) / power < 1e-3


def test_auto_backend_on_cpu_is_torch():
    if CUDA:
        pytest.skip("CUDA present: auto may choose ASTRA")
    _, g, vs, sp = GEOMS[0]
    assert Projector(g, vs, sp).backend == "torch"


# ------------------------------------------------------------------------------ errors
def test_cuda_request_without_gpu_is_backend_error():
    if CUDA:
        pytest.skip("a CUDA device is present")
    _, g, vs, sp = GEOMS[0]
    with pytest.raises(BackendError, match="CUDA"):
        Projector(g, vs, sp, backend="torch", device="cuda")


def test_unknown_backend_and_device():
    _, g, vs, sp = GEOMS[0]
    with pytest.raises(BackendError, match="unknown projector backend"):
        Projector(g, vs, sp, backend="magic")
    with pytest.raises(BackendError):
        Projector(g, vs, sp, backend="torch", device="tpu")


def test_astra_3d_without_gpu_is_backend_error_not_crash():
    if CUDA:
        pytest.skip("a CUDA device is present")
    _, g, vs, sp = GEOMS[3]
    # raises before anything of ASTRA 3D is touched (it would abort the process without a GPU)
    with pytest.raises(BackendError, match="ASTRA 3D needs a CUDA GPU"):
        Projector(g, vs, sp, backend="astra")


def test_shape_errors():
    _, g, vs, sp = GEOMS[0]
    A = Projector(g, vs, sp, backend="torch")
    with pytest.raises(GeometryError, match=r"\(\.\.\., 24, 30\).*\(24, 31\)"):
        A(torch.zeros(24, 31))
    with pytest.raises(GeometryError, match="sinogram"):
        A.T(torch.zeros(3, 41))
    with pytest.raises(GeometryError):
        Projector(g, (24, 30, 2), backend="torch")
    with pytest.raises(GeometryError):
        Projector(g, vs, (1.0, -1.0), backend="torch")
    with pytest.raises(GeometryError):
        Projector("not a geometry", vs, backend="torch")


def test_nan_input_is_input_error():
    _, g, vs, sp = GEOMS[0]
    A = Projector(g, vs, sp, backend="torch")
    x = torch.zeros(vs)
    x[3, 4] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        A(x)
    Projector(g, vs, sp, backend="torch", check_finite=False)(x)  # allowed when disabled


# ------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("case", GEOMS, ids=IDS)
def test_cuda_matches_cpu(case):
    _, g, vs, sp = case
    _need_3d(g)
    A = Projector(g, vs, sp, backend="torch")
    x = torch.rand((2, *vs), dtype=torch.float64)
    y_cpu = A(x)
    y_gpu = A(x.cuda())
    assert y_gpu.is_cuda
    assert float((y_gpu.cpu() - y_cpu).norm() / y_cpu.norm()) < 1e-6
    Ag = Projector(g, vs, sp, backend="torch", device="cuda")
    assert Ag.adjointness_test() < 1e-10


@pytest.mark.parametrize("geom", [
    ParallelBeam2D(_angles(17), n_det=37, det_spacing=0.7, det_offset=-1.1),
    FanBeam2D(np.array([0.0, np.pi / 4, 1.0, 2.5, 4.0]), n_det=61, det_spacing=1.3,
              src_iso=30.0, iso_det=30.0, det_offset=0.8),   # wide fan: mixed dominance
    FanBeam2D(_angles(7, 2 * np.pi), n_det=25, det_spacing=1.0, src_iso=9.0, iso_det=5.0),
], ids=["par", "wide-fan", "source-inside-image"])
def test_compiled_kernels_match_plain_numpy_version(geom):
    """The branch-free, range-bisected numba loops equal a direct numpy transcription."""
    from medvol.kernels import _cpu2d

    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 18, 21))
    sp = (0.9, 1.1)
    ref = _cpu2d._reference_matrix_apply(x, geom, sp)
    np.testing.assert_allclose(_cpu2d.forward(x, geom, sp), ref, rtol=1e-12, atol=1e-12)
    y = rng.standard_normal((2, *geom.sino_shape))
    refb = _cpu2d._reference_matrix_apply(None, geom, sp, True, y, (18, 21))
    np.testing.assert_allclose(_cpu2d.adjoint(y, geom, (18, 21), sp), refb, rtol=1e-12,
                               atol=1e-12)
