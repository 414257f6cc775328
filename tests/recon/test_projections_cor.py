"""The rotation-axis search after the projections split: bounded scalar minimisation gives the
golden-section results, the reader lives in medvol.io.projections, one FBP (medvol.recon.fbp)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from medvol.recon import projections as P

ROOT = Path(__file__).resolve().parents[2]
SYNCHROTRON = ROOT / "sample_data" / "projections" / "synchrotron_parallel"


def _golden_reference(f, lo, hi, tol):
    """The golden-section search medvol used before scipy's bounded minimiser (test oracle)."""
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2


@pytest.mark.parametrize("x0", [-0.73, 0.0, 0.412])
def test_bounded_minimiser_finds_known_minimum(x0):
    f = lambda x: (x - x0) ** 2 + 0.3 * abs(x - x0) ** 3  # noqa: E731
    got = P._minimise_bounded(f, -1.0, 1.0, tol=2e-3)
    assert got == pytest.approx(x0, abs=2e-3)
    assert got == pytest.approx(_golden_reference(f, -1.0, 1.0, 2e-3), abs=3e-3)


def test_opposed_axis_matches_golden_section_on_real_projections(monkeypatch):
    if not SYNCHROTRON.is_dir():
        pytest.skip("bundled synchrotron sample data missing")
    li = P.line_integrals(P.load_projections(SYNCHROTRON))
    mid = li[:, li.shape[1] // 2]                    # the middle row, as medvol recon uses
    a = P.load_projections(SYNCHROTRON).angles
    new = P.estimate_center_of_rotation(mid, a, method="opposed")
    # the search as it was: golden section to 2e-3 px
    monkeypatch.setattr(P, "_minimise_bounded",
                        lambda f, lo, hi, tol: _golden_reference(f, lo, hi, 2e-3))
    old = P.estimate_center_of_rotation(mid, a, method="opposed")
    # and the true minimiser of the same cost, by a dense grid around the estimate
    cost_at = {}

    def spy(f, lo, hi, tol):
        xs = np.linspace(lo, hi, 4001)
        cost_at["best"] = float(xs[int(np.argmin([f(x) for x in xs]))])
        return cost_at["best"]

    monkeypatch.setattr(P, "_minimise_bounded", spy)
    P.estimate_center_of_rotation(mid, a, method="opposed")
    assert new.offset_px == pytest.approx(cost_at["best"], abs=5e-4)
    assert new.offset_px == pytest.approx(old.offset_px, abs=0.01)
    assert new.quality == pytest.approx(old.quality, abs=0.01)
    assert 4.0 < new.offset_px < 9.0


def test_reader_moved_to_io_and_reexported():
    import medvol.io as mio
    import medvol.io.projections as iop

    assert P.load_projections is iop.load_projections is mio.load_projections
    assert P.Projections is iop.Projections
    assert P.read_angles("linspace:0:180:5", unit="deg")[-1] == pytest.approx(math.pi)


def test_one_fbp_filtered_once_backprojected_per_axis():
    """The axis search's filter-once/back-project path equals medvol.recon.fbp per axis."""
    torch = pytest.importorskip("torch")
    from medvol.geometry import ParallelBeam2D
    from medvol.kernels import Projector
    from medvol.phantoms import ellipse_sinogram, shepp_logan_ellipses
    from medvol.recon.fbp import backproject_parallel, fbp, filter_sinogram

    ang = np.linspace(0, np.pi, 60, endpoint=False)
    g = ParallelBeam2D(angles=ang, n_det=64, det_offset=-1.5)
    sino = np.asarray(ellipse_sinogram(shepp_logan_ellipses(fov=40.0), g), dtype=np.float64)
    ref = fbp(Projector(g, (48, 48), (1.0, 1.0), backend="torch"), sino, filter="hann")
    q = filter_sinogram(torch.from_numpy(sino), 1.0, "hann")
    got = backproject_parallel(q, g, (48, 48), (1.0, 1.0)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-9 * np.abs(ref).max())
    np.testing.assert_allclose(P.fbp_parallel_numpy(sino, ang, det_offset=-1.5,
                                                    image_shape=(48, 48)), ref, atol=1e-9)
