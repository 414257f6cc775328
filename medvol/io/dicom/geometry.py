"""Slice-stack geometry for DICOM ingest: orientation, sorting, tilt/spacing analysis and
resampling of sheared or unevenly spaced stacks onto an orthogonal, uniform grid.

Conventions: ImageOrientationPatient (IOP) gives the row cosine ``r`` (direction in which the
column index i grows) and the column cosine ``c`` (direction of the row index j); the slice
normal is ``n = r × c``. PixelSpacing is ``[row spacing (along c), column spacing (along r)]``,
so the volume spacing is ``(PixelSpacing[1], PixelSpacing[0], slice step)``. A slice's position
along the stack is ``w = IPP · n`` — never InstanceNumber or the file name.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["orientation", "StackAnalysis", "analyse_stack", "resample_stack"]

#: in-plane shift (fraction of the smallest pixel spacing) above which a stack counts as sheared
SHEAR_TOL_PIXELS = 0.02
#: gaps may differ by this much (mm) or this fraction of the median gap before counting as uneven
GAP_TOL_MM = 0.01
GAP_TOL_REL = 0.01
#: two slices closer than this along the normal (mm) occupy the same position
DUPLICATE_TOL_MM = 0.01


def orientation(iop) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row cosine, column cosine and slice normal (all LPS) from a 6-value IOP.

    Raises ``ValueError`` if the cosines are degenerate or far from orthogonal.
    """
    v = np.asarray([float(x) for x in iop], dtype=float)
    if v.shape != (6,) or not np.all(np.isfinite(v)):
        raise ValueError(f"ImageOrientationPatient must hold 6 numbers, got {list(iop)!r}")
    r, c = v[:3], v[3:]
    nr, nc = np.linalg.norm(r), np.linalg.norm(c)
    if nr < 1e-6 or nc < 1e-6:
        raise ValueError(f"ImageOrientationPatient has a zero cosine: {v.tolist()}")
    r, c = r / nr, c / nc
    if abs(float(r @ c)) > 1e-3:
        raise ValueError(f"ImageOrientationPatient cosines are not orthogonal (r·c = {r @ c:.4g})")
    c = c - (r @ c) * r
    c /= np.linalg.norm(c)
    n = np.cross(r, c)
    return r, c, n / np.linalg.norm(n)


@dataclass
class StackAnalysis:
    """Geometry of a sorted slice stack (all distances in mm, vectors in LPS).

    Attributes
    ----------
    w : (n,) slice positions along the normal, ascending.
    uv : (n, 2) in-plane offset of each slice's IPP from the first one, along (r, c).
    gaps : (n-1,) steps between neighbours along the normal.
    ipp_steps : (n-1,) raw Euclidean distances between neighbouring IPPs.
    tilt_deg : angle between the first→last IPP offset and the normal (0 for one slice).
    sheared : in-plane shift of some slice exceeds ``SHEAR_TOL_PIXELS`` of a pixel.
    uniform : all gaps agree within ``max(GAP_TOL_MM, GAP_TOL_REL · median gap)``.
    """

    w: np.ndarray
    uv: np.ndarray
    gaps: np.ndarray
    ipp_steps: np.ndarray
    tilt_deg: float
    max_shift_mm: float
    sheared: bool
    uniform: bool
    gap_max_deviation_mm: float
    notes: list[str] = field(default_factory=list)

    def gap_histogram(self, decimals: int = 2) -> dict[str, int]:
        """Counts of gaps rounded to ``decimals`` mm, keys as strings (JSON-friendly)."""
        vals, counts = np.unique(np.round(self.gaps, decimals), return_counts=True)
        return {f"{v:.{decimals}f}": int(k) for v, k in zip(vals, counts)}


def analyse_stack(positions: np.ndarray, r: np.ndarray, c: np.ndarray, n: np.ndarray,
                  pixel_spacing: tuple[float, float]) -> StackAnalysis:
    """Analyse IPPs already sorted by ``w = IPP · n``.

    Parameters
    ----------
    positions : (n_slices, 3) ImagePositionPatient of each slice (LPS mm), sorted by ``w``.
    r, c, n : (3,) unit row cosine, column cosine and normal.
    pixel_spacing : (si, sj) mm along r and c.
    """
    p = np.asarray(positions, dtype=float)
    w = p @ n
    rel = p - p[0]
    uv = np.stack([rel @ r, rel @ c], axis=1)
    gaps = np.diff(w)
    steps = np.linalg.norm(np.diff(p, axis=0), axis=1)
    if len(p) >= 2:
        d = p[-1] - p[0]
        dn = np.linalg.norm(d)
        cosang = abs(float(d @ n)) / dn if dn > 0 else 1.0
        tilt = float(np.degrees(np.arccos(np.clip(cosang, -1.0, 1.0))))
    else:
        tilt = 0.0
    max_shift = float(np.max(np.linalg.norm(uv, axis=1))) if len(p) else 0.0
    sheared = max_shift > SHEAR_TOL_PIXELS * min(pixel_spacing)
    if len(gaps) >= 2:
        med = float(np.median(gaps))
        dev = float(np.max(np.abs(gaps - med)))
        uniform = float(gaps.max() - gaps.min()) <= max(GAP_TOL_MM, GAP_TOL_REL * med)
    else:
        dev, uniform = 0.0, True
    return StackAnalysis(w=w, uv=uv, gaps=gaps, ipp_steps=steps, tilt_deg=tilt,
                         max_shift_mm=max_shift, sheared=bool(sheared), uniform=bool(uniform),
                         gap_max_deviation_mm=dev)


def _lerp_axis(a: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` at fractional indices ``x`` along ``axis``; NaN outside
    ``[0, len-1]`` (a tolerance of 1e-6 pixel absorbs rounding)."""
    n = a.shape[axis]
    eps = 1e-6
    valid = (x >= -eps) & (x <= n - 1 + eps)
    xc = np.clip(x, 0, n - 1)
    x0 = np.minimum(np.floor(xc).astype(np.intp), max(n - 2, 0))
    f = (xc - x0).astype(np.float32)
    x1 = np.minimum(x0 + 1, n - 1)
    a0 = np.take(a, x0, axis=axis)
    a1 = np.take(a, x1, axis=axis)
    shape = [1] * a.ndim
    shape[axis] = len(x)
    f = f.reshape(shape)
    out = a0 + f * (a1 - a0)
    if not valid.all():
        idx = [slice(None)] * a.ndim
        idx[axis] = ~valid
        out[tuple(idx)] = np.nan
    return out


def resample_stack(slices: np.ndarray, analysis: StackAnalysis,
                   pixel_spacing: tuple[float, float], step_mm: float,
                   fill_value: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Resample a sheared and/or unevenly spaced stack onto an orthogonal, uniform grid.

    The target grid keeps the in-plane axes (r, c) and pixel spacing of the slices, is aligned
    with the first slice's pixel grid, extends in-plane to cover every slice, and steps
    ``step_mm`` along the normal from the first slice to the last. Each target point is
    interpolated bilinearly inside the two original slices that bracket it along the normal
    (at the point's own in-plane coordinates in each slice), then linearly between them.
    Points outside the acquired region get ``fill_value``.

    Parameters
    ----------
    slices : (n, rows, cols) float array, sorted by ``analysis.w``.
    analysis : :class:`StackAnalysis` of the same sorted stack.
    pixel_spacing : (si, sj) mm along r (columns) and c (rows).
    step_mm : target spacing along the normal (mm).
    fill_value : value for target voxels outside the acquired region.

    Returns
    -------
    array : (K, J, I) float32
    offset : (i_min, j_min) integer pixel offset of the target grid's voxel [0, 0, 0] from the
        first slice's pixel (0, 0), so origin = IPP_0 + i_min·si·r + j_min·sj·c.
    """
    n, rows, cols = slices.shape
    si, sj = pixel_spacing
    du = analysis.uv[:, 0] / si
    dv = analysis.uv[:, 1] / sj
    eps = 1e-6
    i_min = int(np.floor(du.min() + eps))
    i_max = int(np.ceil(du.max() + cols - 1 - eps))
    j_min = int(np.floor(dv.min() + eps))
    j_max = int(np.ceil(dv.max() + rows - 1 - eps))
    ii = np.arange(i_min, i_max + 1, dtype=float)
    jj = np.arange(j_min, j_max + 1, dtype=float)
    # Step 1: every original slice on the common in-plane grid (a pure sub-pixel shift, since
    # all slices share r and c): separable bilinear interpolation, NaN outside the slice.
    shifted = np.empty((n, len(jj), len(ii)), dtype=np.float32)
    for s in range(n):
        tmp = _lerp_axis(slices[s].astype(np.float32, copy=False), jj - dv[s], axis=0)
        shifted[s] = _lerp_axis(tmp, ii - du[s], axis=1)
    # Step 2: linear interpolation along the normal between the bracketing slices.
    w = analysis.w
    length = float(w[-1] - w[0])
    k_count = int(np.floor(length / step_mm + 1e-6)) + 1
    wk = w[0] + step_mm * np.arange(k_count)
    lower = np.clip(np.searchsorted(w, wk, side="right") - 1, 0, max(n - 2, 0))
    out = np.empty((k_count, len(jj), len(ii)), dtype=np.float32)
    for k in range(k_count):
        s = int(lower[k])
        if n == 1:
            out[k] = shifted[0]
            continue
        t = (wk[k] - w[s]) / (w[s + 1] - w[s])
        if t <= 1e-6:
            out[k] = shifted[s]
        elif t >= 1 - 1e-6:
            out[k] = shifted[s + 1]
        else:
            np.subtract(shifted[s + 1], shifted[s], out=out[k])
            out[k] *= np.float32(t)
            out[k] += shifted[s]
    np.nan_to_num(out, copy=False, nan=float(fill_value))
    return out, (i_min, j_min)
