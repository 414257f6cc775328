"""`medvol simulate` / `medvol recon` end to end: outputs, geometry, metrics, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import medvol as mv
from medvol.cli import main
from medvol.errors import BackendError, InputError, OutputExistsError

ROOT = Path(__file__).resolve().parents[2]
SYNCHROTRON = ROOT / "sample_data" / "projections" / "synchrotron_parallel"


def _ct_volume(n: int = 96, nz: int = 2) -> mv.Volume:
    """Shepp–Logan mapped to plausible HU: air −1000, brain 40, skull ≈ 1640, oblique geometry."""
    from medvol.phantoms import shepp_logan_2d

    p = shepp_logan_2d(n)
    hu = np.where(p > 0.01, (p - 0.2) * 2000.0 + 40.0, -1000.0).astype(np.float32)
    a = np.stack([hu] * nz)
    c, s = np.cos(0.3), np.sin(0.3)
    direction = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return mv.Volume(a, spacing=(1.5, 1.5, 3.0), origin=(-70.0, -80.0, 12.0), direction=direction,
                     meta={"modality": "CT"})


def _quality(img, ref, window=None, gaussian=False) -> dict:
    """PSNR / SSIM (scikit-image) of ``img`` against ``ref``, data range = reference range, or
    both clipped to ``window = (low, high)`` with data range = window width. ``gaussian``: the
    Gaussian-window SSIM of Wang et al. (σ 1.5, population covariance) that medvol reports."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    img, ref = np.asarray(img, np.float64), np.asarray(ref, np.float64)
    dr = float(ref.max() - ref.min())
    if window is not None:
        img, ref = np.clip(img, *window), np.clip(ref, *window)
        dr = float(window[1] - window[0])
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False) if gaussian else {}
    ssim = np.mean([structural_similarity(r, i, data_range=dr, **kw) for r, i in zip(ref, img)])
    return {"psnr_db": float(peak_signal_noise_ratio(ref, img, data_range=dr)), "ssim": float(ssim)}


@pytest.fixture()
def ct_file(tmp_path):
    path = tmp_path / "ct.nrrd"
    mv.io.write(_ct_volume(), path)
    return path


@pytest.mark.parametrize("method", ["tv", "cgls"])
def test_recon_volume_beats_fbp_and_keeps_geometry(ct_file, tmp_path, method):
    import SimpleITK as sitk

    out = tmp_path / f"rec_{method}"
    code = main(["recon", str(ct_file), "-o", str(out), "--views", "8", "--full-views", "180",
                 "--method", method, "--no-progress"])
    assert code == 0
    for name in ("recon.nrrd", "fbp.nrrd", "manifest.json", "report.html", "comparison.png",
                 "recon_orthoslices.png"):
        assert (out / name).is_file(), name
    m = json.loads((out / "manifest.json").read_text())
    # metrics recomputed from the written files against the known reference (scikit-image)
    ref_a = sitk.GetArrayFromImage(sitk.ReadImage(str(ct_file))).astype(np.float64)
    rec_q = _quality(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "recon.nrrd"))), ref_a)
    fbp_q = _quality(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "fbp.nrrd"))), ref_a)
    assert rec_q["psnr_db"] > fbp_q["psnr_db"] + 1.0
    assert rec_q["ssim"] > fbp_q["ssim"]
    # and the manifest reports what the files hold
    rec, fbp = m["metrics"]["metrics"]["recon"], m["metrics"]["metrics"]["fbp"]
    assert rec["psnr_db"] == pytest.approx(rec_q["psnr_db"], abs=0.5)
    assert fbp["psnr_db"] == pytest.approx(fbp_q["psnr_db"], abs=0.5)
    # windowed metrics: a 144 mm field of view CT counts as a head → brain window W80/L40
    rec_m = m["record"]
    assert rec_m["metric_window"]["name"] == "brain" and rec_m["metric_window"]["range"] == [0, 80]
    rec_w = _quality(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "recon.nrrd"))), ref_a,
                     window=(0.0, 80.0), gaussian=True)
    assert rec["ssim_window"] == pytest.approx(rec_w["ssim"], abs=2e-3)
    assert rec["psnr_db_window"] == pytest.approx(rec_w["psnr_db"], abs=0.05)
    # the parameters actually used, never null
    params = m["parameters"]
    assert params["n_iter"] == {"tv": 300, "cgls": 30}[method]
    assert ("lam" in params) == (method == "tv") and params["filter"] == "hann"
    if method == "tv":
        assert params["lam"] == 0.02 and params["tv_lambda"] > 0
    assert any(i["path"].endswith("ct.nrrd") and len(i["sha256"]) == 64 for i in m["inputs"])
    # the reconstruction sits on the reference grid, read by an independent library
    ref, got = sitk.ReadImage(str(ct_file)), sitk.ReadImage(str(out / "recon.nrrd"))
    assert got.GetSize() == ref.GetSize()
    np.testing.assert_allclose(got.GetOrigin(), ref.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(got.GetDirection(), ref.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(got.GetSpacing(), ref.GetSpacing(), atol=1e-6)


def test_simulate_then_recon_roundtrip(ct_file, tmp_path):
    sino = tmp_path / "sino"
    assert main(["simulate", str(ct_file), "-o", str(sino), "--geometry", "parallel",
                 "--views", "2", "--full-views", "180"]) == 0
    y = np.load(sino / "sinogram.npy")
    info = json.loads((sino / "sinogram.json").read_text())
    assert y.shape == (2, 90, info["geometry"]["n_det"])
    out = tmp_path / "rec"
    assert main(["recon", str(sino), "-o", str(out), "--method", "fbp"]) == 0
    got = mv.io.read(out / "recon.nrrd")
    ref = mv.io.read(ct_file)
    assert got.same_grid(ref)
    brain = ref.numpy() == 40.0
    # FBP of 90 noiseless parallel views recovers brain tissue HU to within a few HU on average
    assert abs(float(np.median(got.numpy()[brain])) - 40.0) < 15.0


def test_synchrotron_auto_cor_is_sharper_than_centred_axis(tmp_path):
    assert SYNCHROTRON.is_dir(), f"bundled synchrotron sample data missing: {SYNCHROTRON}"
    out = tmp_path / "sync"
    assert main(["recon", str(SYNCHROTRON), "-o", str(out), "--method", "fbp",
                 "--rows", "60:70"]) == 0
    m = json.loads((out / "manifest.json").read_text())["record"]
    # independent check of the axis: the first and last projections are an exact 180° pair, so
    # the axis is where the mirrored last projection best matches the first one
    from medvol.recon.projections import line_integrals, load_projections

    li = line_integrals(load_projections(SYNCHROTRON))[:, 60:70].mean(axis=1)
    first, last = li[0], li[-1][::-1]
    n = first.size
    shifts = np.arange(-20, 20.01, 0.25)
    xs = np.arange(n, dtype=float)
    cost = [np.mean((first - np.interp(xs, xs + s, last)) ** 2) for s in shifts]
    axis_independent = (n - 1) / 2 + shifts[int(np.argmin(cost))] / 2
    assert abs(m["cor"]["axis_index"] - axis_independent) < 0.5
    assert abs(m["cor"]["offset_px"]) > 3  # really off-centre: the crescent case
    assert m["sharpness"]["estimated_axis"] > m["sharpness"]["centred_axis"] + 0.2
    assert (out / "cor_comparison.png").is_file()


def _stderr_lines(capsys):
    return [l for l in capsys.readouterr().err.splitlines() if l.startswith("medvol: error")]


def test_bad_inputs_one_line_and_no_output(ct_file, tmp_path, capsys):
    out = tmp_path / "never"
    # unknown geometry
    assert main(["recon", str(ct_file), "-o", str(out), "--geometry", "helical"]) == InputError.exit_code
    # unknown method
    assert main(["recon", str(ct_file), "-o", str(out), "--method", "magic"]) == InputError.exit_code
    # GPU-only request on a CPU machine
    import torch

    if not torch.cuda.is_available():
        assert main(["recon", str(ct_file), "-o", str(out), "--device", "cuda",
                     "--method", "fbp"]) == BackendError.exit_code
    # NaN in the data
    bad = tmp_path / "nan.nrrd"
    v = _ct_volume()
    a = v.numpy().copy(); a[0, 10, 10] = np.nan
    mv.io.write(v.with_array(a), bad)
    assert main(["recon", str(bad), "-o", str(out), "--method", "fbp"]) == InputError.exit_code
    # angle count != projection count
    import tifffile

    proj = tmp_path / "proj"
    proj.mkdir()
    for i in range(5):
        tifffile.imwrite(proj / f"p{i}.tif", np.full((4, 8), 100, np.uint16))
    tifffile.imwrite(tmp_path / "flat.tif", np.full((4, 8), 200, np.uint16))
    (tmp_path / "angles.txt").write_text("\n".join(str(a) for a in range(4)))
    assert main(["recon", str(proj), "-o", str(out), "--flats", str(tmp_path / "flat.tif"),
                 "--angles", str(tmp_path / "angles.txt"), "--method", "fbp"]) == InputError.exit_code
    lines = _stderr_lines(capsys)
    assert len(lines) == (5 if not torch.cuda.is_available() else 4)
    assert not out.exists()
    assert any("angle" in l.lower() for l in lines)
    assert any("nan" in l.lower() for l in lines)


def test_existing_output_untouched(ct_file, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["recon", str(ct_file), "-o", str(out), "--method", "fbp"]) == OutputExistsError.exit_code
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


def test_console_script_single_line_error(tmp_path):
    exe = Path(sys.executable).with_name("medvol")
    assert exe.exists(), f"medvol console script not installed: {exe} (pip install -e .)"
    r = subprocess.run([str(exe), "recon", str(tmp_path / "missing.nrrd"), "-o",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == InputError.exit_code
    assert len(r.stderr.strip().splitlines()) == 1 and "missing.nrrd" in r.stderr


def test_recon_pdunet_on_volume_beats_fbp(ct_file, tmp_path):
    out = tmp_path / "pd"
    assert main(["recon", str(ct_file), "-o", str(out), "--method", "pdunet", "--views", "16"]) == 0
    import SimpleITK as sitk

    # recomputed from the written files: the reference resampled (SimpleITK) onto the output grid
    rec_img = sitk.ReadImage(str(out / "recon.nrrd"))
    ref_img = sitk.Resample(sitk.Cast(sitk.ReadImage(str(ct_file)), sitk.sitkFloat32), rec_img,
                            sitk.Transform(), sitk.sitkLinear, -1000.0)
    ref_a = sitk.GetArrayFromImage(ref_img)
    rec_q = _quality(sitk.GetArrayFromImage(rec_img), ref_a)
    fbp_q = _quality(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "fbp.nrrd"))), ref_a)
    assert rec_q["ssim"] > fbp_q["ssim"] and rec_q["psnr_db"] > fbp_q["psnr_db"]
    # the manifest scores on the REFERENCE grid (the one TV/FBP would use): the 128² result
    # resampled back (SimpleITK, linear, air outside) and compared with the reference itself
    m = json.loads((out / "manifest.json").read_text())
    ref0 = sitk.Cast(sitk.ReadImage(str(ct_file)), sitk.sitkFloat32)
    back = sitk.Resample(rec_img, ref0, sitk.Transform(), sitk.sitkLinear, -1000.0)
    on_ref = _quality(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(ref0), gaussian=True)
    got_m = m["metrics"]["metrics"]["recon"]
    assert got_m["psnr_db"] == pytest.approx(on_ref["psnr_db"], abs=0.05)
    assert got_m["ssim"] == pytest.approx(on_ref["ssim"], abs=2e-3)
    assert m["record"]["scoring_grid"]["shape_zyx"] == list(sitk.GetArrayFromImage(ref0).shape)
    assert m["record"]["scoring_grid"]["resampled"] == ["recon", "fbp"]
    assert m["parameters"]["weights"] == "pdunet_ct_x16" and "n_iter" not in m["parameters"]
    got = mv.io.read(out / "recon.nrrd")
    assert got.shape[1:] == (128, 128)  # the network's training grid, geometry recorded
    np.testing.assert_allclose(got.spacing[:2], (1.953125, 1.953125))
    # other sparsity than the shipped weights → clear error, no output
    assert main(["recon", str(ct_file), "-o", str(tmp_path / "bad"), "--method", "pdunet",
                 "--views", "8"]) == InputError.exit_code
    assert not (tmp_path / "bad").exists()


def test_recon_pdunet_radial_kspace_beats_gridding(tmp_path):
    h5py = pytest.importorskip("h5py")
    from medvol.mri import nufft_forward, uniform_trajectory
    from medvol.phantoms import shepp_logan_2d

    img = shepp_logan_2d(128)
    tr = uniform_trajectory(256, 256).subsample(16)
    with h5py.File(tmp_path / "spokes.h5", "w") as f:
        f["kspace"] = nufft_forward(img, tr)
        f["angles"] = tr.angles
    out = tmp_path / "mri"
    assert main(["recon", str(tmp_path / "spokes.h5"), "-o", str(out), "--method", "pdunet"]) == 0
    x = mv.io.read(out / "recon.nrrd").numpy()[0]
    g = mv.io.read(out / "gridding.nrrd").numpy()[0]

    def ncc(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    assert ncc(x, img) > ncc(g, img) + 0.05
    assert main(["recon", str(tmp_path / "spokes.h5"), "-o", str(tmp_path / "x"),
                 "--method", "tv"]) == InputError.exit_code
    # --backend/--device reach the k-space path: recorded, and a GPU request on a CPU machine is
    # the documented BackendError (exit 6), nothing written
    man = json.loads((out / "manifest.json").read_text())
    assert man["record"]["backend"] == "torch"
    # the weights that ran are the MRI ones, and the manifest says so (not the CT default)
    assert man["parameters"]["weights"] == man["record"]["weights"] == "pdunet_mri_x16"
    assert main(["recon", str(tmp_path / "spokes.h5"), "-o", str(tmp_path / "lpd"),
                 "--method", "pdunet", "--weights", "lpd_mri_x16"]) == 0
    man = json.loads((tmp_path / "lpd" / "manifest.json").read_text())
    assert man["parameters"]["weights"] == man["record"]["weights"] == "lpd_mri_x16"
    assert not np.allclose(mv.io.read(tmp_path / "lpd" / "recon.nrrd").numpy()[0], x)
    import torch

    if not torch.cuda.is_available():
        assert main(["recon", str(tmp_path / "spokes.h5"), "-o", str(tmp_path / "gpu"),
                     "--method", "fbp", "--device", "cuda"]) == BackendError.exit_code
        assert not (tmp_path / "gpu").exists()


def test_usage_errors_exit_2_and_typer_exit_codes_pass_through(ct_file, tmp_path, capsys):
    assert main(["recon", str(ct_file), "-o", str(tmp_path / "o"), "--views", "abc"]) == 2
    assert main(["no-such-command"]) == 2
    assert not (tmp_path / "o").exists()


def test_output_folder_holding_the_input_is_refused_even_with_overwrite(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    mv.io.write(_ct_volume(), folder / "ct.nrrd")
    (folder / "notes.txt").write_text("keep")
    code = main(["recon", str(folder / "ct.nrrd"), "-o", str(folder), "--method", "fbp",
                 "--overwrite"])
    assert code == InputError.exit_code
    assert sorted(p.name for p in folder.iterdir()) == ["ct.nrrd", "notes.txt"]


def test_slice_selection_is_python_style():
    from medvol.recon.run import _slice_range

    v = _ct_volume(nz=5)
    assert _slice_range(v, "-1").origin == v[4:5].origin
    assert _slice_range(v, "0:-1").shape[0] == 4
    assert _slice_range(v, "1::2").shape[0] == 2
    for bad in ("0:4:0", "0:4:-1", "9", "3:1", "a:b"):
        with pytest.raises(InputError):
            _slice_range(v, bad)


def test_projection_rows_keep_their_height(tmp_path):
    assert SYNCHROTRON.is_dir(), f"bundled synchrotron sample data missing: {SYNCHROTRON}"
    from medvol.recon.run import reconstruct_projections

    full_rows = 135
    res = reconstruct_projections(SYNCHROTRON, method="fbp", rows="60:64", cor="none")
    # slice 0 of the (flipped) volume is detector row 63, at z = ((N-1)/2 - 63) pixels
    assert res.volume.shape[0] == 4
    assert res.volume.origin[2] == pytest.approx((full_rows - 1) / 2 - 63)
    top = reconstruct_projections(SYNCHROTRON, method="fbp", rows="0:4", cor="none")
    assert top.volume.origin[2] == pytest.approx((full_rows - 1) / 2 - 3)


def test_metric_window_option(ct_file, tmp_path, capsys):
    """--metric-window LOW:HIGH is the window of the windowed metrics (checked against
    scikit-image on the written files); an unknown preset is one error line before any work."""
    import SimpleITK as sitk

    out = tmp_path / "w"
    assert main(["recon", str(ct_file), "-o", str(out), "--method", "fbp", "--views", "4",
                 "--metric-window=-160:240", "--no-progress"]) == 0
    rec = json.loads((out / "manifest.json").read_text())["record"]
    assert rec["metric_window"]["range"] == [-160.0, 240.0] and rec["metric_window"]["width"] == 400
    assert "fbp" not in rec["metrics"]                       # FBP is the method itself here
    ref_a = sitk.GetArrayFromImage(sitk.ReadImage(str(ct_file))).astype(np.float64)
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "recon.nrrd")))
    q = _quality(got, ref_a, window=(-160.0, 240.0), gaussian=True)
    assert rec["metrics"]["recon"]["ssim_window"] == pytest.approx(q["ssim"], abs=2e-3)
    assert "W400/L40" in capsys.readouterr().err
    bad = tmp_path / "bad"
    assert main(["recon", str(ct_file), "-o", str(bad), "--method", "fbp",
                 "--metric-window", "liver"]) == InputError.exit_code
    assert not bad.exists() and len(_stderr_lines(capsys)) == 1
