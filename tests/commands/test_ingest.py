"""``medvol ingest``: outputs, manifest, de-identification, exit codes, atomicity."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medvol.cli import main
from medvol.errors import DicomError, InputError, OutputExistsError

pydicom = pytest.importorskip("pydicom")

NAME_MARKER = "ZQXNAMEMARKER"
ID_MARKER = "ZQXIDMARKER4711"


def _ct5n() -> Path:
    from pydicom.data import get_testdata_file

    p = get_testdata_file("dicomdirtests/DICOMDIR")
    assert p is not None, "pydicom's dicomdirtests data (in the pydicom wheel) not found"
    return Path(p).parent / "98892001" / "CT5N"


@pytest.fixture()
def study(tmp_path) -> Path:
    """5-slice CT whose patient fields carry markers and a path-traversal name."""
    d = tmp_path / "study"
    d.mkdir()
    for k, f in enumerate(sorted(_ct5n().iterdir())):
        ds = pydicom.dcmread(f)
        ds.PatientName = "../../x" if k == 0 else f"{NAME_MARKER}^Jane"
        ds.PatientID = ID_MARKER
        ds.SeriesDescription = f"{NAME_MARKER} head"
        ds.save_as(d / f"img{k}")
    return d


def _all_text(root: Path) -> str:
    parts = []
    for p in root.rglob("*"):
        parts.append(str(p.relative_to(root)))
        if p.is_file():
            parts.append(p.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def test_ingest_writes_volume_and_manifest(study, tmp_path, capsys, caplog):
    sitk = pytest.importorskip("SimpleITK")
    out = tmp_path / "out"
    with caplog.at_level(logging.DEBUG):
        code = main(["ingest", str(study), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1 and re.fullmatch(r"s\d{3}_CT_[0-9a-f]{8}", dirs[0].name)
    vol_path = dirs[0] / "volume.nrrd"
    assert vol_path.is_file()
    man = json.loads((out / "manifest.json").read_text())
    assert man["command"] == "ingest"
    assert len(man["inputs"]) == 5 and all(len(i["sha256"]) == 64 for i in man["inputs"])
    assert [o["path"] for o in man["outputs"]] == [f"{dirs[0].name}/volume.nrrd"]
    side = man["outputs"][0]["sidecar"]
    assert side["path"] == f"{dirs[0].name}/volume.json" and (out / side["path"]).is_file()
    # the QC report: montage + orthoslices beside each volume, report.html, listed under "qc"
    assert sorted(q["path"] for q in man["qc"]) == sorted([
        f"{dirs[0].name}/qc_montage.png", f"{dirs[0].name}/qc_orthoslices.png", "report.html"])
    assert all((out / q["path"]).is_file() and len(q["sha256"]) == 64 for q in man["qc"])
    assert man["outputs"][0]["geometry"]["n_slices_in"] == 5
    assert "versions" in man
    # the written file equals SimpleITK's own read of the DICOM series
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(study)))
    ref = reader.Execute()
    got = sitk.ReadImage(str(vol_path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(ref))
    np.testing.assert_allclose(got.GetOrigin(), ref.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(got.GetSpacing(), ref.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(got.GetDirection(), ref.GetDirection(), atol=1e-6)
    # no patient identifiers anywhere: file names, manifest, NRRD header, console, log
    everything = "\n".join([_all_text(out), captured.out, captured.err, caplog.text])
    for marker in (NAME_MARKER, ID_MARKER, "../../x", "Jane"):
        assert marker not in everything
    assert not (tmp_path / "x").exists()


def test_ingest_tilted_ct_reports_decision(ge_ct_dir, tmp_path, capsys):
    src = ge_ct_dir
    out = tmp_path / "out"
    assert main(["ingest", str(src), "-o", str(out), "--format", "nii.gz"]) == 0
    text = capsys.readouterr().out
    assert "Gantry tilt 18.5°" in text and "equalised to 1.08 mm" in text
    man = json.loads((out / "manifest.json").read_text())
    assert any("Gantry tilt" in d["decision"] for d in man["decisions"])
    (o,) = man["outputs"]
    assert o["path"].endswith("volume.nii.gz") and o["geometry"]["resampled"]
    assert o["spacing_mm"][2] == pytest.approx(1.0811, abs=1e-3)


def _bad_study(tmp_path) -> Path:
    d = tmp_path / "bad"
    d.mkdir()
    for f in sorted(_ct5n().iterdir()):
        shutil.copy(f, d / f.name)
    victim = sorted(d.iterdir())[2]
    ds = pydicom.dcmread(victim)
    del ds.PixelData
    ds.save_as(victim)
    return d


def test_bad_input_exit_code_one_line_no_output(tmp_path, capsys):
    bad = _bad_study(tmp_path)
    victim = sorted(bad.iterdir())[2].name
    out = tmp_path / "out"
    code = main(["ingest", str(bad), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == DicomError.exit_code
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("medvol: error:") and victim in lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_console_script_bad_input(tmp_path):
    exe = Path(sys.executable).with_name("medvol")
    if not exe.exists():
        exe = shutil.which("medvol")
        assert exe is not None, "medvol console script not installed (pip install -e .)"
    from importlib.metadata import entry_points

    eps = [e.value for e in entry_points(group="console_scripts") if e.name == "medvol"]
    if eps and eps[0] != "medvol.cli:run":
        pytest.fail(f"stale install: the medvol console script calls {eps[0]!r}, not "
                    "'medvol.cli:run' (pyproject) — re-run `pip install -e .`")
    bad = _bad_study(tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "COLUMNS": "200"}
    res = subprocess.run([str(exe), "ingest", str(bad), "-o", str(out)], capture_output=True,
                         text=True, timeout=120, env=env)
    assert res.returncode == DicomError.exit_code
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("medvol: error:") and "PixelData" in lines[0]
    assert not out.exists()


def test_existing_output_untouched(study, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code = main(["ingest", str(study), "-o", str(out)])
    assert code == OutputExistsError.exit_code
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["ingest", str(study), "-o", str(out), "--overwrite"]) == 0
    assert (out / "manifest.json").is_file() and not (out / "keep.txt").exists()


def test_bad_options(study, tmp_path):
    out = tmp_path / "out"
    assert main(["ingest", str(study), "-o", str(out), "--format", "png"]) == InputError.exit_code
    assert main(["ingest", str(study), "-o", str(out), "--resample", "x"]) == InputError.exit_code
    assert main(["ingest", str(tmp_path / "missing"), "-o", str(out)]) == InputError.exit_code
    assert not out.exists()
