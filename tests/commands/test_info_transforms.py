"""``medvol info`` on displacement fields and ITK transform files (issue 19, item 5).

Truth is independent of medvol's reader: a field written with SimpleITK directly, and an affine
transform whose 4×4 matrix is checked against SimpleITK's own ``TransformPoint``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from medvol.cli import main


def _info(capsys, *args) -> tuple[int, str, str]:
    code = main(["info", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_info_reads_an_itk_displacement_field(tmp_path, capsys):
    u = np.zeros((6, 7, 8, 3))
    u[..., :] = (1.0, 2.0, 2.0)                          # |u| = 3 mm everywhere (x, y, z order)
    img = sitk.GetImageFromArray(u, isVector=True)
    img.SetSpacing((1.5, 1.5, 2.0))
    img.SetOrigin((-4.0, 3.0, 10.0))
    tx = sitk.DisplacementFieldTransform(sitk.Cast(img, sitk.sitkVectorFloat64))
    path = tmp_path / "field.h5"
    sitk.WriteTransform(tx, str(path))
    code, out, err = _info(capsys, path, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["kind"] == "displacement field"
    assert d["shape_zyx"] == [6, 7, 8]
    np.testing.assert_allclose(d["spacing_mm"], [1.5, 1.5, 2.0])
    np.testing.assert_allclose(d["origin_lps_mm"], [-4.0, 3.0, 10.0])
    assert d["displacement_mm"]["max"] == pytest.approx(3.0)
    assert d["displacement_mm"]["mean"] == pytest.approx(3.0)
    code, out, _ = _info(capsys, path)
    assert code == 0 and "|u| mm: max 3" in out


def test_info_affine_matrix_matches_itk(tmp_path, capsys):
    tx = sitk.AffineTransform(3)
    tx.SetMatrix([1.0, 0.1, 0.0, -0.05, 0.98, 0.2, 0.0, 0.0, 1.1])
    tx.SetTranslation([1.0, -2.0, 3.0])
    tx.SetCenter([10.0, -5.0, 7.0])
    path = tmp_path / "affine.tfm"
    sitk.WriteTransform(tx, str(path))
    code, out, err = _info(capsys, path, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["type"] == "AffineTransform"
    h = np.asarray(d["matrix_lps"])
    for p in [(0.0, 0.0, 0.0), (12.5, -3.0, 40.0), (-100.0, 50.0, 2.0)]:
        np.testing.assert_allclose(h @ np.r_[p, 1.0], np.r_[tx.TransformPoint(p), 1.0],
                                   atol=1e-9)


def test_info_refuses_garbage_transform_with_one_line(tmp_path, capsys):
    path = tmp_path / "x.h5"
    path.write_bytes(b"not hdf5")
    code, out, err = _info(capsys, path)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("medvol: error:") and "Traceback" not in err
