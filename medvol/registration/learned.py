"""Run the learned registration nets (MICDIR, VoxelMorph) on a pair of :class:`Volume` s.

The nets were trained on a fixed *model grid* (shape and spacing stored in the weights'
metadata, 64×80×64 at 2.5 mm for the shipped weights). Inference resamples both images onto a
model grid with the fixed image's direction, centred on the fixed image's intensity centroid,
runs the net, converts its voxel DDF to LPS mm (:func:`medvol.io.formats.voxel_ddf_to_lps_mm`)
and interpolates that field onto the fixed image's own grid (zero displacement outside the model
grid). The hippocampus weights, trained on the data files' (i, j, k) arrays, run instead on
their training box rebuilt in physical space (:func:`hippocampus_box_grid`), with their arrays
transposed (:func:`file_order_task`). Inputs are assumed roughly aligned in physical space (the
training pairs differ by ±5°, ±5 %, ±7.5 mm plus a smooth deformation); ``prealign=True`` (the
default of :func:`medvol.registration.run.register_volumes` and ``medvol register``) starts from
an affine SimpleITK registration, like the B-spline baseline and the paper's affinely pre-aligned
data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, WeightsError
from ..volume import Volume

__all__ = ["METHODS", "weights_path", "load_model", "LearnedResult", "inference_grid",
           "file_order_task", "hippocampus_box_grid", "hippocampus_fov_warning",
           "register_learned", "lps_mm_to_voxel_ddf", "run_net"]

METHODS = ("micdir", "voxelmorph")


def weights_path(method: str, modality: str = "intra") -> Path:
    """Path of the shipped weights ``models/weights/<method>_<modality>.safetensors``."""
    from ..learned.weights import _weights_dir

    return _weights_dir() / f"{method}_{modality}.safetensors"


def load_model(method: str = "micdir", modality: str = "intra", path=None, device: str = "cpu"):
    """Build the net and load its safetensors weights (:func:`medvol.learned.load_weights`);
    returns ``(model, WeightsInfo)`` (``info.task``: ``modality``, ``similarity``,
    ``grid_shape``, ``grid_spacing_mm``).

    Raises :class:`WeightsError` for a missing, unreadable, corrupted or mismatched file.
    """
    from ..learned.weights import load_weights

    if method not in METHODS:
        raise InputError(f"unknown learned method {method!r}", hint="use micdir or voxelmorph")
    p = Path(path) if path is not None else weights_path(method, modality)
    if not p.is_file():
        raise WeightsError("weights file not found", path=p,
                           hint="pass --weights or retrain with `medvol train micdir`")
    model, info = load_weights(p, arch=method, device=device)
    if not isinstance(info.task, dict) or "grid_shape" not in info.task:
        raise WeightsError("registration weights lack their model grid (task.grid_shape)", path=p)
    return model, info


def lps_mm_to_voxel_ddf(disp_mm, reference: Volume) -> np.ndarray:
    """Inverse of :func:`voxel_ddf_to_lps_mm`: ``(z, y, x, 3)`` LPS mm → ``(3, z, y, x)`` voxels
    (dz, dy, dx) of ``reference``."""
    u = np.asarray(disp_mm, dtype=np.float64)
    m = reference.direction * np.asarray(reference.spacing)[None, :]
    ijk = u @ np.linalg.inv(m).T                      # (z, y, x, 3) = (di, dj, dk)
    return np.stack([ijk[..., 2], ijk[..., 1], ijk[..., 0]], axis=0)


def _centroid_grid(fixed: Volume, shape, spacing) -> Volume:
    from .data import model_grid

    a = np.asarray(fixed.array, dtype=np.float32)
    thr = np.percentile(a, 50) if np.any(a > 0) else a.min()
    w = np.clip(a - thr, 0, None)
    if w.sum() <= 0:
        idx = (np.array(a.shape[::-1]) - 1) / 2.0
    else:
        grids = np.meshgrid(*[np.arange(n) for n in a.shape], indexing="ij")
        idx = np.array([(g * w).sum() / w.sum() for g in grids])[::-1]
    return model_grid(fixed.index_to_world(idx), fixed.direction, shape=shape, spacing=spacing)


# The hippocampus weights were trained on arrays in the data files' own order: the MSD Task04 /
# Learn2Reg crops are RAS-identity NIfTI, read as nibabel (i, j, k), padded / cropped about the
# centre to 64³ and cut to the box HIPPO_OFFSET + HIPPO_CROP (medvol.registration.datasets).
# medvol's Volumes are (z, y, x) = (k, j, i) in LPS, so the Volume path rebuilds that box in
# physical space and hands the net its arrays transposed (_FILE_ORDER_DIRECTION: the training
# files' i, j, k axes in LPS), with the training intensity scaling. One difference remains:
# training centred each file in its own 64³ pad, here the moving image comes in through physical
# space (the affine pre-alignment, on by default, absorbs the offset; for two files of one shape
# and affine the arrays are exactly the training ones). Without this the net saw its inputs with
# i and k swapped: on a pair of the data set's own files `medvol register --task hippocampus`
# lowered Dice (0.750 → 0.640) where the benchmark's array path gains (2026-12-04).
_FILE_ORDER_DIRECTION = np.diag([-1.0, -1.0, 1.0])


def file_order_task(meta) -> bool:
    """True for weights trained on arrays in the files' (i, j, k) order (the hippocampus
    task): :func:`register_learned` then runs them on :func:`hippocampus_box_grid`."""
    task = meta.task if hasattr(meta, "task") else (meta or {})
    return isinstance(task, dict) and task.get("dataset") == "hippocampus"


def hippocampus_box_grid(fixed: Volume) -> Volume:
    """The hippocampus nets' box as a Volume grid (``(z, y, x)`` = the training files' (k, j, i),
    1 mm, LPS directions of a RAS-identity file): for such a file exactly the voxels of the
    training box (centre ``offset + (crop − 1)/2`` of the centred 64³ pad, per axis), elsewhere
    the same box about the fixed image's centre, in the training orientation."""
    from .data import model_grid
    from .datasets import HIPPO_CROP, HIPPO_OFFSET, HIPPO_SHAPE

    n_xyz = np.asarray(fixed.shape[::-1], dtype=float)            # index axes (x, y, z) = (i, j, k)
    box_c = np.asarray(HIPPO_OFFSET, float) + (np.asarray(HIPPO_CROP, float) - 1) / 2
    pad = np.asarray(HIPPO_SHAPE, float)
    shift = np.where(n_xyz <= pad, -((pad - n_xyz) // 2), (n_xyz - pad) // 2)
    centre = fixed.index_to_world(box_c + shift)
    return model_grid(centre, _FILE_ORDER_DIRECTION, shape=tuple(HIPPO_CROP[::-1]), spacing=1.0)


def hippocampus_fov_warning(image: Volume) -> str | None:
    """A warning when an image (fixed or moving) spans far more than the hippocampus nets' box
    (any extent above twice the 64 mm pad they were trained in): they then see only a central
    32×48×48 mm."""
    ext = np.asarray(image.shape[::-1], float) * np.asarray(image.spacing, float)
    if np.all(ext <= 128.0):
        return None
    dims = "×".join(f"{e:.0f}" for e in ext)
    return (f"--task hippocampus: the image spans {dims} mm but these weights see only the "
            "central 32×48×48 mm box; they expect hippocampus crops (MSD Task04 / Learn2Reg, "
            "about 35×50×35 mm) — crop the image or use another task / --method demons")


def inference_grid(fixed: Volume, model, meta, grid_mm: float | None = None) -> Volume:
    """The grid a learned net (and its refinement) runs on: the model grid of the weights
    (``meta.task``: ``grid_shape`` at ``grid_spacing_mm``) centred on the fixed image's intensity
    centroid, or with ``grid_mm`` an isotropic grid of that spacing covering the fixed image's
    extent, at most the model grid's field of view, each size rounded up to the net's divisor.
    ``grid_mm`` below half the model spacing is refused (the grid could grow 8× and more)."""
    task = meta.task if hasattr(meta, "task") else {}
    shape = tuple(int(n) for n in task.get("grid_shape", (64, 80, 64)))
    spacing = float(task.get("grid_spacing_mm", 2.5))
    if grid_mm is not None:
        g = float(grid_mm)
        if not g >= 0.5 * spacing:
            raise InputError(f"grid spacing {grid_mm} mm is finer than half the model grid's "
                             f"{spacing:g} mm", hint=f"use --grid-mm {0.5 * spacing:g} or more")
        div = int(getattr(model, "divisor", 16))
        ext = np.asarray(fixed.shape, float) * np.asarray(tuple(reversed(fixed.spacing)), float)
        fov = np.asarray(shape, float) * spacing
        n = np.ceil(np.minimum(ext, fov) / g / div).astype(int) * div
        shape, spacing = tuple(int(v) for v in np.maximum(n, div)), g
    return _centroid_grid(fixed, shape, spacing)


@dataclass
class LearnedResult:
    disp_mm: np.ndarray     # (z, y, x, 3) LPS mm on the fixed grid
    grid: Volume            # the model grid
    ddf_vox: np.ndarray     # (3, z, y, x) voxels of the model grid
    warped_grid: np.ndarray  # moving warped on the model grid (normalised intensities)
    fixed_grid: np.ndarray
    seconds: float
    similarity: str = ""     # the refinement similarity resolved for this call (manifest)
    refine_settings: dict | None = None  # the RefineSettings used (None: no refinement)
    warnings: list = field(default_factory=list)  # for the manifest / log (one line each)


def run_net(model, fixed_arr: np.ndarray, moving_arr: np.ndarray, device: str = "cpu") -> tuple:
    """Run a net on two ``(z, y, x)`` arrays in [0, 1]; returns ``(ddf_vox (3, z, y, x), warped)``."""
    import torch

    with torch.no_grad():
        f = torch.as_tensor(np.ascontiguousarray(fixed_arr), dtype=torch.float32, device=device)[None, None]
        m = torch.as_tensor(np.ascontiguousarray(moving_arr), dtype=torch.float32, device=device)[None, None]
        out = model(f, m)
    return out["ddf"][0].cpu().numpy(), out["warped"][0, 0].cpu().numpy()


def register_learned(fixed: Volume, moving: Volume, *, method: str = "micdir",
                     modality: str = "intra", weights=None, prealign: bool = False,
                     model=None, meta=None, device: str = "cpu", seed: int = 0,
                     refine: int = 0, task: str | None = None,
                     refine_full: int | None = None, similarity: str | None = None,
                     refine_settings=None, grid_mm: float | None = None) -> LearnedResult:
    """Register ``moving`` to ``fixed`` with a learned net; the field is on the fixed grid.

    ``seed``: the affine pre-alignment's metric-sampling seed (same seed, same result).
    ``refine``: instance-optimisation steps on the pair (:mod:`medvol.registration.refine`;
    LNCC intramodal, MIND-SSC intermodal by default); 0 = the net's prediction only;
    ``refine_full``: how many of them at full resolution (default half; 0 = all at half
    resolution). ``similarity``: the refinement's similarity (default
    :func:`medvol.registration.refine.default_similarity` of the modality);
    ``refine_settings``: a :class:`~medvol.registration.refine.RefineSettings` (default: the
    task's when ``refine``/``refine_full`` are its own budget, else the defaults;
    :func:`medvol.registration.refine.default_refine_settings`).
    ``grid_mm``: run the net and its refinement on an isotropic grid of this spacing over the
    fixed image (:func:`inference_grid`); ``None``: the task's default
    (:func:`medvol.registration.refine.default_grid_mm`), 0: the weights' own model grid.
    ``task``: shipped weights ``<method>_<task>.safetensors`` (default: the modality's,
    ``<method>_<modality>``).
    """
    import time

    from ..io.formats import voxel_ddf_to_lps_mm
    from .classical import affine_transform, transform_to_field
    from .data import normalize_intensity, resample_to

    t0 = time.perf_counter()
    if model is None:
        model, meta = load_model(method, task or modality, weights, device=device)
    from .refine import default_grid_mm, default_refine_settings, default_similarity

    similarity = similarity or default_similarity(modality)
    refine_settings = default_refine_settings(task, refine, refine_full, refine_settings)

    file_order = file_order_task(meta)
    if file_order and grid_mm:
        raise InputError("--grid-mm does not apply to the hippocampus weights: they run on their "
                         "1 mm training box", hint="leave --grid-mm out (or 0)")
    grid = (hippocampus_box_grid(fixed) if file_order
            else inference_grid(fixed, model, meta, default_grid_mm(task, grid_mm)))
    aff = None
    if prealign:
        aff = affine_transform(fixed, moving, metric="ncc" if modality == "intra" else "mi",
                               seed=seed)
    if file_order:      # as in training: each whole image normalised, then its box cut
        from .datasets import hippocampus_intensity

        fn = resample_to(fixed.with_array(hippocampus_intensity(fixed.array)), grid)
        mn = resample_to(moving.with_array(hippocampus_intensity(moving.array)), grid,
                         transform=aff)
    else:
        fn = normalize_intensity(resample_to(fixed, grid))
        mn = normalize_intensity(resample_to(moving, grid, transform=aff))
    # file-order nets see (i, j, k) arrays; their DDF (d_i, d_j, d_k) goes back to (dz, dy, dx)
    net_in = (lambda a: np.ascontiguousarray(a.transpose(2, 1, 0))) if file_order else (lambda a: a)
    refined = bool(refine) and int(refine) > 0
    if refined:
        from .refine import refine_arrays

        ddf, warped = refine_arrays(model, net_in(fn), net_in(mn), steps=int(refine),
                                    similarity=similarity, full_steps=refine_full,
                                    settings=refine_settings)
    else:
        ddf, warped = run_net(model, net_in(fn), net_in(mn), device)
    if file_order:
        ddf = np.ascontiguousarray(ddf[::-1].transpose(0, 3, 2, 1))
        warped = net_in(warped)
    u_grid = voxel_ddf_to_lps_mm(ddf, grid)                       # (z, y, x, 3) on the model grid
    # the field on the fixed image's own grid (linear; zero outside the model grid)
    if fixed.same_grid(grid):
        u = u_grid
    else:
        comps = []
        for c in range(3):
            comps.append(resample_to(grid.with_array(u_grid[..., c].astype(np.float32)), fixed))
        u = np.stack(comps, axis=-1).astype(np.float64)
    if aff is not None:  # total map x -> A(x + u(x)) = x + a(x) + M u(x)  (A affine, matrix M)
        mat = np.array(aff.GetMatrix()).reshape(3, 3)
        u = transform_to_field(aff, fixed) + u @ mat.T
    warn = ((hippocampus_fov_warning(fixed) or hippocampus_fov_warning(moving)) if file_order
            else None)
    return LearnedResult(disp_mm=np.ascontiguousarray(u), grid=grid, ddf_vox=ddf, warped_grid=warped,
                         fixed_grid=fn, seconds=time.perf_counter() - t0,
                         similarity=similarity,
                         refine_settings=refine_settings.to_dict() if refined else None,
                         warnings=[warn] if warn else [])
