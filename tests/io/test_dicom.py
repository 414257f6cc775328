"""DICOM ingest: geometry against the DICOM headers and SimpleITK, decoding, enhanced
multi-frame objects, and one clear error per bad input."""
from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from medvol.errors import DicomError, InputError
from medvol.io import read_dicom_series

pydicom = pytest.importorskip("pydicom")


# ----------------------------------------------------------------------------- helpers
def _ge_dir() -> Path:
    """The GE tilted head CT bundled in ``sample_data/`` (missing = failure, not a skip)."""
    d = Path(__file__).resolve().parents[2] / "sample_data" / "dicom" / "ct_head_ge_tilt"
    assert d.is_dir(), f"bundled GE head CT missing: {d}"
    return d


def _ge_files() -> list[Path]:
    return sorted(_ge_dir().glob("*.dcm"))


def _orthonormal(d) -> bool:
    d = np.asarray(d)
    return np.allclose(d.T @ d, np.eye(3), atol=1e-6)


def _header_geometry(files):
    """Independent per-slice geometry straight from the headers (pydicom, no medvol code)."""
    out = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        iop = np.array(ds.ImageOrientationPatient, float)
        r, c = iop[:3], iop[3:]
        out.append((np.array(ds.ImagePositionPatient, float), r, c, np.cross(r, c),
                    np.array(ds.PixelSpacing, float)))
    return out


def _sample(vol, world):
    """Trilinear samples of ``vol`` at LPS points (N, 3); NaN outside the grid."""
    from scipy.ndimage import map_coordinates

    idx = vol.world_to_index(world)
    return map_coordinates(np.asarray(vol.array, dtype=np.float32),
                           [idx[:, 2], idx[:, 1], idx[:, 0]], order=1, cval=np.nan)


@pytest.fixture(scope="module")
def ge_volume():
    vols = read_dicom_series(_ge_dir())
    assert len(vols) == 1
    return vols[0]


# ----------------------------------------------------------------------------- 1. tilted GE CT
def test_ge_tilt_geometry_matches_headers(ge_volume):
    vol = ge_volume
    geo = _header_geometry(_ge_files())
    ipp = np.stack([g[0] for g in geo])
    r, c, n = geo[0][1], geo[0][2], geo[0][3]
    w = np.sort(ipp @ n)
    gaps = np.diff(w)
    # tilt from IPP/IOP, independently of the (0018,1120) tag — and consistent with it
    d = ipp[-1] - ipp[0]
    tilt = np.degrees(np.arccos(abs(d @ n) / np.linalg.norm(d)))
    tag = float(pydicom.dcmread(_ge_files()[0], stop_before_pixels=True)
                .GantryDetectorTilt)
    assert abs(tilt - abs(tag)) < 0.05
    ing = vol.meta["ingest"]
    assert ing["tilt_deg"] == pytest.approx(tilt, abs=1e-3)
    assert ing["sheared"] and not ing["uniform"] and ing["resampled"]
    assert ing["n_slices_in"] == 28
    np.testing.assert_allclose(ing["gaps_mm"], gaps, atol=1e-3)
    assert ing["fill_value"] == -1024.0
    assert any("Gantry tilt 18.5" in m for m in ing["messages"])
    # orthonormal grid along (r, c, r×c), uniform spacing = smallest gap along the normal
    assert _orthonormal(vol.direction)
    np.testing.assert_allclose(vol.direction, np.stack([r, c, n], 1), atol=1e-6)
    ps = geo[0][4]
    np.testing.assert_allclose(vol.spacing, (ps[1], ps[0], gaps.min()), rtol=1e-6)
    assert vol.meta["units"] == "HU" and vol.array.dtype == np.float32
    # the grid spans the stack along the normal
    k_extent = (vol.shape[0] - 1) * vol.spacing[2]
    assert w[-1] - w[0] - vol.spacing[2] < k_extent <= w[-1] - w[0] + 1e-6


def test_ge_tilt_resampled_values_match_every_original_slice(ge_volume):
    """Sample the output at each original slice's own world coordinates (geometry and HU from
    SimpleITK reading that single file) and compare; a geometry that ignores the tilt must be
    far worse, so this test can fail."""
    sitk = pytest.importorskip("SimpleITK")
    vol = ge_volume
    n = vol.direction[:, 2]
    files = _ge_files()
    first = None
    good, bad = [], []
    step = 4
    for f in files:
        img = sitk.ReadImage(str(f))
        a = sitk.GetArrayFromImage(img)[0].astype(np.float32)  # HU (SimpleITK applies rescale)
        o = np.array(img.GetOrigin())
        D = np.array(img.GetDirection()).reshape(3, 3)
        sp = np.array(img.GetSpacing())
        first = o if first is None else first
        rr, cc = np.mgrid[0:a.shape[0]:step, 0:a.shape[1]:step]
        ij = np.stack([cc.ravel() * sp[0], rr.ravel() * sp[1], np.zeros(cc.size)], 1)
        truth = a[rr.ravel(), cc.ravel()]
        tissue = truth > -500
        world = o + ij @ D.T
        wrong = first + ((o - first) @ n) * n + ij @ D.T   # "ignore the tilt": stack along n
        for pts, acc in ((world, good), (wrong, bad)):
            s = _sample(vol, pts)
            ok = np.isfinite(s) & tissue
            acc.append(np.abs(s[ok] - truth[ok]))
    med_good = float(np.median(np.concatenate(good)))
    med_bad = float(np.median(np.concatenate(bad)))
    print(f"median |dHU| in tissue: correct geometry {med_good:.2f}, ignoring tilt {med_bad:.2f}")
    assert sum(len(g) for g in good) > 28 * 1000  # the overlap really covers the head
    assert med_good < 5.0
    assert med_bad > 30.0 and med_bad > 10 * med_good


def test_ge_tilt_never_refuses_and_names_the_fix():
    with pytest.raises(DicomError) as e:
        read_dicom_series(_ge_dir(), resample="never")
    msg = str(e.value)
    assert "tilt" in msg and "non-uniform" in msg and "resample" in msg and "\n" not in msg


def test_ge_tilt_logs_decision(caplog):
    with caplog.at_level(logging.INFO, logger="medvol.io.dicom"):
        read_dicom_series(_ge_dir())
    text = caplog.text
    assert "Gantry tilt 18.5° corrected by resampling" in text.replace(
        " (from ImagePositionPatient/ImageOrientationPatient)", "")
    assert "Non-uniform slice spacing (1.08–7.00 mm" in text


def test_resample_stack_exact_for_linear_field():
    """Analytic check: linear interpolation reproduces a linear field exactly on a sheared,
    unevenly spaced stack, at the resampled voxels' world positions."""
    from medvol.io.dicom import geometry as g

    r, c, n = g.orientation([1, 0, 0, 0, np.cos(0.3), -np.sin(0.3)])
    ps = (0.8, 0.6)
    ipp0 = np.array([-20.0, 5.0, 3.0])
    z = np.array([0.0, 2.0, 4.0, 4.7, 9.0, 13.3])            # uneven steps along +S
    ipp = ipp0 + z[:, None] * np.array([0, 0, 1.0])          # tilted: not along n
    coef, const = np.array([0.3, -0.7, 1.1]), 5.0
    rows, cols = 20, 24
    jj, ii = np.mgrid[0:rows, 0:cols]
    slices = np.stack([(p + ii[..., None] * ps[0] * r + jj[..., None] * ps[1] * c) @ coef + const
                       for p in ipp]).astype(np.float32)
    an = g.analyse_stack(ipp, r, c, n, ps)
    assert an.sheared and not an.uniform
    assert an.tilt_deg == pytest.approx(np.degrees(0.3), abs=1e-9)
    out, (i0, j0) = g.resample_stack(slices, an, ps, float(an.gaps.min()), fill_value=np.nan)
    K, J, I = out.shape
    kk, jj2, ii2 = np.mgrid[0:K, 0:J, 0:I]
    world = (ipp0 + (ii2[..., None] + i0) * ps[0] * r + (jj2[..., None] + j0) * ps[1] * c
             + kk[..., None] * an.gaps.min() * n)
    expect = world @ coef + const
    ok = np.isfinite(out)
    assert ok.mean() > 0.5
    np.testing.assert_allclose(out[ok], expect[ok], atol=2e-3)


# ----------------------------------------------------------------------------- 2. shuffled names
def test_shuffled_random_names_give_identical_volume(ge_volume, tmp_path):
    rng = random.Random(1234)
    files = _ge_files()
    rng.shuffle(files)
    for k, f in enumerate(files):
        sub = tmp_path / f"d{k % 3}"
        sub.mkdir(exist_ok=True)
        shutil.copy(f, sub / f"{rng.getrandbits(64):016x}")
    (tmp_path / "notes.txt").write_text("not dicom")
    vol = read_dicom_series(tmp_path)
    assert len(vol) == 1
    vol = vol[0]
    assert np.array_equal(vol.array, ge_volume.array)
    np.testing.assert_array_equal(vol.affine, ge_volume.affine)
    assert vol.meta["label"] == ge_volume.meta["label"]


# ----------------------------------------------------------------------------- 3. transfer syntaxes
def test_nine_transfer_syntaxes_decode_identically(shared_data):
    d = shared_data / "dicom" / "transfer_syntaxes"
    assert d.is_dir(), f"transfer_syntaxes missing from the shared data: {d}"
    files = sorted(d.glob("*.dcm"))
    assert len(files) == 9
    ref_ds = pydicom.dcmread(d / "1.dcm")
    assert ref_ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    # independent reference: the raw little-endian bytes of the uncompressed file
    ref = np.frombuffer(ref_ds.PixelData, "<u2").reshape(ref_ds.Rows, ref_ds.Columns)
    syntaxes = set()
    for f in files:
        syntaxes.add(str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID))
        (v,) = read_dicom_series(f)
        assert v.shape == (1,) + ref.shape
        assert np.array_equal(v.array[0], ref), f.name
    assert len(syntaxes) == 7  # two JPEG-lossless and two JPEG-LS variants share a UID
    # the whole folder: one position, exact duplicates dropped with a warning
    (v,) = read_dicom_series(d)
    assert v.shape[0] == 1 and len([w for w in v.meta["ingest"]["warnings"]
                                    if "duplicate" in w]) == 8


# ----------------------------------------------------------------------------- 4. enhanced
def test_enhanced_multiframe(shared_data):
    d = shared_data / "dicom" / "enhanced_multiframe"
    assert d.is_dir(), f"enhanced_multiframe missing from the shared data: {d}"
    philips = read_dicom_series(d / "philips_fmap.dcm")
    ds = pydicom.dcmread(d / "philips_fmap.dcm")
    assert sum(v.shape[0] for v in philips) == int(ds.NumberOfFrames) == 64
    assert len(philips) == 2  # magnitude + field map, split rather than refused
    types = sorted(v.meta["ingest"]["frame_type"].split()[-1] for v in philips)
    assert types == ["FIELD_MAP", "M"]
    frames = ds.pixel_array
    per = ds.PerFrameFunctionalGroupsSequence
    for v in philips:
        assert _orthonormal(v.direction) and min(v.spacing) > 0
        np.testing.assert_allclose(v.spacing, (4.0, 4.0, 4.0), atol=1e-4)
        want = v.meta["ingest"]["frame_type"].split()[-1]
        idx = [k for k in range(64) if per[k].MRImageFrameTypeSequence[0].FrameType[3] == want]
        pos = np.array([per[k].PlanePositionSequence[0].ImagePositionPatient for k in idx], float)
        order = np.argsort(pos[:, 2])
        np.testing.assert_allclose(v.origin, pos[order[0]], atol=1e-4)
        k0 = idx[order[5]]
        pvt = per[k0].PixelValueTransformationSequence[0]
        expect = frames[k0] * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
        np.testing.assert_allclose(v.array[5], expect, rtol=1e-5, atol=1e-3)
    siemens = read_dicom_series(d, errors="raise")
    siemens = [v for v in siemens if v.meta["series_number"] == 6]
    assert len(siemens) == 4 and all(v.shape == (6, 64, 64) for v in siemens)
    assert sorted(v.meta["ingest"]["temporal_position_index"] for v in siemens) == [1, 2, 3, 4]
    assert len({v.meta["label"] for v in siemens}) == 4
    for v in siemens:
        assert _orthonormal(v.direction)
        np.testing.assert_allclose(v.spacing[2], 2.4, atol=1e-3)


# ----------------------------------------------------------------------------- 5. bad inputs
@pytest.fixture()
def three_slices(tmp_path):
    src = _ge_files()[:3]
    d = tmp_path / "series"
    d.mkdir()
    for f in src:
        shutil.copy(f, d / f.name)
    return d


def _raises(path, exc=DicomError, *names, **kw):
    with pytest.raises(exc) as e:
        read_dicom_series(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    for nm in names:
        assert nm in msg, msg
    return msg


def test_missing_path_and_empty_folders(tmp_path):
    _raises(tmp_path / "nope", InputError, "nope")
    (tmp_path / "empty").mkdir()
    assert "empty" in _raises(tmp_path / "empty", DicomError, "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.dcm").write_bytes(b"\x00" * 300)
    (tmp_path / "junk" / "readme.txt").write_text("hello")
    assert "no DICOM" in _raises(tmp_path / "junk", DicomError, "junk")


@pytest.mark.parametrize("keep", [200, 300_000])
def test_truncated_file(three_slices, keep):
    f = three_slices / "02.dcm"
    f.write_bytes(f.read_bytes()[:keep])
    _raises(three_slices, DicomError, "02.dcm")


def test_missing_pixel_data(three_slices):
    f = three_slices / "03.dcm"
    ds = pydicom.dcmread(f)
    del ds.PixelData
    ds.save_as(f)
    assert "PixelData" in _raises(three_slices, DicomError, "03.dcm")


def test_different_rows_columns(three_slices):
    f = three_slices / "02.dcm"
    ds = pydicom.dcmread(f)
    ds.PixelData = ds.pixel_array[:256, :256].tobytes()
    ds.Rows, ds.Columns = 256, 256
    ds.save_as(f)
    msg = _raises(three_slices, DicomError, "02.dcm", "256×256", "512×512")
    assert "mixed geometry" in msg


def test_different_orientation(three_slices):
    f = three_slices / "01.dcm"
    ds = pydicom.dcmread(f)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.save_as(f)
    assert "ImageOrientationPatient" in _raises(three_slices, DicomError, "01.dcm")


def test_duplicate_position(three_slices):
    a = pydicom.dcmread(three_slices / "01.dcm", stop_before_pixels=True)
    f = three_slices / "03.dcm"
    ds = pydicom.dcmread(f)
    ds.ImagePositionPatient = a.ImagePositionPatient
    ds.save_as(f)
    msg = _raises(three_slices, DicomError, "01.dcm", "03.dcm")
    assert "same position" in msg


def test_exact_duplicate_dropped_with_warning(three_slices):
    ref = read_dicom_series(three_slices)[0]
    shutil.copy(three_slices / "02.dcm", three_slices / "copy_of_two")
    (v,) = read_dicom_series(three_slices)
    assert np.array_equal(v.array, ref.array)
    assert any("duplicate" in w for w in v.meta["ingest"]["warnings"])


def test_unsupported_transfer_syntax(three_slices):
    from pydicom.encaps import encapsulate

    f = three_slices / "02.dcm"
    ds = pydicom.dcmread(f)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile
    ds.PixelData = encapsulate([ds.PixelData])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(f, enforce_file_format=True)
    msg = _raises(three_slices, DicomError, "02.dcm", "1.2.840.10008.1.2.4.100", "MPEG2")
    assert "cannot decode" in msg and "install" in msg


def test_single_slice_needs_thickness(three_slices):
    for f in ("01.dcm", "03.dcm"):
        (three_slices / f).unlink()
    (v,) = read_dicom_series(three_slices)
    assert v.shape[0] == 1 and v.spacing[2] == pytest.approx(4.0)
    assert any("single-slice" in w for w in v.meta["ingest"]["warnings"])
    f = three_slices / "02.dcm"
    ds = pydicom.dcmread(f)
    del ds.SliceThickness
    ds.save_as(f)
    _raises(three_slices, DicomError, "02.dcm", "SliceThickness")


def test_errors_skip_keeps_good_series(three_slices, shared_data, tmp_path):
    good = tmp_path / "study"
    shutil.copytree(three_slices, good / "bad")
    ds = pydicom.dcmread(good / "bad" / "02.dcm")
    del ds.PixelData
    ds.save_as(good / "bad" / "02.dcm")
    shutil.copy(shared_data / "dicom" / "transfer_syntaxes" / "1.dcm", good / "mr.dcm")
    with pytest.raises(DicomError):
        read_dicom_series(good)
    vols = read_dicom_series(good, errors="skip")
    assert [v.meta["modality"] for v in vols] == ["MR"]


# ----------------------------------------------------------------------------- 6. pydicom files
def _testdata(name):
    from pydicom.data import get_testdata_file

    p = get_testdata_file(name)
    assert p is not None, f"pydicom test file {name} (inside the pydicom wheel) not found"
    return Path(p)


def test_ct_small_against_simpleitk():
    sitk = pytest.importorskip("SimpleITK")
    f = _testdata("CT_small.dcm")
    (v,) = read_dicom_series(f)
    img = sitk.ReadImage(str(f))
    assert v.array.dtype == np.int16 and v.meta["units"] == "HU"
    np.testing.assert_array_equal(v.array, sitk.GetArrayFromImage(img))
    np.testing.assert_allclose(v.origin, img.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(v.spacing[:2], img.GetSpacing()[:2], atol=1e-6)
    np.testing.assert_allclose(v.direction.reshape(-1), img.GetDirection(), atol=1e-6)


@pytest.fixture()
def dicomdir_study(tmp_path):
    root = _testdata("dicomdirtests/DICOMDIR").parent
    study = tmp_path / "study"
    study.mkdir()
    shutil.copy(root / "DICOMDIR", study / "DICOMDIR")
    shutil.copytree(root / "77654033" / "CT2", study / "a")
    shutil.copytree(root / "98892001" / "CT5N", study / "b")
    return study


def _sitk_series(folder):
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk, reader.Execute()


def test_dicomdir_folder_against_simpleitk(dicomdir_study):
    """DICOMDIR present: ignored. The regular 5-slice series equals SimpleITK's read; the
    4-slice series with a 202.5 mm gap (missing slices) is equalised with a warning."""
    vols = sorted(read_dicom_series(dicomdir_study), key=lambda v: v.meta["ingest"]["n_slices_in"])
    assert [v.meta["ingest"]["n_slices_in"] for v in vols] == [4, 5]
    sitk, img = _sitk_series(dicomdir_study / "b")
    v = vols[1]
    assert not v.meta["ingest"]["resampled"]
    np.testing.assert_array_equal(v.array, sitk.GetArrayFromImage(img))
    np.testing.assert_allclose(v.origin, img.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(v.spacing, img.GetSpacing(), rtol=1e-4)
    np.testing.assert_allclose(v.direction.reshape(-1), img.GetDirection(), atol=1e-5)
    sitk, img = _sitk_series(dicomdir_study / "a")
    v = vols[0]
    ing = v.meta["ingest"]
    assert ing["resampled"] and sorted(ing["gaps_mm"]) == pytest.approx([1.25, 1.25, 202.5])
    assert any("missing" in w for w in ing["warnings"])
    assert v.spacing[2] == pytest.approx(1.25)
    assert v.shape[0] == 1 + round(205.0 / 1.25)
    ref = sitk.GetArrayFromImage(img)  # SimpleITK keeps the 4 slices (sorted along the normal)
    np.testing.assert_allclose(v.origin, img.GetOrigin(), atol=1e-3)
    np.testing.assert_array_equal(v.array[0], ref[0])
    for k in (1, 2, 3):  # the last three slices lie exactly on the 1.25 mm grid
        np.testing.assert_array_equal(v.array[-k], ref[-k])


def test_missing_series_uid_uses_fallback(dicomdir_study):
    ref = {v.shape[0]: v for v in read_dicom_series(dicomdir_study, resample="always")}
    for f in (dicomdir_study / "a").iterdir():
        ds = pydicom.dcmread(f)
        del ds.SeriesInstanceUID
        ds.save_as(f)
    vols = {v.shape[0]: v for v in read_dicom_series(dicomdir_study, resample="always")}
    assert sorted(vols) == sorted(ref)
    fb = vols[165]
    assert np.array_equal(fb.array, ref[165].array)
    assert any("SeriesInstanceUID missing" in d for d in fb.meta["ingest"]["decisions"])
    assert fb.meta["series_uid_hash"] and fb.meta["label"].startswith("s")


def test_meta_has_no_identifiers(dicomdir_study):
    for v in read_dicom_series(dicomdir_study):
        text = repr(dict(v.meta))
        ds = pydicom.dcmread(next((dicomdir_study / "a").iterdir()), stop_before_pixels=True)
        for tag in ("PatientName", "PatientID", "SeriesInstanceUID", "StudyInstanceUID"):
            val = str(ds.get(tag, ""))
            if len(val) > 3:
                assert val not in text
