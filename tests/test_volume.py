"""Volume geometry and its conversions, checked against SimpleITK, nibabel and MONAI.

Independent truth: SimpleITK's ``TransformIndexToPhysicalPoint`` and slicing, nibabel's affine
(RAS), MONAI's own NIfTI loader. Every case uses an oblique (random rotation) direction and
anisotropic spacing so axis-order or transpose mistakes cannot cancel out.
"""
from __future__ import annotations

import numpy as np
import pytest

from medvol import Volume
from medvol.errors import GeometryError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
SAMPLE_IJK = [(0, 0, 0), (7, 0, 0), (0, 6, 0), (0, 0, 4), (3, 5, 2), (7, 6, 4)]


def _rotation(seed: int) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=seed).as_matrix()


@pytest.fixture(params=["proper", "improper"])
def vol(request) -> Volume:
    rng = np.random.default_rng(3)
    d = _rotation(11)
    if request.param == "improper":  # left-handed grid (det = -1), e.g. flipped slice order
        d = d @ np.diag([1.0, 1.0, -1.0])
    arr = rng.normal(size=(5, 7, 8)).astype(np.float32)  # (z, y, x) -> size (i, j, k) = (8, 7, 5)
    return Volume(arr, spacing=(0.6, 0.9, 2.5), origin=(-31.5, 12.25, 104.0), direction=d,
                  meta={"modality": "CT"})


def test_index_to_world_matches_sitk(vol):
    img = vol.to_sitk()
    err = max(np.abs(np.array(img.TransformIndexToPhysicalPoint(ijk))
                     - vol.index_to_world(ijk)).max() for ijk in SAMPLE_IJK)
    assert err < 1e-9
    # affine agrees with index_to_world, and world_to_index inverts it
    pts = np.array(SAMPLE_IJK, float) + 0.25
    world = vol.index_to_world(pts)
    homog = np.c_[pts, np.ones(len(pts))] @ vol.affine.T
    np.testing.assert_allclose(homog[:, :3], world, atol=1e-12)
    np.testing.assert_allclose(vol.world_to_index(world), pts, atol=1e-10)


def test_sitk_round_trip(vol):
    import SimpleITK as sitk

    img = vol.to_sitk()
    assert img.GetSize() == vol.size_xyz
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), vol.array)
    np.testing.assert_allclose(np.array(img.GetDirection()).reshape(3, 3), vol.direction)
    back = Volume.from_sitk(img)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-12)
    # a SimpleITK-built image (not ours) converts to the same world coordinates
    ref = sitk.Image(4, 3, 2, sitk.sitkFloat32)
    ref.SetSpacing((0.5, 2.0, 3.0))
    ref.SetOrigin((1.0, -2.0, 3.0))
    ref.SetDirection(tuple(_rotation(5).ravel()))
    ref[3, 1, 0] = 7.0  # SimpleITK indexes (x, y, z)
    v = Volume.from_sitk(ref)
    assert v.shape == (2, 3, 4) and v.array[0, 1, 3] == 7.0
    np.testing.assert_allclose(v.index_to_world((3, 1, 0)),
                               ref.TransformIndexToPhysicalPoint((3, 1, 0)), atol=1e-12)


def test_nibabel_round_trip_is_ras(vol):
    import nibabel as nib

    img = vol.to_nibabel()
    data = np.asanyarray(img.dataobj)
    assert data.shape == vol.size_xyz  # nibabel: (x, y, z)
    hdr = img.header
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
    np.testing.assert_allclose(hdr.get_qform(), hdr.get_sform(), atol=1e-5)
    err = 0.0
    for i, j, k in SAMPLE_IJK:
        assert data[i, j, k] == vol.array[k, j, i]
        ras = nib.affines.apply_affine(img.affine, (i, j, k))
        err = max(err, np.abs(LPS_TO_RAS @ ras - vol.index_to_world((i, j, k))).max())
    assert err < 1e-5  # NIfTI holds its affine in float32 (~1e-7 relative)
    back = Volume.from_nibabel(img)
    np.testing.assert_array_equal(back.numpy(), vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)


def test_nibabel_qform_survives_save(vol, tmp_path):
    """After a file round trip the *qform* alone (float32 quaternion) still gives LPS geometry."""
    import nibabel as nib

    p = tmp_path / "v.nii"
    nib.save(vol.to_nibabel(), p)
    img = nib.load(p)
    q = img.header.get_qform()
    for ijk in SAMPLE_IJK:
        lps = LPS_TO_RAS @ nib.affines.apply_affine(q, ijk)
        np.testing.assert_allclose(lps, vol.index_to_world(ijk), atol=1e-4)


def test_metatensor_round_trip(vol):
    pytest.importorskip("monai")
    import torch

    mt = vol.to_metatensor()
    assert tuple(mt.shape) == (1,) + vol.size_xyz  # channel-first (1, x, y, z)
    aff = np.asarray(mt.affine, dtype=float)
    for i, j, k in SAMPLE_IJK:
        assert float(mt[0, i, j, k]) == float(vol.array[k, j, i])
        ras = aff @ np.array([i, j, k, 1.0])
        np.testing.assert_allclose(LPS_TO_RAS @ ras[:3], vol.index_to_world((i, j, k)),
                                   atol=1e-9)
    back = Volume.from_metatensor(mt)
    np.testing.assert_array_equal(back.numpy(), vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-10)
    # a tensor-backed Volume converts too, and an LPS-declared MetaTensor is honoured
    tv = vol.with_array(torch.as_tensor(vol.array))
    np.testing.assert_allclose(np.asarray(tv.to_metatensor().affine), aff)
    from monai.data import MetaTensor

    lps_mt = MetaTensor(mt.as_tensor(), affine=torch.as_tensor(vol.affine), meta={"space": "LPS"})
    np.testing.assert_allclose(Volume.from_metatensor(lps_mt).affine, vol.affine, atol=1e-10)


def test_metatensor_matches_monai_loader(vol, tmp_path):
    """MONAI's own NIfTI reader yields the same MetaTensor convention as ``to_metatensor``."""
    pytest.importorskip("monai")
    import nibabel as nib
    from monai.transforms import LoadImage

    p = tmp_path / "v.nii.gz"
    nib.save(vol.to_nibabel(), p)
    mt = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True)(str(p))
    ours = vol.to_metatensor()
    assert tuple(mt.shape) == tuple(ours.shape)
    np.testing.assert_allclose(np.asarray(mt), np.asarray(ours), atol=0)
    np.testing.assert_allclose(np.asarray(mt.affine), np.asarray(ours.affine), atol=1e-4)
    back = Volume.from_metatensor(mt)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)


@pytest.mark.parametrize("key", [
    (slice(1, 4), slice(2, 7), slice(3, 8)),
    (slice(None, None, 2), slice(1, None, 3), slice(0, 7, 2)),
    (slice(4, 5), slice(None), slice(5, 1000, 4)),
])
def test_slicing_matches_sitk(vol, key):
    import SimpleITK as sitk

    sub = vol[key]
    ks, js, is_ = key
    ref = vol.to_sitk()[is_, js, ks]  # SimpleITK slices in (x, y, z) order
    np.testing.assert_array_equal(sub.array, sitk.GetArrayFromImage(ref))
    np.testing.assert_allclose(sub.spacing, ref.GetSpacing(), atol=1e-12)
    np.testing.assert_allclose(sub.origin, ref.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(sub.direction.ravel(), ref.GetDirection(), atol=1e-12)
    # a voxel of the crop sits where the same voxel of the original sits
    k0, j0, i0 = (s.indices(n)[0] for s, n in zip(key, vol.shape))
    sk, sj, si = (s.indices(n)[2] for s, n in zip(key, vol.shape))
    np.testing.assert_allclose(sub.index_to_world((0, 0, 0)), vol.index_to_world((i0, j0, k0)))
    if all(n > 1 for n in sub.shape):
        np.testing.assert_allclose(sub.index_to_world((1, 1, 1)),
                                   vol.index_to_world((i0 + si, j0 + sj, k0 + sk)), atol=1e-9)


def test_slicing_rejects_what_it_cannot_represent(vol):
    with pytest.raises(TypeError):
        vol[::-1]
    with pytest.raises(TypeError):
        vol[0]
    assert vol[1:].shape == (4, 7, 8)  # missing trailing slices mean ':'


def test_invalid_geometry_rejected():
    with pytest.raises(GeometryError):
        Volume(np.zeros((2, 2)))
    with pytest.raises(GeometryError):
        Volume(np.zeros((2, 2, 2)), direction=[[1, 0.3, 0], [0, 1, 0], [0, 0, 1]])  # sheared
    with pytest.raises(GeometryError):
        Volume(np.zeros((2, 2, 2)), spacing=(1, 0, 1))
    with pytest.raises(GeometryError):
        Volume(np.zeros((2, 2, 2)), origin=(0, np.nan, 0))
    with pytest.raises(GeometryError):
        Volume(np.zeros((2, 2, 2))).with_array(np.zeros((2, 2, 3)))


def test_meta_is_read_only(vol):
    with pytest.raises(TypeError):
        vol.meta["modality"] = "MR"
    assert vol.with_array(vol.array, units="HU").meta == {"modality": "CT", "units": "HU"}
