"""Raw projection input, flat/dark correction and centre-of-rotation estimation."""
from __future__ import annotations

import numpy as np
import pytest

from medvol.errors import InputError
from medvol.recon.projections import (
    Projections, estimate_center_of_rotation, fbp_parallel_numpy, flat_dark_correct,
    line_integrals, load_projections, load_synchrotron_example, minus_log, read_angles, sharpness,
)

# (density, semi-axis a, semi-axis b, x0, y0, rotation) in mm — an asymmetric test object
ELLIPSES = [(1.0, 40, 30, 3, -2, 0.3), (-0.4, 12, 8, -12, 5, 1.0), (0.6, 6, 6, 15, 10, 0.0),
            (0.5, 4, 9, 5, -18, -0.5)]


def analytic_sinogram(angles, n_det, ds=1.0, axis_px=0.0, scale=1.0):
    """Exact parallel-beam sinogram of ELLIPSES (all lengths × ``scale``) with the rotation axis at
    ``axis_px`` pixels right of the detector centre (the centred sinogram shifted by ``axis_px``)."""
    s = (np.arange(n_det) - (n_det - 1) / 2) * ds - axis_px * ds
    out = np.zeros((len(angles), n_det))
    for rho, a, b, x0, y0, al in ELLIPSES:
        a, b, x0, y0 = a * scale, b * scale, x0 * scale, y0 * scale
        th = np.asarray(angles)[:, None]
        r2 = a * a * np.cos(th - al) ** 2 + b * b * np.sin(th - al) ** 2
        s0 = x0 * np.cos(th) + y0 * np.sin(th)
        d = r2 - (s[None] - s0) ** 2
        out += np.where(d > 0, 2 * rho * a * b / r2 * np.sqrt(np.maximum(d, 0)), 0)
    return out


# ------------------------------------------------------------------------------ loading
def _write_tiffs(folder, frames, names):
    import tifffile
    folder.mkdir(parents=True, exist_ok=True)
    for f, n in zip(frames, names):
        tifffile.imwrite(folder / n, f)


def test_tiff_folder_natural_sort_and_angles(tmp_path):
    frames = [np.full((4, 5), i, np.uint16) for i in range(12)]
    names = [f"p{i}.tif" for i in range(12)]  # lexical sort would put p10, p11 before p2
    _write_tiffs(tmp_path / "raw", frames, names)
    (tmp_path / "ang.txt").write_text("# angles\n" + "\n".join(str(3.0 * i) for i in range(12)))
    p = load_projections(tmp_path / "raw", angles=tmp_path / "ang.txt")
    assert p.data.shape == (12, 4, 5) and p.data.dtype == np.float32
    np.testing.assert_array_equal(p.data[:, 0, 0], np.arange(12))
    np.testing.assert_allclose(np.degrees(p.angles), 3.0 * np.arange(12))


def test_stack_formats_npy_tiff_nrrd(tmp_path):
    import nrrd
    import tifffile
    data = np.random.default_rng(0).random((6, 3, 7)).astype(np.float32)
    np.save(tmp_path / "p.npy", data)
    tifffile.imwrite(tmp_path / "p.tiff", data)
    nrrd.write(str(tmp_path / "p.nrrd"), data, index_order="C")
    for name in ("p.npy", "p.tiff", "p.nrrd"):
        p = load_projections(tmp_path / name, angles="linspace:0:150:6")
        np.testing.assert_array_equal(p.data, data)
        np.testing.assert_allclose(p.angles, np.radians(np.linspace(0, 150, 6)))


def test_read_angles_variants(tmp_path):
    np.save(tmp_path / "a.npy", np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(read_angles(tmp_path / "a.npy", unit="rad"), [0, 0.5, 1.0])
    np.testing.assert_allclose(read_angles({"start": 0, "stop": 180, "num": 4, "endpoint": False}),
                               np.radians([0, 45, 90, 135]))
    np.testing.assert_allclose(read_angles(np.arange(10), rows=slice(2, 5)), np.radians([2, 3, 4]))
    with pytest.raises(InputError, match="linspace"):
        read_angles("linspace:0:180")


def test_angle_count_mismatch_is_input_error(tmp_path):
    data = np.ones((5, 2, 8), np.float32)
    with pytest.raises(InputError, match="4 angles but 5 projections"):
        load_projections(data, angles=np.arange(4.0))
    # longer list without a constant-run structure cannot be split automatically
    with pytest.raises(InputError, match="angle_rows"):
        load_projections(data, angles=np.arange(9.0))
    # ... but the dark/flat padding pattern is found
    padded = np.r_[[0.0] * 3, np.arange(5.0) * 2, [8.0] * 3]
    p = load_projections(data, angles=padded)
    np.testing.assert_allclose(np.degrees(p.angles), np.arange(5.0) * 2)
    assert p.source["angle_rows"] == [3, 8]


def test_nan_in_data_is_input_error(tmp_path):
    data = np.ones((3, 2, 8), np.float32)
    data[1, 0, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        load_projections(data, angles=np.arange(3.0))
    np.save(tmp_path / "bad.npy", data)
    with pytest.raises(InputError, match="bad.npy.*NaN"):
        load_projections(tmp_path / "bad.npy", angles=np.arange(3.0))


def test_flat_size_mismatch_and_missing_file(tmp_path):
    data = np.ones((3, 2, 8), np.float32)
    with pytest.raises(InputError, match="flat field frames are"):
        load_projections(data, angles=np.arange(3.0), flats=np.ones((2, 9)))
    with pytest.raises(InputError, match="not found"):
        load_projections(tmp_path / "nope.tif", angles=np.arange(3.0))


# ------------------------------------------------------------------------------ flat / dark
def test_flat_dark_correction_recovers_known_transmission():
    rng = np.random.default_rng(1)
    T = rng.uniform(0.05, 1.0, size=(4, 6, 9))
    dark = rng.uniform(90, 110, size=(6, 9))
    gain = rng.uniform(2000, 4000, size=(6, 9))
    darks = np.stack([dark + 1, dark - 1])          # averaged → dark
    flats = np.stack([dark + gain * 1.01, dark + gain * 0.99])
    raw = dark + gain * T
    raw[0, 0, 0] = dark[0, 0] - 5                   # below dark → clipped
    p = load_projections(raw, flats=flats, darks=darks, angles=np.arange(4.0))
    res = flat_dark_correct(p, eps=1e-4)
    assert res.n_clipped == 1 and res.n_dead == 0
    assert res.transmission[0, 0, 0] == pytest.approx(1e-4)
    t = res.transmission.copy()
    t[0, 0, 0] = T[0, 0, 0]
    np.testing.assert_allclose(t, T, rtol=2e-5, atol=1e-6)
    li = line_integrals(p, eps=1e-4)
    np.testing.assert_allclose(li[1:], -np.log(T[1:]), rtol=1e-4, atol=1e-5)
    assert minus_log(np.array([0.0]), eps=1e-4)[0] == pytest.approx(-np.log(1e-4), rel=1e-6)


def test_flat_needed_and_dead_flat_pixel():
    data = np.full((2, 2, 3), 50.0)
    with pytest.raises(InputError, match="flat"):
        flat_dark_correct(load_projections(data, angles=[0.0, 1.0]))
    flat = np.full((2, 3), 100.0)
    flat[1, 2] = 0.0
    res = flat_dark_correct(load_projections(data, flats=flat, angles=[0.0, 1.0]))
    assert res.n_dead == 1
    assert np.all(res.transmission[:, 1, 2] == 1.0)
    np.testing.assert_allclose(res.transmission[:, 0, 0], 0.5)


# ------------------------------------------------------------------------------ FBP + CoR
def test_builtin_fbp_reproduces_analytic_densities():
    ang = np.linspace(0, np.pi, 180, endpoint=False)
    img = fbp_parallel_numpy(analytic_sinogram(ang, 128), ang, filter="ramp")
    # centre pixel of the image = inside ellipse 1 only (density 1.0); (x=15, y=10) adds 0.6
    assert img[64, 64] == pytest.approx(1.0, abs=0.03)   # x=0.5, y=0.5 mm
    assert img[64 + 10, 64 + 15] == pytest.approx(1.6, abs=0.05)
    assert abs(img[64, 64 + 55]) < 0.02                       # outside the object, inside the FOV


def test_builtin_fbp_matches_medvol_recon_fbp():
    pytest.importorskip("torch")
    import importlib

    fbp_mod = importlib.import_module("medvol.recon.fbp")
    from medvol.geometry import ParallelBeam2D
    from medvol.kernels import Projector
    ang = np.linspace(0, np.pi, 90, endpoint=False)
    sino = analytic_sinogram(ang, 96, axis_px=2.5)
    g = ParallelBeam2D(angles=ang, n_det=96, det_offset=-2.5)
    ref = np.asarray(fbp_mod.fbp(Projector(g, (96, 96), (1.0, 1.0), backend="torch"), sino,
                                 filter="ram-lak"))
    ours = fbp_parallel_numpy(sino, ang, det_offset=-2.5, filter="ramp")
    yy, xx = np.mgrid[:96, :96]
    inside = np.hypot(xx - 47.5, yy - 47.5) < 40      # the circle every view sees
    assert np.abs(ours - ref)[inside].max() < 1e-6 * np.abs(ref).max()


@pytest.mark.parametrize("method", ["opposed", "sharpness"])
@pytest.mark.parametrize("shift", [3.4, -7.73])
def test_cor_recovers_known_shift(method, shift):
    ang = np.linspace(0, np.pi, 181)          # 0…180° inclusive: one exact opposed pair
    sino = analytic_sinogram(ang, 128, ds=0.5, axis_px=shift, scale=0.5)  # 0.5 mm pixels
    est = estimate_center_of_rotation(sino, ang, method=method, det_spacing=0.5)
    assert est.method == method
    assert est.offset_px == pytest.approx(shift, abs=0.25)
    assert est.offset_mm == pytest.approx(shift * 0.5, abs=0.125)
    assert est.det_offset == pytest.approx(-est.offset_mm)
    assert est.axis_index == pytest.approx(63.5 + est.offset_px)
    assert est.quality > 0.2


def test_cor_opposed_interpolated_pairs_and_auto():
    # 0…190° in 1.3° steps: no view has an exact partner at +180° → interpolated pairs
    ang = np.arange(0, np.radians(190), np.radians(1.3))
    sino = analytic_sinogram(ang, 128, axis_px=3.4)
    est = estimate_center_of_rotation(sino, ang)  # auto → opposed
    assert est.method == "opposed"
    assert est.details["interpolated_pairs"] > 0
    assert est.offset_px == pytest.approx(3.4, abs=0.1)
    # less than 180°: auto falls back to the sharpness search
    short = ang[:100]
    est2 = estimate_center_of_rotation(sino[:100], short, search_px=12)
    assert est2.method == "sharpness"
    with pytest.raises(InputError, match="180"):
        estimate_center_of_rotation(sino[:100], short, method="opposed")


def test_cor_shifted_geometry_reconstruction_is_sharper():
    ang = np.linspace(0, np.pi, 181)
    sino = analytic_sinogram(ang, 128, axis_px=5.0)
    est = estimate_center_of_rotation(sino, ang, method="opposed")
    centred = fbp_parallel_numpy(sino, ang)
    fixed = fbp_parallel_numpy(sino, ang, det_offset=est.det_offset)
    truth = fbp_parallel_numpy(analytic_sinogram(ang, 128), ang)
    assert np.abs(fixed - truth).mean() < 0.1 * np.abs(centred - truth).mean()
    assert sharpness(fixed) > sharpness(centred) + 0.2


def test_cor_input_errors():
    ang = np.linspace(0, np.pi, 10)
    with pytest.raises(InputError, match="10 angles but the sinogram has 9 views"):
        estimate_center_of_rotation(np.zeros((9, 64)), ang)
    bad = np.zeros((10, 64))
    bad[2, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        estimate_center_of_rotation(bad, ang)
    with pytest.raises(InputError, match="unknown CoR method"):
        estimate_center_of_rotation(np.zeros((10, 64)), ang, method="magic")


def test_sharpness_methods():
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64))
    img[16:48, 16:48] = 1.0
    from scipy.ndimage import gaussian_filter
    blurred = gaussian_filter(img, 3)
    assert sharpness(img, method="tenengrad") > sharpness(blurred, method="tenengrad")
    assert sharpness(img) > sharpness(blurred)
    # entropy score is invariant to a linear intensity change
    assert sharpness(3 * blurred + 7) == pytest.approx(sharpness(blurred), abs=1e-9)
    with pytest.raises(InputError):
        sharpness(rng.random(5))


# ------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def synchrotron_root(sample_data):
    root = sample_data / "projections" / "synchrotron_parallel"    # bundled
    assert (root / "raw").is_dir(), f"bundled synchrotron example data missing under {root}"
    return root


@pytest.fixture(scope="module")
def synchrotron(synchrotron_root):
    return load_synchrotron_example(synchrotron_root)


def test_synchrotron_layout_and_angles(synchrotron, synchrotron_root):
    p = synchrotron
    assert isinstance(p, Projections)
    assert p.data.shape == (91, 135, 160)
    assert p.flats.shape == (1, 135, 160) and p.darks.shape == (1, 135, 160)
    assert np.degrees(p.angles[0]) == pytest.approx(-88.2)
    assert np.degrees(p.angles[-1]) == pytest.approx(91.8, abs=1e-3)
    np.testing.assert_allclose(np.degrees(np.diff(p.angles)), 2.0, atol=5e-4)
    # the auto-detected split of angles.txt (111 rows) agrees with the documented rows 10..100
    q = load_projections(synchrotron_root)
    assert q.source["angle_rows"] == [10, 101]
    np.testing.assert_array_equal(q.angles, p.angles)
    res = flat_dark_correct(p)
    assert res.n_dead == 1 and res.n_clipped == 0


def test_synchrotron_cor_methods_agree(synchrotron):
    li = line_integrals(synchrotron)
    a = synchrotron.angles
    op = estimate_center_of_rotation(li, a, method="opposed")
    sh = estimate_center_of_rotation(li, a, method="sharpness")
    print(f"synchrotron CoR: opposed {op.offset_px:+.3f} px (q={op.quality:.3f}), "
          f"sharpness {sh.offset_px:+.3f} px (q={sh.quality:.3f})")
    assert abs(op.offset_px - sh.offset_px) < 1.0
    assert 4.0 < op.offset_px < 9.0          # clearly off-centre, to the right
    # the estimated axis gives a sharper middle-row reconstruction than the detector centre
    row = li[:, 67]
    centred = fbp_parallel_numpy(row, a)
    fixed = fbp_parallel_numpy(row, a, det_offset=op.det_offset)
    yy, xx = np.mgrid[:160, :160]
    m = np.hypot(xx - 79.5, yy - 79.5) < 70
    assert sharpness(fixed, mask=m) > sharpness(centred, mask=m) + 0.3


@pytest.mark.slow
def test_synchrotron_sharpness_with_medvol_fbp(synchrotron):
    """The sharpness search gives the same axis with the pipeline's own FBP (medvol.recon.fbp)."""
    import medvol.recon.fbp  # noqa: F401  (must import: an ImportError fails, never skips)
    li = line_integrals(synchrotron)[:, 60:75]
    a = synchrotron.angles
    ours = estimate_center_of_rotation(li, a, method="sharpness", search_px=10)
    theirs = estimate_center_of_rotation(li, a, method="sharpness", search_px=10, fbp="medvol")
    assert theirs.offset_px == pytest.approx(ours.offset_px, abs=0.1)
