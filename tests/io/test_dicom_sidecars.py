"""DICOM output at dcm2niix level (issue 19, item 5): volumes named by content and unit, repeats
stacked into 4D (or split), a BIDS-style JSON sidecar per volume without identifiers.

Truth comes from the DICOM headers themselves, read with pydicom, and from the written files
read back with pynrrd / nibabel / SimpleITK.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from medvol.cli import main  # noqa: E402
from medvol.io import read_dicom_series  # noqa: E402
from medvol.io.dicom.acquisition import SIDECAR_KEYS  # noqa: E402


@pytest.fixture(scope="module")
def enhanced(shared_data):
    d = shared_data / "dicom" / "enhanced_multiframe"
    assert d.is_dir(), f"enhanced_multiframe missing from the shared data: {d}"
    return d


def _frames_by_type(ds, word):
    per = ds.PerFrameFunctionalGroupsSequence
    return [k for k in range(len(per)) if per[k].MRImageFrameTypeSequence[0].FrameType[3] == word]


def test_philips_volumes_named_by_kind_with_units(enhanced):
    vols = read_dicom_series(enhanced / "philips_fmap.dcm")
    by = {v.meta["label"].split("_", 3)[-1]: v for v in vols}
    assert sorted(by) == ["fieldmap_hz", "magnitude"]
    ds = pydicom.dcmread(enhanced / "philips_fmap.dcm")
    per = ds.PerFrameFunctionalGroupsSequence
    k = _frames_by_type(ds, "FIELD_MAP")[0]
    rw = per[k].RealWorldValueMappingSequence[0]
    assert rw.MeasurementUnitsCodeSequence[0].CodeValue == "Hz"
    fmap = by["fieldmap_hz"]
    assert fmap.meta["units"] == "Hz" and "units" not in by["magnitude"].meta
    # the stored values ARE Hz: RealWorldValue slope/intercept applied to the raw frames
    idx = _frames_by_type(ds, "FIELD_MAP")
    pos = np.array([per[i].PlanePositionSequence[0].ImagePositionPatient for i in idx], float)
    k0 = idx[int(np.argsort(pos[:, 2])[3])]
    hz = ds.pixel_array[k0] * float(rw.RealWorldValueSlope) + float(rw.RealWorldValueIntercept)
    np.testing.assert_allclose(fmap.numpy()[3], hz, rtol=1e-5, atol=1e-3)


def _sidecar_checks(side: dict, text: str) -> None:
    assert set(side) <= SIDECAR_KEYS, set(side) - SIDECAR_KEYS
    # no identifiers: no UIDs, dates, institution/station/device serial or patient fields
    for bad in ("Vanderbilt", "mr3tb", "17240", "Patient Name", "1.2.840.113"):
        assert bad not in text
    assert not re.search(r"\b(19|20)\d{6}\b", text), "a date-like value in the sidecar"
    assert side["ConversionSoftware"] == "medvol"


def test_ingest_enhanced_multiframe_sidecars_and_4d(enhanced, tmp_path):
    import nrrd

    out = tmp_path / "ing"
    assert main(["ingest", str(enhanced), "-o", str(out)]) == 0
    labels = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(labels) == 3
    assert [l.split("_", 3)[-1] for l in labels] == ["magnitude", "fieldmap_hz", "magnitude"]
    # Philips: sidecar values from the functional groups (ms → s as BIDS asks)
    ph = pydicom.dcmread(enhanced / "philips_fmap.dcm", stop_before_pixels=True)
    timing = ph.SharedFunctionalGroupsSequence[0].MRTimingAndRelatedParametersSequence[0]
    fm = next(l for l in labels if l.endswith("fieldmap_hz"))
    text = (out / fm / "volume.json").read_text()
    side = json.loads(text)
    _sidecar_checks(side, text)
    assert side["Units"] == "Hz" and side["ImageKind"] == "fieldmap_hz"
    assert side["RepetitionTime"] == pytest.approx(float(timing.RepetitionTime) / 1000)
    assert side["FlipAngle"] == pytest.approx(float(timing.FlipAngle))
    assert side["MagneticFieldStrength"] == pytest.approx(float(ph.MagneticFieldStrength))
    assert side["Manufacturer"] == str(ph.Manufacturer)
    assert "FIELD_MAP" in side["ImageType"]
    mag = next(l for l in labels if l.startswith("s801") and l.endswith("magnitude"))
    side_m = json.loads((out / mag / "volume.json").read_text())
    k = _frames_by_type(ph, "M")[0]
    te = ph.PerFrameFunctionalGroupsSequence[k].MREchoSequence[0].EffectiveEchoTime
    assert side_m["EchoTime"] == pytest.approx(float(te) / 1000) and "Units" not in side_m
    hdr = nrrd.read_header(str(out / fm / "volume.nrrd"))
    assert hdr["medvol_units"] == "Hz"
    # Siemens XA10: four repeats (AcquisitionNumber 1..4) → ONE 4D file, repeat axis last
    rep = next(l for l in labels if l.startswith("s006"))
    data, hdr = nrrd.read(str(out / rep / "volume.nrrd"))
    assert data.shape == (64, 64, 6, 4) and list(hdr["kinds"]) == ["domain"] * 3 + ["list"]
    files = sorted(enhanced.glob("siemens_xa10_*.dcm"),
                   key=lambda f: int(pydicom.dcmread(f, stop_before_pixels=True).AcquisitionNumber))
    for r, f in enumerate(files):
        ds = pydicom.dcmread(f)
        per = ds.PerFrameFunctionalGroupsSequence
        z = np.array([per[i].PlanePositionSequence[0].ImagePositionPatient for i in
                      range(len(per))], float) @ np.cross(*np.reshape(
                          per[0].PlaneOrientationSequence[0].ImageOrientationPatient, (2, 3)))
        for s, i in enumerate(np.argsort(z)):
            np.testing.assert_array_equal(data[:, :, s, r].T, ds.pixel_array[i])
    side = json.loads((out / rep / "volume.json").read_text())
    _sidecar_checks(side, json.dumps(side))
    assert side["Repetitions"] == 4 and side["AcquisitionNumbers"] == [1, 2, 3, 4]
    assert side["EchoTime"] == pytest.approx(0.030) and side["RepetitionTime"] == pytest.approx(0.5)
    assert side["ImageKind"] == "magnitude"
    # medvol info reads the 4D file as its repeats
    assert main(["info", str(out / rep / "volume.nrrd"), "--json"]) == 0


def test_split_repeats_writes_3d_volumes(enhanced, tmp_path):
    import SimpleITK as sitk

    out = tmp_path / "split"
    assert main(["ingest", str(enhanced), "-o", str(out), "--split-repeats",
                 "--format", "nii.gz"]) == 0
    reps = sorted(p for p in out.iterdir() if p.name.startswith("s006"))
    assert [p.name[-5:] for p in reps] == ["rep01", "rep02", "rep03", "rep04"]
    for n, p in enumerate(reps):
        img = sitk.ReadImage(str(p / "volume.nii.gz"))
        assert img.GetDimension() == 3 and img.GetSize() == (64, 64, 6)
        assert json.loads((p / "volume.json").read_text())["AcquisitionNumber"] == n + 1


def test_ct_sidecar_tilt_and_units(shared_data, tmp_path):
    d = shared_data / "dicom" / "ct_head_ge_tilt"
    out = tmp_path / "ct"
    assert main(["ingest", str(d), "-o", str(out)]) == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    text = (folder / "volume.json").read_text()
    side = json.loads(text)
    _sidecar_checks(side, text)
    ds = pydicom.dcmread(next(p for p in sorted(d.iterdir()) if p.name != "LICENSE"),
                         stop_before_pixels=True)
    assert side["Units"] == "HU" and side["Modality"] == "CT"
    assert side["KVP"] == pytest.approx(float(ds.KVP))
    assert side["GantryTiltMeasured"] == pytest.approx(abs(float(ds.GantryDetectorTilt)), abs=0.1)
