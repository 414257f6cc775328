"""medvol.io.formats against independent readers: SimpleITK, pynrrd, nibabel, slicerio.

The volumes are oblique (random rotation) with anisotropic spacing, so any swapped axis, missing
transpose or LPS/RAS slip moves world coordinates by millimetres, far above the 1e-4 mm tolerance.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from medvol import Volume
from medvol.errors import GeometryError, InputError, OutputExistsError
from medvol.io import formats, volumes
from medvol.io import read, read_displacement_field, read_segmentation, write
from medvol.io import write_displacement_field, write_segmentation

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
SAMPLE_IJK = [(0, 0, 0), (8, 0, 0), (0, 6, 0), (0, 0, 4), (3, 5, 2), (8, 6, 4)]
TOL_MM = 1e-4


def _rotation(seed: int) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=seed).as_matrix()


@pytest.fixture
def vol() -> Volume:
    rng = np.random.default_rng(0)
    arr = rng.normal(100, 30, size=(5, 7, 9)).astype(np.float32)  # size (i, j, k) = (9, 7, 5)
    return Volume(arr, spacing=(0.65, 0.8, 2.5), origin=(-110.25, 87.5, -42.0),
                  direction=_rotation(7),
                  meta={"modality": "CT", "series_uid_hash": "ab12cd",
                        "PatientName": "Doe^Jane", "patient_id": "12345"})


def _header_text(path) -> str:
    raw = open(path, "rb").read()
    return raw[: raw.index(b"\n\n")].decode("ascii")


def _header_lines(path) -> dict[str, str]:
    out = {}
    for line in _header_text(path).splitlines()[1:]:
        if line.startswith("#"):
            continue
        if ":=" in line:
            k, v = line.split(":=", 1)
        else:
            k, v = line.split(": ", 1)
        out[k] = v
    return out


def _parse_vectors(text: str) -> list:
    out = []
    for tok in text.split():
        out.append(None if tok == "none" else [float(x) for x in tok.strip("()").split(",")])
    return out


# ----------------------------------------------------------------------------- NRRD
def test_nrrd_world_coordinates_sitk_and_pynrrd(vol, tmp_path):
    import nrrd
    import SimpleITK as sitk

    p = write(vol, tmp_path / "ct.nrrd")
    img = sitk.ReadImage(str(p))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), vol.array)
    data, hdr = nrrd.read(str(p), index_order="C")
    np.testing.assert_array_equal(data, vol.array)
    err_sitk = err_pynrrd = 0.0
    sd = np.asarray(hdr["space directions"], float)  # rows = i, j, k vectors (mm)
    org = np.asarray(hdr["space origin"], float)
    for ijk in SAMPLE_IJK:
        want = vol.index_to_world(ijk)
        got = np.array(img.TransformIndexToPhysicalPoint(ijk))
        err_sitk = max(err_sitk, np.abs(got - want).max())
        err_pynrrd = max(err_pynrrd, np.abs(org + np.asarray(ijk) @ sd - want).max())
    print(f"\nNRRD max world discrepancy: SimpleITK {err_sitk:.2e} mm, pynrrd {err_pynrrd:.2e} mm")
    assert err_sitk < TOL_MM and err_pynrrd < TOL_MM
    back = read(p)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-12)


def test_nrrd_header_means_what_pynrrd_writes(vol, tmp_path):
    """medvol's streaming NRRD writer and pynrrd's ``nrrd.write`` give headers with the same
    meaning (space, directions incl. ``none``, origin, kinds, sizes, type, endian, encoding,
    custom fields) for a 3D volume and 4D repeats; pynrrd reads medvol's data exactly."""
    import nrrd

    from medvol.io.nrrd import _nrrd_geometry, _write_nrrd_file

    geo = _nrrd_geometry(vol)
    cases = {
        "3d": (np.asarray(vol.array, np.int16), {**geo, "kinds": ["domain"] * 3}),
        "4d": (np.stack([np.asarray(vol.array, np.float32)] * 2),
               {"space": geo["space"], "space origin": geo["space origin"],
                "space directions": np.vstack([geo["space directions"], [np.nan] * 3]),
                "kinds": ["domain"] * 3 + ["list"]}),
    }
    for name, (data, hdr) in cases.items():
        hdr = {**hdr, "encoding": "gzip", "medvol_units": "HU"}
        ours, theirs = tmp_path / f"{name}_ours.nrrd", tmp_path / f"{name}_pynrrd.nrrd"
        _write_nrrd_file(ours, data, dict(hdr))
        nrrd.write(str(theirs), data, dict(hdr), index_order="C")
        a, b = nrrd.read_header(str(ours)), nrrd.read_header(str(theirs))
        from nrrd.reader import _determine_datatype

        assert _determine_datatype(a) == _determine_datatype(b), name   # "short" = "int16"
        for key in ("dimension", "space", "kinds", "endian", "encoding", "medvol_units"):
            assert a[key] == b[key], (name, key)
        np.testing.assert_array_equal(a["sizes"], b["sizes"])
        np.testing.assert_allclose(a["space origin"], b["space origin"], rtol=1e-15)
        np.testing.assert_allclose(a["space directions"], b["space directions"], rtol=1e-15,
                                   equal_nan=True)
        got, _ = nrrd.read(str(ours), index_order="C")
        np.testing.assert_array_equal(got, data)


def test_nrrd_header_is_slicer_style(vol, tmp_path):
    p = write(vol.with_array(vol.array.astype(np.int16)), tmp_path / "ct.nrrd")
    text = _header_text(p)
    assert text.startswith("NRRD0004\n")
    h = _header_lines(p)
    assert h["type"] == "short"
    assert h["dimension"] == "3"
    assert h["space"] == "left-posterior-superior"
    assert h["sizes"] == "9 7 5"
    assert h["kinds"] == "domain domain domain"
    assert h["endian"] == "little"
    assert h["encoding"] == "gzip"
    np.testing.assert_allclose(np.array(_parse_vectors(h["space directions"])),
                               (vol.direction * vol.spacing).T, atol=1e-12)
    np.testing.assert_allclose(_parse_vectors(h["space origin"])[0], vol.origin)
    assert h["medvol_version"]
    assert h["medvol_modality"] == "CT" and h["medvol_series_uid_hash"] == "ab12cd"
    assert "Doe" not in text and "12345" not in text and "atient" not in text
    assert "space directions: (" in text and "space origin: (" in text  # ':' fields, not ':='
    assert read(p).meta == {"modality": "CT", "series_uid_hash": "ab12cd"}


def test_nrrd_raw_encoding(vol, tmp_path):
    p = write(vol, tmp_path / "ct.nrrd", compress=False)
    h = _header_lines(p)
    assert h["encoding"] == "raw"
    assert os.path.getsize(p) == len(_header_text(p)) + 2 + vol.array.nbytes
    np.testing.assert_array_equal(read(p).array, vol.array)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int32", "float64", "bool", ">i2"])
def test_nrrd_dtypes_read_by_sitk(vol, tmp_path, dtype):
    import SimpleITK as sitk

    arr = (vol.array > 100) if dtype == "bool" else (vol.array - 50).astype(dtype)
    p = write(vol.with_array(arr), tmp_path / "v.nrrd")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(p))), arr)
    np.testing.assert_array_equal(read(p).array, arr)


@pytest.mark.parametrize("space", ["right-anterior-superior", "RAS"])
def test_ras_nrrd_is_converted_to_lps(vol, tmp_path, space):
    import nrrd
    import SimpleITK as sitk

    p = tmp_path / "ras.nrrd"
    ras = vol.affine_ras
    nrrd.write(str(p), vol.array, header={"space": space, "space directions": ras[:3, :3].T,
                                          "space origin": ras[:3, 3],
                                          "kinds": ["domain"] * 3}, index_order="C")
    back = read(p)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-9)
    np.testing.assert_array_equal(back.array, vol.array)
    if space != "RAS":  # ITK knows the long spelling: its LPS geometry must agree with ours
        img = sitk.ReadImage(str(p))
        for ijk in SAMPLE_IJK:
            np.testing.assert_allclose(img.TransformIndexToPhysicalPoint(ijk),
                                       back.index_to_world(ijk), atol=TOL_MM)


def test_detached_nhdr_read(vol, tmp_path):
    import nrrd

    p = tmp_path / "ct.nhdr"
    nrrd.write(str(p), vol.array, header={"space": "left-posterior-superior",
                                          "space directions": vol.affine[:3, :3].T,
                                          "space origin": np.asarray(vol.origin)},
               detached_header=True, index_order="C")
    back = read(p)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-12)


def test_nrrd_without_space_uses_spacings(tmp_path):
    import nrrd

    p = tmp_path / "plain.nrrd"
    nrrd.write(str(p), np.zeros((2, 3, 4), np.int16), header={"spacings": [0.5, 2.0, 3.0]},
               index_order="C")
    v = read(p)
    assert v.spacing == (0.5, 2.0, 3.0) and v.origin == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(v.direction, np.eye(3))


def test_unknown_space_and_4d_rejected(vol, tmp_path):
    import nrrd

    p = tmp_path / "scanner.nrrd"
    nrrd.write(str(p), vol.array, header={"space": "scanner-xyz",
                                          "space directions": np.eye(3)}, index_order="C")
    with pytest.raises(InputError, match="scanner-xyz"):
        read(p)
    f = write_displacement_field(np.zeros(vol.shape + (3,)), tmp_path / "f.nrrd", reference=vol)
    with pytest.raises(InputError, match="read_displacement_field"):
        read(f)


# ----------------------------------------------------------------------------- NIfTI / MHA
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_world_coordinates_nibabel_and_sitk(vol, tmp_path, suffix):
    import nibabel as nib
    import SimpleITK as sitk

    p = write(vol, tmp_path / f"ct{suffix}")
    img = nib.load(p)
    hdr = img.header
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
    np.testing.assert_allclose(hdr.get_qform(), hdr.get_sform(), atol=1e-4)
    assert hdr.get_xyzt_units()[0] == "mm"
    data = np.asanyarray(img.dataobj)
    s_img = sitk.ReadImage(str(p))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(s_img), vol.array)
    err_nib = err_q = err_sitk = 0.0
    for i, j, k in SAMPLE_IJK:
        assert data[i, j, k] == vol.array[k, j, i]
        want = vol.index_to_world((i, j, k))
        err_nib = max(err_nib, np.abs(LPS_TO_RAS @ nib.affines.apply_affine(img.affine, (i, j, k))
                                      - want).max())
        err_q = max(err_q, np.abs(LPS_TO_RAS @ nib.affines.apply_affine(hdr.get_qform(), (i, j, k))
                                  - want).max())
        err_sitk = max(err_sitk, np.abs(np.array(s_img.TransformIndexToPhysicalPoint((i, j, k)))
                                        - want).max())
    print(f"\nNIfTI{suffix} max world discrepancy: nibabel sform {err_nib:.2e} mm, qform "
          f"{err_q:.2e} mm, SimpleITK {err_sitk:.2e} mm")
    assert max(err_nib, err_q, err_sitk) < TOL_MM
    back = read(p)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=TOL_MM)


@pytest.mark.parametrize("suffix", [".mha", ".mhd"])
def test_metaimage_round_trip(vol, tmp_path, suffix):
    import SimpleITK as sitk

    p = write(vol, tmp_path / f"ct{suffix}")
    img = sitk.ReadImage(str(p))
    err = max(np.abs(np.array(img.TransformIndexToPhysicalPoint(ijk))
                     - vol.index_to_world(ijk)).max() for ijk in SAMPLE_IJK)
    print(f"\n{suffix} max world discrepancy: SimpleITK {err:.2e} mm")
    assert err < TOL_MM
    back = read(p)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-12)
    left = sorted(x.name for x in tmp_path.iterdir())
    assert left == (["ct.mha"] if suffix == ".mha" else ["ct.mhd", "ct.zraw"])
    if suffix == ".mhd":
        assert "ElementDataFile = ct.zraw" in (tmp_path / "ct.mhd").read_text()


# ----------------------------------------------------------------------------- errors / atomicity
def test_read_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read(tmp_path / "missing.nrrd")
    with pytest.raises(InputError, match=r"\.png"):
        read(tmp_path / "x.png")
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4 4\nencoding: gzip\n\nxx")
    with pytest.raises(InputError) as e:
        read(bad)
    assert "\n" not in str(e.value)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a nifti")
    with pytest.raises(InputError):
        read(junk)
    with pytest.raises(InputError):
        read(tmp_path)


def test_write_unsupported_suffix(vol, tmp_path):
    with pytest.raises(InputError) as e:
        write(vol, tmp_path / "ct.png")
    assert ".png" in str(e.value) and ".nrrd" in str(e.value) and ".nii.gz" in str(e.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha", ".mhd"])
def test_overwrite_refused_and_allowed(vol, tmp_path, suffix):
    p = write(vol, tmp_path / f"ct{suffix}")
    before = p.read_bytes()
    with pytest.raises(OutputExistsError):
        write(vol.with_array(vol.array * 0), p)
    assert p.read_bytes() == before
    write(vol.with_array(vol.array * 0), p, overwrite=True)
    assert np.all(read(p).array == 0)


@pytest.mark.parametrize("suffix, target", [(".nrrd", "_write_nrrd_file"),
                                            (".nii.gz", "_save_nifti"), (".mha", "_write_sitk"),
                                            (".mhd", "_write_sitk")])
def test_failed_write_leaves_nothing(vol, tmp_path, monkeypatch, suffix, target):
    real = getattr(volumes, target)

    def boom(*args, **kwargs):
        real(*args, **kwargs)  # write a partial file first, then fail
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(volumes, target, boom)
    with pytest.raises(RuntimeError):
        write(vol, tmp_path / f"ct{suffix}")
    assert list(tmp_path.iterdir()) == []
    # with an existing output and overwrite=True the old file survives a failure
    monkeypatch.setattr(volumes, target, real)
    p = write(vol, tmp_path / f"ct{suffix}")
    before = sorted((x.name, x.read_bytes()) for x in tmp_path.iterdir())
    monkeypatch.setattr(volumes, target, boom)
    with pytest.raises(RuntimeError):
        write(vol.with_array(vol.array * 0), p, overwrite=True)
    assert sorted((x.name, x.read_bytes()) for x in tmp_path.iterdir()) == before


# ----------------------------------------------------------------------------- seg.nrrd
@pytest.fixture
def labels(vol) -> Volume:
    lab = np.zeros(vol.shape, np.uint8)
    lab[1:3, 2:5, 1:4] = 1    # k 1..2, j 2..4, i 1..3
    lab[4, 6, 8] = 2          # single voxel at the far corner
    lab[0:2, 0:1, 5:9] = 7
    return vol.with_array(lab)


def test_segmentation_header_and_extents(labels, tmp_path):
    import nrrd

    p = write_segmentation(labels, tmp_path / "s.seg.nrrd",
                           names={1: "liver", 2: "lesion", 9: "empty"}, colors={2: (1, 0, 0)})
    h = _header_lines(p)
    assert h["type"] == "unsigned char" and h["dimension"] == "3"
    assert h["kinds"] == "domain domain domain" and h["space"] == "left-posterior-superior"
    assert h["Segmentation_ContainedRepresentationNames"] == "Binary labelmap|"
    assert "Segmentation_ConversionParameters" in h
    assert h["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert h["Segmentation_ReferenceImageExtentOffset"] == "0 0 0"
    data, _ = nrrd.read(str(p), index_order="C")
    np.testing.assert_array_equal(data, labels.array)
    want = {1: ("liver", "0"), 2: ("lesion", "0"), 7: ("Segment_7", "1"), 9: ("empty", "0")}
    for n, (value, (name, auto)) in enumerate(sorted(want.items())):
        assert h[f"Segment{n}_LabelValue"] == str(value)
        assert h[f"Segment{n}_Name"] == name and h[f"Segment{n}_NameAutoGenerated"] == auto
        assert h[f"Segment{n}_ID"] == f"Segment_{value}"
        assert h[f"Segment{n}_Layer"] == "0"
        assert h[f"Segment{n}_Tags"].endswith("|")
        kji = np.argwhere(data == value)
        if len(kji):
            ext = [kji[:, 2].min(), kji[:, 2].max(), kji[:, 1].min(), kji[:, 1].max(),
                   kji[:, 0].min(), kji[:, 0].max()]
            assert h[f"Segment{n}_Extent"] == " ".join(str(e) for e in ext)
        else:
            assert h[f"Segment{n}_Extent"] == "0 -1 0 -1 0 -1"
    assert h["Segment1_Color"] == "1 0 0" and h["Segment1_ColorAutoGenerated"] == "0"
    assert h["Segment0_ColorAutoGenerated"] == "1"
    assert h["Segment0_Extent"] == "1 3 2 4 1 2"


def test_segmentation_read_by_slicerio(labels, tmp_path):
    slicerio = pytest.importorskip("slicerio")
    p = write_segmentation(labels, tmp_path / "s.seg.nrrd", names={1: "liver"})
    seg = slicerio.read_segmentation(str(p))
    np.testing.assert_array_equal(seg["voxels"], labels.array.transpose(2, 1, 0))  # (i, j, k)
    np.testing.assert_allclose(seg["ijkToLPS"], labels.affine, atol=1e-12)
    assert [s["labelValue"] for s in seg["segments"]] == [1, 2, 7]
    assert [s["name"] for s in seg["segments"]] == ["liver", "Segment_2", "Segment_7"]
    assert seg["segments"][0]["extent"] == [1, 3, 2, 4, 1, 2]
    assert seg["segments"][1]["extent"] == [8, 8, 6, 6, 4, 4]


def test_segmentation_round_trip(labels, tmp_path):
    p = write_segmentation(labels, tmp_path / "s.seg.nrrd", names={7: "bone"},
                           colors={7: (0.9, 0.9, 0.8)})
    lab, segs = read_segmentation(p)
    np.testing.assert_array_equal(lab.array, labels.array)
    np.testing.assert_allclose(lab.affine, labels.affine, atol=1e-12)
    assert [(s["label_value"], s["name"]) for s in segs] == [(1, "Segment_1"), (2, "Segment_2"),
                                                             (7, "bone")]
    assert segs[2]["color"] == (0.9, 0.9, 0.8) and not segs[2]["color_auto_generated"]
    assert segs[1]["extent"] == (8, 8, 6, 6, 4, 4)
    with pytest.raises(OutputExistsError):
        write_segmentation(labels, p)


def test_read_slicer_written_segmentation():
    """A .seg.nrrd saved by 3D Slicer itself (slicerio's sample) reads with the right geometry."""
    slicerio = pytest.importorskip("slicerio")
    import SimpleITK as sitk

    path = slicerio.get_testdata_file("Segmentation.seg.nrrd")
    lab, segs = read_segmentation(path)
    img = sitk.ReadImage(path)
    np.testing.assert_array_equal(lab.array, sitk.GetArrayFromImage(img))
    for ijk in [(0, 0, 0), (127, 0, 0), (5, 100, 33)]:
        np.testing.assert_allclose(lab.index_to_world(ijk), img.TransformIndexToPhysicalPoint(ijk),
                                   atol=TOL_MM)
    ref = slicerio.read_segmentation(path)
    assert [s["name"] for s in segs] == [s["name"] for s in ref["segments"]]
    assert [s["label_value"] for s in segs] == [s["labelValue"] for s in ref["segments"]]
    assert segs[0]["tags"]["TerminologyEntry"].count("~") == 6


def test_segmentation_bad_input(vol, labels, tmp_path):
    with pytest.raises(InputError, match="0–255"):
        write_segmentation(vol.with_array(np.full(vol.shape, 300, np.int32)),
                           tmp_path / "a.seg.nrrd")
    with pytest.raises(InputError, match="whole numbers"):
        write_segmentation(vol, tmp_path / "b.seg.nrrd")
    with pytest.raises(InputError, match="ASCII"):
        write_segmentation(labels, tmp_path / "c.seg.nrrd", names={1: "Leber\u00e4"})
    with pytest.raises(InputError, match="0–1"):
        write_segmentation(labels, tmp_path / "d.seg.nrrd", colors={1: (255, 0, 0)})
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- displacement fields
@pytest.fixture
def field(vol) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.normal(0, 2.0, size=vol.shape + (3,))


def _sample_points(vol):
    return [vol.index_to_world(ijk) for ijk in SAMPLE_IJK]


def test_field_nrrd_header(vol, field, tmp_path):
    p = write_displacement_field(field, tmp_path / "f.nrrd", reference=vol)
    h = _header_lines(p)
    assert h["dimension"] == "4" and h["sizes"] == "3 9 7 5"
    assert h["kinds"] == "vector domain domain domain"
    assert h["space"] == "left-posterior-superior"
    sd = _parse_vectors(h["space directions"])
    assert sd[0] is None
    np.testing.assert_allclose(np.array(sd[1:]), (vol.direction * vol.spacing).T, atol=1e-12)
    np.testing.assert_allclose(_parse_vectors(h["space origin"])[0], vol.origin)
    assert h["measurement frame"] == "(1,0,0) (0,1,0) (0,0,1)"
    assert h["intent_code"] == "1006"
    assert h["displacement field type"] == "resampling"
    assert "space directions: none (" in _header_text(p)


def test_field_nrrd_read_by_sitk_as_transform(vol, field, tmp_path):
    import SimpleITK as sitk

    p = write_displacement_field(field, tmp_path / "f.nrrd", reference=vol)
    img = sitk.ReadImage(str(p))
    assert img.GetNumberOfComponentsPerPixel() == 3 and img.GetSize() == vol.size_xyz
    np.testing.assert_allclose(sitk.GetArrayFromImage(img), field, atol=0)
    np.testing.assert_allclose(img.GetOrigin(), vol.origin, atol=1e-12)
    np.testing.assert_allclose(img.GetSpacing(), vol.spacing, atol=1e-12)
    np.testing.assert_allclose(np.array(img.GetDirection()).reshape(3, 3), vol.direction,
                               atol=1e-12)
    tx = sitk.DisplacementFieldTransform(sitk.Cast(img, sitk.sitkVectorFloat64))
    err = 0.0
    for (i, j, k), x in zip(SAMPLE_IJK, _sample_points(vol)):
        err = max(err, np.abs(np.array(tx.TransformPoint(tuple(x))) - (x + field[k, j, i])).max())
    print(f"\nfield NRRD via SimpleITK TransformPoint: max |x+u(x) - T(x)| = {err:.2e} mm")
    assert err < TOL_MM


@pytest.mark.parametrize("suffix", [".h5", ".tfm"])
def test_field_itk_transform_file(vol, field, tmp_path, suffix):
    import SimpleITK as sitk

    p = write_displacement_field(field, tmp_path / f"f{suffix}", reference=vol)
    tx = sitk.ReadTransform(str(p))
    err = 0.0
    for (i, j, k), x in zip(SAMPLE_IJK, _sample_points(vol)):
        err = max(err, np.abs(np.array(tx.TransformPoint(tuple(x))) - (x + field[k, j, i])).max())
    print(f"\nfield {suffix} via sitk.ReadTransform: max |x+u(x) - T(x)| = {err:.2e} mm")
    assert err < TOL_MM
    u, grid = read_displacement_field(p)
    np.testing.assert_allclose(u, field, atol=1e-12)
    assert grid.same_grid(vol, atol=1e-9)
    np.testing.assert_allclose(grid.array, np.linalg.norm(field, axis=-1))
    assert [x.name for x in tmp_path.iterdir()] == [f"f{suffix}"]


def test_field_nrrd_round_trip_and_kind(vol, field, tmp_path):
    u, grid = read_displacement_field(
        write_displacement_field(field, tmp_path / "f.nrrd", reference=vol))
    np.testing.assert_allclose(u, field, atol=0)
    np.testing.assert_allclose(grid.affine, vol.affine, atol=1e-12)
    assert grid.meta["displacement_field_type"] == "resampling"
    p = write_displacement_field(field, tmp_path / "m.nrrd", reference=vol, kind="modeling")
    assert _header_lines(p)["displacement field type"] == "modeling"
    assert read_displacement_field(p)[1].meta["displacement_field_type"] == "modeling"
    with pytest.raises(InputError, match="resampling"):
        write_displacement_field(field, tmp_path / "m.h5", reference=vol, kind="modeling")
    with pytest.raises(InputError, match="shape"):
        write_displacement_field(field[:-1], tmp_path / "x.nrrd", reference=vol)
    with pytest.raises(OutputExistsError):
        write_displacement_field(field, tmp_path / "f.nrrd", reference=vol)


def test_ras_field_nrrd_components_flipped(vol, field, tmp_path):
    """A field stored in RAS (geometry and vectors) reads back as the same LPS field."""
    import nrrd

    ras = vol.affine_ras
    sd = np.full((4, 3), np.nan)
    sd[1:] = ras[:3, :3].T
    u_ras = field * np.array([-1.0, -1.0, 1.0])
    p = tmp_path / "ras.nrrd"
    nrrd.write(str(p), u_ras, header={"space": "right-anterior-superior", "space directions": sd,
                                      "space origin": ras[:3, 3],
                                      "kinds": ["vector", "domain", "domain", "domain"]},
               index_order="C")
    u, grid = read_displacement_field(p)
    np.testing.assert_allclose(u, field, atol=1e-12)
    np.testing.assert_allclose(grid.affine, vol.affine, atol=1e-9)


def test_constant_translation_warp_matches_hand_computation(vol, tmp_path):
    """Resampling with a field of exactly (+1 voxel in i, +2 in k) shifts the array by hand."""
    import SimpleITK as sitk

    t = vol.direction @ (np.asarray(vol.spacing) * np.array([1.0, 0.0, 2.0]))  # LPS mm
    u = np.broadcast_to(t, vol.shape + (3,)).copy()
    p = write_displacement_field(u, tmp_path / "t.h5", reference=vol)
    tx = sitk.ReadTransform(str(p))
    moving = vol.to_sitk()
    out = sitk.GetArrayFromImage(sitk.Resample(moving, moving, tx, sitk.sitkLinear, -999.0))
    want = np.full(vol.shape, -999.0, np.float32)
    want[:-2, :, :-1] = vol.array[2:, :, 1:]  # out[k, j, i] = moving[k + 2, j, i + 1]
    np.testing.assert_allclose(out, want, atol=1e-3)


def test_voxel_ddf_to_lps_mm_matches_sitk(vol):
    import SimpleITK as sitk

    rng = np.random.default_rng(2)
    ddf = rng.normal(0, 1.5, size=(3,) + vol.shape)  # (dz, dy, dx) voxels
    u = formats.voxel_ddf_to_lps_mm(ddf, vol)
    assert u.shape == vol.shape + (3,)
    img = vol.to_sitk()
    err = 0.0
    for i, j, k in SAMPLE_IJK:
        dz, dy, dx = ddf[:, k, j, i]
        a = np.array(img.TransformContinuousIndexToPhysicalPoint((i + dx, j + dy, k + dz)))
        b = np.array(img.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k))))
        err = max(err, np.abs((a - b) - u[k, j, i]).max())
    assert err < 1e-9
    # and the written field moves voxel centres to the index-space target (point warp)
    tx = sitk.DisplacementFieldTransform(formats.field_image(u, vol))
    for i, j, k in SAMPLE_IJK:
        dz, dy, dx = ddf[:, k, j, i]
        x = img.TransformIndexToPhysicalPoint((i, j, k))
        target = img.TransformPhysicalPointToContinuousIndex(tx.TransformPoint(x))
        np.testing.assert_allclose(target, (i + dx, j + dy, k + dz), atol=1e-6)
    with pytest.raises(GeometryError):
        formats.voxel_ddf_to_lps_mm(ddf[:, :-1], vol)
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(formats.voxel_ddf_to_lps_mm(torch.as_tensor(ddf), vol), u)


# ----------------------------------------------------------------------------- orientation
def test_orientation_code_matches_nibabel():
    import itertools

    import nibabel as nib

    assert formats.orientation_code(np.eye(3)) == "LPS"
    assert formats.orientation_code(np.diag([-1.0, -1.0, 1.0])) == "RAS"
    assert formats.orientation_code(np.diag([1.0, -1.0, -1.0])) == "LAI"
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(4)
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product([1.0, -1.0], repeat=3):
            p = np.zeros((3, 3))
            p[list(perm), range(3)] = signs
            # tilt by a few degrees so the nearest code is unambiguous
            r = Rotation.from_rotvec(rng.normal(size=3) * 0.1).as_matrix() @ p
            v = Volume(np.zeros((2, 2, 2)), direction=r)
            assert formats.orientation_code(r) == "".join(nib.aff2axcodes(v.affine_ras))


# ----------------------------------------------------------------------------- medvol info
def _cli_main():
    from medvol.cli import main  # an ImportError here fails the test (never a skip)

    return main


def test_info_cli_text_and_json(vol, tmp_path, capsys):
    main = _cli_main()
    p = write(vol, tmp_path / "ct.nrrd")
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "spacing (x, y, z) mm: (0.65, 0.8, 2.5)" in out
    assert "origin (LPS) mm:      (-110.25, 87.5, -42)" in out
    assert "Doe" not in out and "12345" not in out
    assert main(["info", str(p), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(d["spacing_mm"], vol.spacing)
    np.testing.assert_allclose(d["origin_lps_mm"], vol.origin)
    np.testing.assert_allclose(d["ijk_to_lps"], vol.affine, atol=1e-12)
    assert d["shape_zyx"] == [5, 7, 9] and d["size_ijk"] == [9, 7, 5]
    assert d["orientation"] == formats.orientation_code(vol.direction)
    assert d["value_range"][0] == pytest.approx(float(vol.array.min()))
    assert d["meta"] == {"modality": "CT", "series_uid_hash": "ab12cd"}
    assert main(["info", str(tmp_path / "nope.nrrd")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.nrrd" in err


def test_info_command_function(vol, tmp_path):
    """The command works through typer even before medvol.cli registers every command."""
    import typer
    from typer.testing import CliRunner

    from medvol.commands.info import info

    app = typer.Typer()
    app.command("info")(info)
    app.command("noop")(lambda: None)  # force sub-command mode
    p = write(vol, tmp_path / "ct.nii.gz")
    r = CliRunner().invoke(app, ["info", str(p), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    np.testing.assert_allclose(d["origin_lps_mm"], vol.origin, atol=TOL_MM)
    r = CliRunner().invoke(app, ["info", "--help"])
    assert "Example" in r.output and "--json" in r.output


def test_info_dicom_folder(capsys, shared_data):
    """A DICOM folder prints one block per series (same geometry as read_dicom_series)."""
    folder = shared_data / "dicom" / "transfer_syntaxes"
    main = _cli_main()
    from medvol.io import read_dicom_series

    vols = read_dicom_series(folder)
    capsys.readouterr()
    assert main(["info", str(folder), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["series"]) == len(vols) >= 1
    for s, v in zip(d["series"], vols):
        assert s["shape_zyx"] == list(v.shape)
        np.testing.assert_allclose(s["ijk_to_lps"], v.affine, atol=1e-9)
