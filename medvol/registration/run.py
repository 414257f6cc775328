"""The ``medvol register`` job: register, warp, export a Slicer-ready field, report.

Outputs (in one atomically created folder)::

    warped.nrrd              moving image resampled into the fixed grid
    displacement.nrrd        resampling displacement field (vector NRRD, LPS mm, intent 1006)
    displacement.h5          the same as an ITK DisplacementFieldTransform
    warped_labels.seg.nrrd   moving labels warped (nearest) — or warped_labels.nrrd for labels > 255
    affine.tfm               the affine as an ITK transform (--method affine)
    checkerboard.png, overlay.png, jacobian.png   patient frame (radiological, letters, mm)
    report.html, manifest.json

Every method's field is applied with SimpleITK's ``DisplacementFieldTransform`` (the same
operation Slicer performs on the exported field), so the written field reproduces ``warped.nrrd``.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume

log = logging.getLogger("medvol.registration")

__all__ = ["METHODS", "MODALITIES", "RegistrationResult", "register_volumes", "warp_volume",
           "run_register", "checkerboard"]

METHODS = ("micdir", "voxelmorph", "bspline", "demons", "affine")
"""Registration methods (``medvol register --method``, the flows): learned MICDIR and VoxelMorph
(shipped weights, refined on the pair), classical B-spline, diffeomorphic demons and affine
(SimpleITK)."""
MODALITIES = ("intra", "inter")
"""``intra``: same contrast (correlation / NCC); ``inter``: e.g. T1 vs T2 (mutual information)."""


@dataclass
class RegistrationResult:
    """``disp_mm`` ``(z, y, x, 3)`` LPS mm on the fixed grid (resampling direction)."""

    disp_mm: np.ndarray
    warped: Volume
    warped_labels: Volume | None
    seconds: float
    method: str
    modality: str
    info: dict = field(default_factory=dict)
    transform: Any = None       # the SimpleITK transform, for methods that have one (affine)


def warp_volume(moving: Volume, disp_mm: np.ndarray, fixed: Volume, *, interp: str = "linear",
                default: float = 0.0) -> Volume:
    """Resample ``moving`` onto ``fixed``'s grid through ``x ↦ x + u(x)`` (SimpleITK)."""
    import SimpleITK as sitk

    from ..io.fields import field_image as _field_image

    tx = sitk.DisplacementFieldTransform(_field_image(np.asarray(disp_mm, np.float64), fixed))
    it = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}[interp]
    src = moving.with_array(np.asarray(moving.array, dtype=np.float32)).to_sitk()
    out = sitk.Resample(src, fixed.to_sitk(), tx, it, float(default), sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(out)
    if interp == "nearest":
        arr = np.rint(arr).astype(np.int16)
    return fixed.with_array(arr)


def register_volumes(fixed: Volume, moving: Volume, *, method: str = "micdir",
                     modality: str = "intra", labels: Volume | None = None, weights=None,
                     prealign: bool = True, seed: int = 0, refine: int | None = None,
                     task: str | None = None, refine_full: int | None = None,
                     similarity: str | None = None,
                     grid_mm: float | None = None) -> RegistrationResult:
    """Register ``moving`` to ``fixed``.

    Parameters
    ----------
    method : ``micdir`` | ``voxelmorph`` (learned, shipped weights) | ``bspline`` | ``demons``
        (diffeomorphic demons, :mod:`medvol.registration.demons`) | ``affine``.
    modality : ``intra`` (same contrast: correlation / NCC) or ``inter`` (e.g. T1↔T2: mutual
        information; the learned methods load their ``*_inter`` weights).
    labels : optional label map on ``moving``'s grid, warped with nearest neighbour.
    weights : optional weights file for the learned methods.
    prealign : learned methods: start from an affine SimpleITK registration (default, as the
        B-spline baseline does and as the paper's affinely pre-aligned data assume).
    seed : metric-sampling seed of the SimpleITK optimisers (affine, B-spline and the learned
        methods' affine start); the same seed reproduces the same field.
    refine : learned methods: instance-optimisation steps on the pair (``None``: the task's
        validated default, else :data:`medvol.registration.refine.DEFAULT_REFINE`; see
        :func:`medvol.registration.refine.default_refine`; 0: off). refine_full : how many of
        those steps run at full resolution (``None``: the task's default, else half of them; 0:
        all at half resolution, the fast budget). task : learned methods:
        shipped weights ``<method>_<task>`` (e.g. ``hippocampus``, ``synth``); demons: the
        task's tuned settings (:data:`medvol.registration.demons.DEMONS_TASK`, e.g. ``ixi``).
    similarity : learned methods: the refinement's similarity (``lncc``, ``mi``, ``mind``;
        default :func:`medvol.registration.refine.default_similarity` of the modality).
    grid_mm : learned methods: the spacing of the grid the net and its refinement run on
        (``None``: the task's default, :func:`medvol.registration.refine.default_grid_mm`;
        0: the weights' model grid).

    Returns
    -------
    RegistrationResult
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    if modality not in MODALITIES:
        raise InputError(f"unknown modality {modality!r}", hint=f"use {' or '.join(MODALITIES)}")
    if labels is not None and not labels.same_grid(moving):
        raise InputError("labels are not on the moving image's grid",
                         hint="pass the label map of the MOVING image (same size, spacing, origin)")
    t0 = time.perf_counter()
    info: dict = {}
    tx = None                   # a SimpleITK transform, written as affine.tfm (affine only)
    metric = "ncc" if modality == "intra" else "mi"
    if method in ("micdir", "voxelmorph"):
        from .learned import register_learned

        from .refine import default_refine

        n_ref, n_full = default_refine(task, refine, refine_full)
        # register_learned resolves the similarity and grid defaults and returns them
        r = register_learned(fixed, moving, method=method, modality=modality, weights=weights,
                             prealign=prealign, seed=seed, refine=n_ref, task=task,
                             refine_full=n_full, similarity=similarity, grid_mm=grid_mm)
        u = r.disp_mm
        info["refine_steps"] = n_ref
        info["refine_full_res_steps"] = n_full
        info["refine_similarity"] = r.similarity
        info["refine_settings"] = r.refine_settings
        info["model_grid"] = {"shape": list(r.grid.shape), "spacing_mm": list(r.grid.spacing)}
        if r.warnings:
            info["warnings"] = list(r.warnings)
    elif method == "bspline":
        from .classical import register_bspline

        u = register_bspline(fixed, moving, metric=metric, seed=seed)
    elif method == "demons":
        from .demons import demons_settings, register_demons

        u, info["demons"] = register_demons(fixed, moving, metric=metric, seed=seed,
                                            settings=demons_settings(task))
    else:
        from .classical import affine_transform, transform_to_field

        tx = affine_transform(fixed, moving, metric=metric, seed=seed)
        u = transform_to_field(tx, fixed)
    secs = time.perf_counter() - t0
    warped = warp_volume(moving, u, fixed)
    wl = warp_volume(labels, u, fixed, interp="nearest") if labels is not None else None
    return RegistrationResult(disp_mm=u, warped=warped, warped_labels=wl, seconds=secs,
                              method=method, modality=modality, info=info,
                              transform=tx)


# --------------------------------------------------------------------------- report pictures
def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    """2D checkerboard of two same-shape images (``tiles`` squares along the longer side)."""
    n = max(1, max(a.shape) // tiles)
    yy, xx = np.indices(a.shape)
    return np.where(((yy // n) + (xx // n)) % 2 == 0, a, b)


def _norm01(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, [1, 99.5])
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)


def registration_pngs(fixed: Volume, moving_on_fixed: Volume, warped: Volume, jac: np.ndarray,
                      out: Path) -> dict[str, tuple[Path, list]]:
    """The register report's pictures, in the patient frame (radiological convention,
    orientation letters, slice positions in mm; :func:`medvol.report.patient_slices`):

    * ``checkerboard.png`` — fixed/moving checkerboard of the axial, coronal and sagittal
      slices through the centre, before (top row) and after (bottom row) registration;
    * ``overlay.png`` — fixed magenta, moving green (grey where they agree), before / after;
    * ``jacobian.png`` — the Jacobian determinant (0 black … 2 white; folding red).

    All images lie on the fixed grid, so their slices match pixel for pixel. Returns
    ``{name: (path, panels)}`` (:class:`medvol.report.Panel` boxes, row by row).
    """
    from ..report import panels_png, patient_slices

    def slices(a: np.ndarray):
        return patient_slices(fixed.with_array(np.ascontiguousarray(a, dtype=np.float32)))

    f = slices(_norm01(np.asarray(fixed.array, np.float64)))
    m0 = slices(_norm01(np.asarray(moving_on_fixed.array, np.float64)))
    w = slices(_norm01(np.asarray(warped.array, np.float64)))
    cb_rows, ov_rows = [], []
    for when, mov in (("before", m0), ("after", w)):
        cb_rows.append([(checkerboard(a, b), mm, f"{plane} {pos}\n{when}", le, plane)
                        for (plane, a, mm, le, pos), (_, b, *_) in zip(f, mov)])
        ov_rows.append([(np.stack([a, b, a], -1), mm, f"{plane} {pos}\n{when}", le, plane)
                        for (plane, a, mm, le, pos), (_, b, *_) in zip(f, mov)])
    j = slices(np.asarray(jac, np.float64))
    jrow = []
    for plane, a, mm, le, pos in j:
        g = np.clip(a / 2.0, 0, 1)
        rgb = np.where((a <= 0)[..., None], np.array([1.0, 0, 0]), np.stack([g, g, g], -1))
        jrow.append((rgb, mm, f"{plane} {pos}\nJacobian", le, plane))
    return {
        "checkerboard": panels_png(cb_rows, out / "checkerboard.png", overwrite=True),
        "overlay": panels_png(ov_rows, out / "overlay.png", overwrite=True),
        "jacobian": panels_png([jrow], out / "jacobian.png", overwrite=True),
    }


def _report_pngs(fixed: Volume, moving_on_fixed: Volume, warped: Volume, jac: np.ndarray,
                 out: Path) -> list[tuple[str, Path]]:
    p = registration_pngs(fixed, moving_on_fixed, warped, jac, out)
    return [("Checkerboard fixed/moving in the patient frame (radiological): before (top) and "
             "after (bottom) registration", p["checkerboard"][0]),
            ("Overlay: fixed magenta, moving green (grey where they agree); before / after",
             p["overlay"][0]),
            ("Jacobian determinant (0 black … 2 white; folding red)", p["jacobian"][0])]


def run_register(fixed_path: str | os.PathLike, moving_path: str | os.PathLike,
                 out: str | os.PathLike, *, method: str = "micdir", modality: str = "intra",
                 labels_path: str | os.PathLike | None = None,
                 fixed_labels_path: str | os.PathLike | None = None,
                 weights: str | os.PathLike | None = None, prealign: bool = True,
                 overwrite: bool = False, seed: int = 0, refine: int | None = None,
                 task: str | None = None, refine_full: int | None = None,
                 similarity: str | None = None, grid_mm: float | None = None) -> Path:
    """The ``medvol register`` job: read, register, write outputs + report + manifest into ``out``.

    ``labels_path``: labels of the moving image (warped and written); ``fixed_labels_path``: labels
    of the fixed image, enabling the per-structure Dice table (before and after).
    """
    from .. import io as mio
    from .._atomic import atomic_dir
    from ..io.formats import write_displacement_field
    from ..manifest import Manifest
    from ..report import write_html_report
    from .metrics import dice_per_structure, jacobian_determinant, jacobian_stats

    fixed_path, moving_path = Path(fixed_path), Path(moving_path)
    for p, what in ((fixed_path, "fixed image"), (moving_path, "moving image")):
        if not p.is_file():
            raise InputError(f"{what} not found", path=p, hint="give a .nrrd/.nii.gz/.mha volume")
    fixed = mio.read(fixed_path, min_shape=(4, 4, 4), purpose="registration")
    moving = mio.read(moving_path, min_shape=(4, 4, 4), purpose="registration")
    labels = mio.read(labels_path) if labels_path is not None else None
    if labels is not None and not labels.same_grid(moving):
        raise InputError("labels are not on the moving image's grid", path=labels_path,
                         hint="labels_path must be the label map of the MOVING image")
    flabels = mio.read(fixed_labels_path) if fixed_labels_path is not None else None
    if flabels is not None and not flabels.same_grid(fixed):
        raise InputError("fixed labels are not on the fixed image's grid", path=fixed_labels_path)
    if method in ("micdir", "voxelmorph"):
        from .refine import default_grid_mm, default_refine, default_similarity

        # the manifest records the values used
        refine, refine_full = default_refine(task, refine, refine_full)
        similarity = similarity or default_similarity(modality)
        grid_mm = default_grid_mm(task, grid_mm) or 0.0
    man = Manifest("register", {"method": method, "modality": modality, "prealign": prealign,
                                "seed": seed, "weights": str(weights) if weights else "shipped",
                                "refine": refine, "task": task,
                                "refine_full": refine_full, "similarity": similarity,
                                "grid_mm": grid_mm})
    man.add_input(fixed_path, name="fixed")
    man.add_input(moving_path, name="moving")
    if labels_path:
        man.add_input(labels_path, name="moving_labels")
    if fixed_labels_path:
        man.add_input(fixed_labels_path, name="fixed_labels")
    res = register_volumes(fixed, moving, method=method, modality=modality, labels=labels,
                           weights=weights, prealign=prealign, seed=seed, refine=refine,
                           task=task, refine_full=refine_full, similarity=similarity,
                           grid_mm=grid_mm)
    if "refine_settings" in res.info:      # the Adam step / weights the refinement used (task's)
        man.data["parameters"]["refine_settings"] = res.info["refine_settings"]
    if "demons" in res.info:               # the demons settings used (the task's, e.g. ixi)
        man.data["parameters"]["demons_settings"] = res.info["demons"]
    for w in res.info.get("warnings", []):
        log.warning("%s", w)
        man.warn(w)
    zero = np.zeros(fixed.shape + (3,))
    before = warp_volume(moving, zero, fixed)
    sp_zyx = tuple(reversed(fixed.spacing))
    jac = jacobian_determinant(res.disp_mm, sp_zyx, fixed.direction)
    jst = jacobian_stats(res.disp_mm, sp_zyx, fixed.direction)
    tables = {"Jacobian determinant": [{"statistic": k, "value": v} for k, v in jst.items()],
              "Run": [{"method": method, "modality": modality, "seconds": round(res.seconds, 2)}]}
    metrics = {"seconds": res.seconds, **jst}
    if labels is not None and flabels is not None:
        lb = warp_volume(labels, zero, fixed, interp="nearest").array
        d0 = dice_per_structure(lb, flabels.array)
        d1 = dice_per_structure(res.warped_labels.array, flabels.array)
        rows = [{"label": k, "dice_before": d0.get(k, float("nan")), "dice_after": v}
                for k, v in d1.items()]
        if rows:
            rows.append({"label": "mean", "dice_before": float(np.nanmean([r["dice_before"] for r in rows])),
                         "dice_after": float(np.mean(list(d1.values())))})
        tables["Dice per structure"] = rows
        metrics["dice_mean_before"] = float(np.mean(list(d0.values()))) if d0 else None
        metrics["dice_mean_after"] = float(np.mean(list(d1.values()))) if d1 else None
    with atomic_dir(out, overwrite=overwrite) as tmp:
        outs = [mio.write(res.warped, tmp / "warped.nrrd"),
                write_displacement_field(res.disp_mm, tmp / "displacement.nrrd", reference=fixed),
                write_displacement_field(res.disp_mm, tmp / "displacement.h5", reference=fixed)]
        if res.transform is not None:     # ITK affine transform file (Slicer: Data > Transforms)
            import SimpleITK as sitk

            sitk.WriteTransform(res.transform, str(tmp / "affine.tfm"))
            outs.append(tmp / "affine.tfm")
        if res.warped_labels is not None:
            wl = res.warped_labels
            if int(wl.array.max(initial=0)) <= 255 and int(wl.array.min(initial=0)) >= 0:
                outs.append(mio.write_segmentation(wl.with_array(wl.array.astype(np.uint8)),
                                                   tmp / "warped_labels.seg.nrrd"))
            else:
                outs.append(mio.write(wl, tmp / "warped_labels.nrrd"))
        pics = _report_pngs(fixed, before, res.warped, jac, tmp)
        outs += [p for _, p in pics]
        outs.append(write_html_report(tmp, title=f"medvol register ({method}, {modality}modal)",
                                      images=pics, tables=tables,
                                      params={"method": method, "modality": modality,
                                              "prealign": prealign, **res.info}))
        for p in outs:
            man.add_output(p, root=tmp)
        man.data["metrics"] = metrics
        man.decide("field convention: resampling (fixed point -> moving point), LPS mm")
        man.write(tmp / "manifest.json")
    return Path(out)
