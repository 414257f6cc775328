"""Registration metrics: Dice per structure, Jacobian folding, inverse consistency, TRE.

All functions take numpy arrays (torch tensors are accepted and converted). Displacement fields
here are **LPS millimetres** ``(z, y, x, 3)`` on a reference grid (the medvol/ITK/Slicer
convention; convert network DDFs with :func:`medvol.io.formats.voxel_ddf_to_lps_mm`), or voxel DDFs
``(3, z, y, x)`` where stated.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import InputError

__all__ = ["dice_per_structure", "mean_dice", "jacobian_determinant", "folding_percent",
           "jacobian_stats", "inverse_consistency_error", "target_registration_error"]


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def dice_per_structure(pred, target, labels: Sequence[int] | None = None, *,
                       min_voxels: int = 0) -> dict[int, float]:
    """Dice ``2|P∩T| / (|P| + |T|)`` for each label value (background 0 excluded).

    Parameters
    ----------
    pred, target : integer label maps of the same shape.
    labels : label values to score (default: every non-zero value in ``target``).
    min_voxels : skip labels with fewer voxels than this in ``target``.

    Returns ``{label: dice}``; a label absent from both maps is skipped.
    """
    p, t = _np(pred), _np(target)
    if p.shape != t.shape:
        raise InputError(f"label maps differ in shape: {p.shape} vs {t.shape}")
    p = p.astype(np.int64).ravel()
    t = t.astype(np.int64).ravel()
    if labels is None:
        labels = [int(v) for v in np.unique(t) if v != 0]
    out: dict[int, float] = {}
    lo = int(min(p.min(initial=0), t.min(initial=0)))
    n = int(max(p.max(initial=0), t.max(initial=0))) - lo + 1
    inter = np.bincount(t[p == t] - lo, minlength=n)
    cp = np.bincount(p - lo, minlength=n)
    ct = np.bincount(t - lo, minlength=n)
    for lab in labels:
        k = int(lab) - lo
        if k < 0 or k >= n or ct[k] < max(min_voxels, 0) or (cp[k] + ct[k]) == 0:
            continue
        out[int(lab)] = float(2.0 * inter[k] / (cp[k] + ct[k]))
    return out


def mean_dice(pred, target, **kw) -> float:
    d = dice_per_structure(pred, target, **kw)
    return float(np.mean(list(d.values()))) if d else float("nan")


def jacobian_determinant(disp_mm, spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0),
                         direction=None) -> np.ndarray:
    """det J of ``x ↦ x + u(x)`` for a field ``(z, y, x, 3)`` of LPS mm displacements.

    Central differences (one-sided at the borders, ``numpy.gradient``) along the array axes, mapped
    to physical axes with ``direction`` (columns = LPS unit vectors of i, j, k; default identity).
    det J is invariant to the rotation, so this equals SimpleITK's
    ``DisplacementFieldJacobianDeterminant`` up to the border handling. Returns ``(z, y, x)``.
    """
    u = _np(disp_mm).astype(np.float64)
    if u.ndim != 4 or u.shape[-1] != 3:
        raise InputError(f"displacement field must be (z, y, x, 3), got {u.shape}")
    sz, sy, sx = (float(s) for s in spacing_zyx)
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    # derivative of each LPS component along array axes i (x), j (y), k (z), per mm
    g_i = np.gradient(u, sx, axis=2)
    g_j = np.gradient(u, sy, axis=1)
    g_k = np.gradient(u, sz, axis=0)
    g = np.stack([g_i, g_j, g_k], axis=-1)       # (..., 3 comps, 3 index axes)
    jac = g @ d.T + np.eye(3)                      # ∂u/∂x_phys = ∂u/∂idx_mm · Dᵀ
    return np.linalg.det(jac)


def folding_percent(disp_mm, spacing_zyx=(1.0, 1.0, 1.0), direction=None, mask=None) -> float:
    """Percentage of voxels (inside ``mask`` if given) with det J ≤ 0."""
    j = jacobian_determinant(disp_mm, spacing_zyx, direction)
    sel = j if mask is None else j[_np(mask) > 0]
    return float(100.0 * np.mean(sel <= 0)) if sel.size else 0.0


def jacobian_stats(disp_mm, spacing_zyx=(1.0, 1.0, 1.0), direction=None, mask=None) -> dict:
    """``{folding_percent, jac_min, jac_max, jac_mean, jac_std, log_jac_std}`` of det J."""
    j = jacobian_determinant(disp_mm, spacing_zyx, direction)
    sel = j if mask is None else j[_np(mask) > 0]
    pos = np.clip(sel, 1e-6, None)
    return {"folding_percent": float(100.0 * np.mean(sel <= 0)), "jac_min": float(sel.min()),
            "jac_max": float(sel.max()), "jac_mean": float(sel.mean()), "jac_std": float(sel.std()),
            "log_jac_std": float(np.log(pos).std())}


def _sample_field(u_vox_zyx: np.ndarray, pts_zyx: np.ndarray) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    coords = np.moveaxis(pts_zyx, -1, 0)
    return np.stack([map_coordinates(u_vox_zyx[c], coords, order=1, mode="nearest")
                     for c in range(3)], axis=-1)


def inverse_consistency_error(ddf_ab_vox, ddf_ba_vox, spacing_zyx=(1.0, 1.0, 1.0),
                              mask=None) -> float:
    """Mean ‖φ_ba∘φ_ab(x) − x‖ in mm for voxel DDFs ``(3, z, y, x)`` (channels dz, dy, dx).

    ``φ_ab(p) = p + u_ab(p)`` maps the grid of image *a* into *b*; ``φ_ba`` back. Points are the
    voxels in ``mask`` (default all); ``u_ba`` is sampled trilinearly at ``φ_ab(p)``.
    """
    ua, ub = _np(ddf_ab_vox).astype(np.float64), _np(ddf_ba_vox).astype(np.float64)
    if ua.shape != ub.shape or ua.ndim != 4 or ua.shape[0] != 3:
        raise InputError(f"DDFs must both be (3, z, y, x); got {ua.shape} and {ub.shape}")
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in ua.shape[1:]], indexing="ij"), -1)
    p = grid.astype(np.float64)
    if mask is not None:
        p = p[_np(mask) > 0]
        u1 = np.stack([ua[c][_np(mask) > 0] for c in range(3)], -1)
    else:
        p = p.reshape(-1, 3)
        u1 = np.moveaxis(ua, 0, -1).reshape(-1, 3)
    q = p + u1
    r = q + _sample_field(ub, q)
    err = (r - p) * np.asarray(spacing_zyx, dtype=np.float64)
    return float(np.linalg.norm(err, axis=-1).mean())


def target_registration_error(fixed_points_mm, moving_points_mm, disp_mm, reference) -> dict:
    """TRE of landmark pairs under a resampling field.

    Parameters
    ----------
    fixed_points_mm, moving_points_mm : ``(n, 3)`` LPS mm corresponding landmarks.
    disp_mm : ``(z, y, x, 3)`` LPS mm resampling field on ``reference`` (fixed → moving).
    reference : :class:`medvol.Volume` of the field's grid.

    Returns ``{"tre_mean_mm", "tre_std_mm", "tre_max_mm", "n"}`` where the error of landmark ``i``
    is ``‖f_i + u(f_i) − m_i‖`` (u trilinearly interpolated).
    """
    f = np.asarray(fixed_points_mm, dtype=np.float64).reshape(-1, 3)
    m = np.asarray(moving_points_mm, dtype=np.float64).reshape(-1, 3)
    if f.shape != m.shape or f.shape[0] == 0:
        raise InputError("landmark lists must be non-empty and of equal length")
    u = _np(disp_mm).astype(np.float64)
    ijk = reference.world_to_index(f)
    u_at = _sample_field(np.moveaxis(u, -1, 0), ijk[:, ::-1])
    e = np.linalg.norm(f + u_at - m, axis=1)
    return {"tre_mean_mm": float(e.mean()), "tre_std_mm": float(e.std()),
            "tre_max_mm": float(e.max()), "n": int(e.size)}


def summarize(values: Mapping[str, Sequence[float]]) -> dict:
    """``{name: (mean, std)}`` helper for tables."""
    return {k: (float(np.mean(v)), float(np.std(v))) for k, v in values.items()}
