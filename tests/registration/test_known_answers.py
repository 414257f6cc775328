"""Known-answer tests of every registration method (issue 20).

A real brain MRI (IXI T1 from ``../shared/data/mri/ixi10``, 148 DLMUSE labels) is the MOVING
image. The FIXED image is the moving image resampled through a known smooth deformation
``u_true`` (resampling convention: fixed point ``x`` ↦ moving point ``x + u_true(x)``, LPS mm)
with scipy's ``map_coordinates`` — independently of medvol's own warping code. ``medvol
register`` then runs through the CLI entry point, and the checks are recomputed **from the files
it writes**: the displacement field (``displacement.nrrd`` read with pynrrd and
``displacement.h5`` read with SimpleITK) is compared with ``u_true`` over the brain mask (median
and 90th percentile of the vector error, mm), and the warped label file gives a mean Dice against
the truly deformed labels.

Thresholds were set from measurement with a margin (measured values in the comments), so that
a method returning a zero / identity field — whose error is ``|u_true|`` itself (median ≈ 3.7 mm
here) and whose Dice is the "before" Dice — fails.
"""
from __future__ import annotations

import numpy as np
import pytest

nrrd = pytest.importorskip("nrrd")
sitk = pytest.importorskip("SimpleITK")

from medvol import Volume  # noqa: E402
from medvol.cli import main  # noqa: E402

SUBJECT = "IXI012-HH-1211-T1_ds"


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return a
    z, y, x = (n // f for n in a.shape)
    return a[:z * f, :y * f, :x * f].reshape(z, f, y, f, x, f).mean((1, 3, 5))


def _make_pair(shared_data, out, factor: int) -> dict:
    """Moving = IXI T1 (2 mm × ``factor``), fixed = moving through ``u_true``; files in ``out``."""
    import nibabel as nib
    from scipy.ndimage import gaussian_filter, map_coordinates

    import medvol.io as mio

    root = shared_data / "mri" / "ixi10"
    t1 = np.asarray(nib.load(root / "t1" / f"{SUBJECT}.nii.gz").dataobj, np.float32)
    lab = np.asarray(nib.load(root / "labels" / f"{SUBJECT}_DLMUSE.nii.gz").dataobj)
    a = _block_mean(t1.transpose(2, 1, 0), factor).astype(np.float32)      # (z, y, x)
    lab = lab.transpose(2, 1, 0)[::factor, ::factor, ::factor].astype(np.int16)
    sp = 2.0 * factor
    shape = a.shape
    # smooth random deformation (σ 20 mm, max 5 mm) plus a shift (2, -3, 1) mm: LPS (x, y, z)
    rng = np.random.default_rng(20)
    u = np.stack([gaussian_filter(rng.standard_normal(shape), 20.0 / sp) for _ in range(3)], -1)
    u *= 5.0 / np.abs(u).max()
    u += np.array([2.0, -3.0, 1.0])
    origin = (-sp * shape[2] / 2, -sp * shape[1] / 2, -sp * shape[0] / 2)
    moving = Volume(a, spacing=(sp, sp, sp), origin=origin)      # identity direction
    zz, yy, xx = np.indices(shape, dtype=np.float64)
    coords = [zz + u[..., 2] / sp, yy + u[..., 1] / sp, xx + u[..., 0] / sp]
    fixed = moving.with_array(map_coordinates(a, coords, order=1, mode="constant").astype(np.float32))
    flab = map_coordinates(lab, coords, order=0, mode="constant").astype(np.int16)
    out.mkdir(parents=True)
    paths = {"fixed": mio.write(fixed, out / "fixed.nrrd"),
             "moving": mio.write(moving, out / "moving.nrrd"),
             "labels": mio.write(moving.with_array(lab), out / "moving_labels.nrrd")}
    return {"paths": paths, "u": u, "mask": flab > 0, "flab": flab, "lab": lab, "moving": a}


@pytest.fixture(scope="module")
def pair_2mm(shared_data, tmp_path_factory):
    return _make_pair(shared_data, tmp_path_factory.mktemp("ka") / "pair2", 1)


@pytest.fixture(scope="module")
def pair_4mm(shared_data, tmp_path_factory):
    return _make_pair(shared_data, tmp_path_factory.mktemp("ka") / "pair4", 2)


def _mean_dice(a: np.ndarray, b: np.ndarray) -> float:
    out = []
    for k in np.unique(b):
        if k == 0:
            continue
        den = np.sum(a == k) + np.sum(b == k)
        out.append(2.0 * np.sum((a == k) & (b == k)) / den)
    return float(np.mean(out))


def _run(pair, out, method: str, *extra: str) -> dict:
    """``medvol register`` via the CLI; returns field errors and Dice recomputed from the files."""
    p = pair["paths"]
    code = main(["register", str(p["fixed"]), str(p["moving"]), "-o", str(out), "--method", method,
                 "--labels", str(p["labels"]), *extra])
    assert code == 0
    u_nrrd, hdr = nrrd.read(str(out / "displacement.nrrd"), index_order="C")   # (z, y, x, 3)
    assert hdr["kinds"][0] == "vector" and u_nrrd.shape == pair["u"].shape
    np.testing.assert_allclose(np.asarray(hdr["space directions"][1:], float),
                               np.diag(np.diag(hdr["space directions"][1:].astype(float))))
    u_h5 = sitk.GetArrayFromImage(_read_h5_field(out / "displacement.h5"))
    np.testing.assert_allclose(u_h5, u_nrrd, atol=1e-3)     # the two written fields agree
    err = np.linalg.norm(u_nrrd - pair["u"], axis=-1)[pair["mask"]]
    wl = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "warped_labels.seg.nrrd")))
    wl = wl.reshape(pair["flab"].shape) if wl.size == pair["flab"].size else wl[..., 0]
    # warped.nrrd is the moving image through the written field (scipy, on the moving array)
    from scipy.ndimage import map_coordinates

    sp = float(np.diag(hdr["space directions"][1:].astype(float))[0])
    zz, yy, xx = np.indices(u_nrrd.shape[:3], dtype=np.float64)
    mov = pair["moving"]
    expect = map_coordinates(mov, [zz + u_nrrd[..., 2] / sp, yy + u_nrrd[..., 1] / sp,
                                   xx + u_nrrd[..., 0] / sp], order=1, mode="constant")
    warped = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "warped.nrrd")))
    inner = pair["mask"]
    assert np.median(np.abs(warped[inner] - expect[inner])) < 1e-3 * float(np.ptp(mov))
    return {"median": float(np.median(err)), "p90": float(np.percentile(err, 90)),
            "dice": _mean_dice(wl, pair["flab"]),
            "dice_before": _mean_dice(pair["lab"], pair["flab"]),
            "zero_median": float(np.median(np.linalg.norm(pair["u"], axis=-1)[pair["mask"]]))}


def _read_h5_field(path):
    """The displacement image of an ITK ``DisplacementFieldTransform`` file (SimpleITK)."""
    tx = sitk.ReadTransform(str(path))
    if tx.GetName() == "CompositeTransform":
        tx = sitk.CompositeTransform(tx).GetNthTransform(0)
    return sitk.DisplacementFieldTransform(tx).GetDisplacementField()


def test_identity_field_fails_these_thresholds(pair_2mm, pair_4mm):
    """Sanity of the thresholds below: a zero field has error |u_true| and the 'before' Dice."""
    for pair in (pair_2mm, pair_4mm):
        z = np.linalg.norm(pair["u"], axis=-1)[pair["mask"]]
        assert np.median(z) > 3.4 and np.percentile(z, 90) > 4.2
        assert _mean_dice(pair["lab"], pair["flab"]) < 0.47


def test_affine_known_answer(pair_4mm, tmp_path):
    r = _run(pair_4mm, tmp_path / "affine", "affine")
    assert r["median"] < 1.3 and r["p90"] < 2.0, r   # measured 0.95 / 1.49 mm (zero field 3.68)
    assert r["dice"] > 0.70, r                       # measured 0.749 (before 0.437)
    # the ITK affine transform file (what Slicer loads) is the same mapping as the dense field
    out = tmp_path / "affine"
    tx = sitk.ReadTransform(str(out / "affine.tfm"))
    field = sitk.ReadImage(str(out / "displacement.nrrd"))
    u = sitk.GetArrayFromImage(field)                # (z, y, x, 3) LPS mm
    for idx in [(0, 0, 0), (5, 9, 3), (field.GetSize()[0] - 1, 4, field.GetSize()[2] - 1)]:
        x = np.asarray(field.TransformIndexToPhysicalPoint(idx))
        np.testing.assert_allclose(np.asarray(tx.TransformPoint(tuple(x))) - x,
                                   u[idx[2], idx[1], idx[0]], atol=1e-3)


ITER_BSPLINE = 5   # the same result as the default 100 here (LBFGSB converges early), far cheaper


def test_bspline_known_answer(pair_4mm, tmp_path, monkeypatch):
    """Affine + B-spline (SimpleITK FFD) through ``medvol register --method bspline``; the LBFGSB
    optimiser is capped at few iterations to keep CI cheap (the wrapper calls medvol's own
    ``bspline_transform``; a missing function fails the test)."""
    from medvol.registration import classical

    orig = classical.bspline_transform

    def few_iterations(*a, **k):
        k["iterations"] = min(int(k.get("iterations", 100)), ITER_BSPLINE)
        return orig(*a, **k)

    monkeypatch.setattr(classical, "bspline_transform", few_iterations)
    r = _run(pair_4mm, tmp_path / "bspline", "bspline")
    # measured 0.62 / 1.00 mm, Dice 0.868 (zero field 3.68 mm / Dice 0.437; the affine part
    # alone 0.95 / 1.49 mm / 0.749 also fails)
    assert r["median"] < 0.8 and r["p90"] < 1.3, r
    assert r["dice"] > 0.82, r


@pytest.mark.parametrize("method", ["voxelmorph", "micdir"])
def test_learned_known_answer_without_prealign(pair_2mm, tmp_path, method):
    """``--no-prealign --refine 0``: the net alone must recover a good part of the deformation.

    Measured (shipped intra weights): VoxelMorph median 2.60 mm / Dice 0.573, MICDIR 2.88 mm /
    0.570; a zero field has median 3.67 mm and Dice 0.466 (the 'before' Dice)."""
    r = _run(pair_2mm, tmp_path / method, method, "--no-prealign", "--refine", "0")
    assert r["median"] < 3.2, r
    assert r["dice"] > 0.53, r


@pytest.mark.parametrize("method", ["voxelmorph", "micdir"])
def test_learned_known_answer_with_prealign(pair_2mm, tmp_path, method):
    """Affine start + net, no instance optimisation (``--refine 0``). Measured: VoxelMorph 3.12 mm / Dice 0.554, MICDIR
    1.80 mm / 0.692 — note both are worse than the affine start alone (≈0.95 mm on the 4 mm
    pair); thresholds pin today's behaviour so a regression shows, the zero-field mutation is
    caught by the ``--no-prealign`` test above."""
    r = _run(pair_2mm, tmp_path / method, method, "--refine", "0")
    limit = {"voxelmorph": (3.5, 0.52), "micdir": (2.3, 0.65)}[method]
    assert r["median"] < limit[0], r
    assert r["dice"] > limit[1], r


@pytest.mark.parametrize("method", ["voxelmorph", "micdir"])
def test_learned_refined_known_answer(pair_2mm, tmp_path, method):
    """The default path: affine start + net + instance optimisation on the pair (``--refine``
    default 40). Measured: VoxelMorph median 0.39 mm / p90 0.85 / Dice 0.899, MICDIR 0.37 /
    0.71 / 0.911 — far better than the net alone (1.8–3.1 mm) and than the affine start."""
    r = _run(pair_2mm, tmp_path / method, method)
    assert r["median"] < 0.6 and r["p90"] < 1.2, r
    assert r["dice"] > 0.86, r
