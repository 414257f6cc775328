"""Field conventions (Slicer/ITK), label warping vs SimpleITK, and registration metrics."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sitk = pytest.importorskip("SimpleITK")

from medvol import Volume  # noqa: E402
from medvol.io.formats import voxel_ddf_to_lps_mm, write_displacement_field  # noqa: E402
from medvol.models.micdir import warp  # noqa: E402
from medvol.registration.learned import lps_mm_to_voxel_ddf  # noqa: E402
from medvol.registration.metrics import (dice_per_structure, folding_percent,  # noqa: E402
                                         inverse_consistency_error, jacobian_determinant,
                                         target_registration_error)


def _oblique_volume(shape=(18, 22, 20)):
    """Anisotropic spacing and a rotated direction: axis-order or scale bugs cannot cancel."""
    a = np.deg2rad(20.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    b = np.deg2rad(10.0)
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return Volume(np.zeros(shape, np.float32), spacing=(1.2, 0.9, 2.0), origin=(-10.0, 5.0, 30.0),
                  direction=rot @ rx)


def _smooth_ddf(shape, amp=2.0, seed=0):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    d = np.stack([gaussian_filter(rng.standard_normal(shape), 4) for _ in range(3)])
    return (amp * d / np.abs(d).max()).astype(np.float32)


def _blob(shape, seed=1):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.standard_normal(shape), 2.5).astype(np.float32)


@pytest.mark.parametrize("suffix", [".nrrd", ".h5"])
def test_written_field_reproduces_torch_warp_in_simpleitk(tmp_path, suffix):
    """The Slicer convention check: medvol's field file + SimpleITK's DisplacementFieldTransform
    resample the moving image exactly as medvol's own (torch) warp does."""
    ref = _oblique_volume()
    moving = ref.with_array(_blob(ref.shape))
    ddf = _smooth_ddf(ref.shape)
    ours = warp(torch.as_tensor(moving.array)[None, None], torch.as_tensor(ddf)[None])[0, 0].numpy()
    u_mm = voxel_ddf_to_lps_mm(ddf, ref)
    path = write_displacement_field(u_mm, tmp_path / f"field{suffix}", reference=ref)
    if suffix == ".nrrd":
        fimg = sitk.ReadImage(str(path), sitk.sitkVectorFloat64)
        tx = sitk.DisplacementFieldTransform(fimg)
    else:
        tx = sitk.ReadTransform(str(path))
    out = sitk.GetArrayFromImage(sitk.Resample(moving.to_sitk(), ref.to_sitk(), tx, sitk.sitkLinear,
                                               0.0, sitk.sitkFloat32))
    inner = (slice(3, -3),) * 3
    scale = np.abs(moving.array).max()
    assert np.abs(out - ours)[inner].max() < 1e-4 * scale
    # and the round trip back to voxels is exact
    assert np.allclose(lps_mm_to_voxel_ddf(u_mm, ref), ddf, atol=1e-5)


def test_label_warp_matches_simpleitk_nearest():
    ref = _oblique_volume((20, 24, 22))
    rng = np.random.default_rng(3)
    from scipy.ndimage import zoom

    labels = zoom(rng.integers(0, 6, (5, 6, 5)), (4, 4, 4.4), order=0)[:20, :24, :22].astype(np.float32)
    ddf = _smooth_ddf(ref.shape, amp=2.7, seed=5)
    ours = warp(torch.as_tensor(labels)[None, None], torch.as_tensor(ddf)[None], mode="nearest")[0, 0]
    img = sitk.GetImageFromArray(voxel_ddf_to_lps_mm(ddf, ref), isVector=True)
    img.SetSpacing(ref.spacing)
    img.SetOrigin(ref.origin)
    img.SetDirection(tuple(ref.direction.ravel()))
    tx = sitk.DisplacementFieldTransform(img)
    lab = ref.with_array(labels).to_sitk()
    theirs = sitk.GetArrayFromImage(sitk.Resample(lab, ref.to_sitk(), tx, sitk.sitkNearestNeighbor, 0.0))
    agree = np.mean(ours.numpy() == theirs)
    assert agree > 0.995  # only exact half-voxel ties may round differently
    assert len(np.unique(theirs)) > 3


def test_dice_known_overlap():
    a = np.zeros((10, 10, 10), int)
    b = np.zeros_like(a)
    a[2:6, 2:6, 2:6] = 1          # 64 voxels
    b[3:7, 2:6, 2:6] = 1          # 64 voxels, overlap 48
    a[8:, 8:, 8:] = 2
    d = dice_per_structure(b, a)
    assert d[1] == pytest.approx(2 * 48 / 128)
    assert d[2] == 0.0
    assert dice_per_structure(a, a) == {1: 1.0, 2: 1.0}


def _grid_points(ref):
    pts = ref.index_to_world(np.stack(np.meshgrid(*[np.arange(n) for n in ref.size_xyz],
                                                  indexing="ij"), -1))
    return np.transpose(pts, (2, 1, 0, 3))  # (z, y, x, 3) LPS


def test_jacobian_matches_simpleitk_on_axis_aligned_grid():
    ref = Volume(np.zeros((20, 24, 22)), spacing=(1.2, 0.9, 2.0), origin=(3.0, -4.0, 1.0))
    u = voxel_ddf_to_lps_mm(_smooth_ddf(ref.shape, amp=3.0, seed=7), ref)
    ours = jacobian_determinant(u, tuple(reversed(ref.spacing)), ref.direction)
    fimg = sitk.GetImageFromArray(u, isVector=True)
    fimg.SetSpacing(ref.spacing)
    fimg.SetOrigin(ref.origin)
    theirs = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(fimg))
    inner = (slice(2, -2),) * 3
    assert np.abs(ours - theirs)[inner].max() < 1e-9
    assert ours.min() < 0.95 < 1.05 < ours.max()  # a non-trivial field


def test_jacobian_oblique_grid_affine_field_is_exact():
    """ITK's filter ignores the grid direction; ours must not: u(x) = (M - I) x has det J = det M
    in physical space whatever the grid's orientation."""
    ref = _oblique_volume((12, 14, 10))
    m = np.array([[1.1, 0.2, 0.0], [-0.1, 0.9, 0.3], [0.05, 0.0, 1.2]])
    x = _grid_points(ref)
    u = x @ (m - np.eye(3)).T
    j = jacobian_determinant(u, tuple(reversed(ref.spacing)), ref.direction)
    assert np.allclose(j, np.linalg.det(m), atol=1e-9)
    assert folding_percent(np.zeros(ref.shape + (3,))) == 0.0
    flip = np.zeros_like(x)
    flip[..., 0] = -2 * x[..., 0]  # x -> -x along L: det J = -1 everywhere
    assert folding_percent(flip, tuple(reversed(ref.spacing)), ref.direction) == 100.0


def test_inverse_consistency_and_tre():
    shape = (12, 14, 10)
    t = np.array([1.5, -2.0, 0.5]).reshape(3, 1, 1, 1) * np.ones((3,) + shape)
    mask = np.zeros(shape, bool)
    mask[4:8, 4:10, 3:7] = True
    assert inverse_consistency_error(t, -t, (2.0, 1.0, 1.0), mask=mask) == pytest.approx(0, abs=1e-9)
    e = inverse_consistency_error(t, np.zeros_like(t), (2.0, 1.0, 1.0), mask=mask)
    assert e == pytest.approx(np.linalg.norm([3.0, -2.0, 0.5]))
    ref = Volume(np.zeros(shape), spacing=(1.0, 1.0, 2.0))
    u = np.zeros(shape + (3,))
    u[..., 0] = 4.0
    f = np.array([[3.0, 4.0, 6.0], [5.0, 6.0, 8.0]])
    r = target_registration_error(f, f + [4.0, 0, 0], u, ref)
    assert r["tre_mean_mm"] == pytest.approx(0.0, abs=1e-9) and r["n"] == 2
    assert target_registration_error(f, f, u, ref)["tre_mean_mm"] == pytest.approx(4.0)
