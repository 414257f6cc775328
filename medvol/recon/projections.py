"""Flat/dark correction and centre-of-rotation estimation for parallel-beam projections.

Detector frames, flats, darks and angles are read by :mod:`medvol.io.projections`
(:func:`~medvol.io.projections.load_projections`, re-exported here); this module turns them into
line integrals that the reconstructors in :mod:`medvol.recon` accept and estimates where the
rotation axis projects onto the detector. Reconstructions for the axis search use
:mod:`medvol.recon.fbp` (the one FBP).

Centre-of-rotation methods
--------------------------
``"opposed"``
    Parallel-beam projections 180° apart are mirror images about the axis:
    ``p(θ + π, c + t) = p(θ, c − t)``. Every view with an opposite view (exact, or linearly
    interpolated between the two views bracketing ``θ + π`` when the gap is at most ~2.5 steps) is
    mirrored and compared with its partner for candidate axis positions; the mismatch (mean squared
    difference over the overlapping detector range, cubic-spline sub-pixel shifts) is minimised on a
    0.5 px grid and refined by bounded scalar minimisation (``scipy.optimize.minimize_scalar``,
    Brent's method in the bracketing interval, ``xatol`` 10⁻⁴ px). Needs angles covering ≥ 180°.
``"sharpness"``
    Reconstruct the sinogram with filtered back-projection for candidate offsets (coarse 1 px grid,
    then finer grids around the best) and pick the offset that minimises the total variation of the
    image inside the reconstruction circle relative to its positive mass; a wrong axis smears every
    edge into crescent-shaped double edges ("tuning forks") and raises that ratio. Works for any
    angular range. The sinogram is ramp-filtered once (:func:`medvol.recon.filter_sinogram`) and
    back-projected for every candidate axis (:func:`medvol.recon.fbp.backproject_parallel`).
``"auto"``
    ``"opposed"`` when opposite views exist, otherwise ``"sharpness"``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np

from ..errors import GeometryError, InputError
from ..io.projections import (Projections, load_projections, load_synchrotron_example,
                             read_angles)

__all__ = [
    "Projections", "load_projections", "load_synchrotron_example", "read_angles",
    "FlatDarkResult", "flat_dark_correct", "minus_log", "line_integrals",
    "CorEstimate", "estimate_center_of_rotation", "sharpness", "fbp_parallel_numpy",
]


# --------------------------------------------------------------------------------------------
# flat / dark correction
# --------------------------------------------------------------------------------------------
class FlatDarkResult(NamedTuple):
    """Result of :func:`flat_dark_correct`.

    transmission : float32 ``(views, rows, cols)`` ``(I − D)/(F − D)`` clipped to ``[eps, ∞)``.
    n_clipped : number of pixels raised to ``eps`` (zero or negative transmission).
    n_dead : number of detector pixels where ``F − D ≤ 0`` (dead flat); transmission set to 1
        there in every view (i.e. zero line integral), so they show up as a flat column, not a
        bright streak.
    """

    transmission: np.ndarray
    n_clipped: int
    n_dead: int


def flat_dark_correct(p: Projections, *, eps: float = 1e-6) -> FlatDarkResult:
    """Flat/dark-field correction ``T = (I − D) / (F − D)``, clipped to ``[eps, ∞)``.

    Several flat (dark) frames are averaged. Without darks ``D = 0``; without flats an
    :class:`InputError` is raised (raw counts cannot be normalised).
    """
    if not (eps > 0):
        raise InputError(f"eps must be > 0, got {eps}")
    if p.flats is None:
        raise InputError("no flat field: cannot compute transmission",
                         hint="pass flats= to load_projections (or divide by the open-beam counts yourself)")
    F = p.flats.astype(np.float64).mean(axis=0)
    D = np.zeros_like(F) if p.darks is None else p.darks.astype(np.float64).mean(axis=0)
    den = F - D
    dead = den <= 0
    den = np.where(dead, 1.0, den)
    t = (p.data.astype(np.float64) - D) / den
    t[:, dead] = 1.0
    low = t < eps
    n_clipped = int(np.count_nonzero(low))
    t[low] = eps
    return FlatDarkResult(t.astype(np.float32), n_clipped, int(np.count_nonzero(dead)))


def minus_log(t: np.ndarray, *, eps: float = 1e-6) -> np.ndarray:
    """Line integrals ``−log(max(t, eps))`` (float32) from transmission ``t``."""
    t = np.asarray(t, dtype=np.float32)
    return (-np.log(np.maximum(t, np.float32(eps)))).astype(np.float32)


def line_integrals(p: Projections, *, eps: float = 1e-6) -> np.ndarray:
    """Flat/dark correction followed by ``−log``: ``(views, rows, n_det)`` float32."""
    return minus_log(flat_dark_correct(p, eps=eps).transmission, eps=eps)


# --------------------------------------------------------------------------------------------
# parallel-beam FBP of one sinogram (medvol.recon.fbp; numpy in, numpy out)
# --------------------------------------------------------------------------------------------
_FILTER_NAMES = {"ramp": "ram-lak", None: "ram-lak"}


def fbp_parallel_numpy(sino: np.ndarray, angles: np.ndarray, *, det_spacing: float = 1.0,
                       det_offset: float = 0.0, image_shape: tuple[int, int] | None = None,
                       pixel_size: float | None = None, filter: str = "hann") -> np.ndarray:
    """Parallel-beam FBP of one numpy sinogram: :func:`medvol.recon.fbp` on a
    ``ParallelBeam2D`` (the pipeline's FBP, computed in float64).

    Parameters
    ----------
    sino : ``(views, n_det)`` line integrals (mm · attenuation units).
    angles : ``(views,)`` radians.
    det_spacing, det_offset : mm (``det_offset = −δ`` for an axis at ``+δ``).
    image_shape : ``(ny, nx)``, default ``(n_det, n_det)``; pixel_size (mm) default det_spacing.
    filter : ``"ramp"`` (= ``"ram-lak"``) or any of :data:`medvol.recon.FILTERS`.

    Returns
    -------
    ``(ny, nx)`` float64 image in 1/mm (attenuation units). The weight π/views is exact for views
    spread evenly over π or over 2π.
    """
    from ..geometry import ParallelBeam2D
    from ..kernels import Projector
    from .fbp import FILTERS, fbp

    sino = np.asarray(sino, dtype=np.float64)
    angles = np.asarray(angles, dtype=np.float64).reshape(-1)
    if sino.ndim != 2 or sino.shape[0] != angles.size:
        raise InputError(f"sinogram {sino.shape} does not match {angles.size} angles "
                         "(expected (views, n_det))")
    filt = _FILTER_NAMES.get(filter, filter)
    if filt not in FILTERS:
        raise InputError(f"unknown filter {filter!r}; use 'ramp' or one of {', '.join(FILTERS)}")
    n = sino.shape[1]
    ny, nx = image_shape if image_shape is not None else (n, n)
    px = det_spacing if pixel_size is None else float(pixel_size)
    g = ParallelBeam2D(angles=angles, n_det=n, det_spacing=det_spacing, det_offset=det_offset)
    A = Projector(g, (int(ny), int(nx)), (px, px), backend="torch", check_finite=False)
    return np.asarray(fbp(A, sino, filter=filt), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# sharpness / CoR estimation
# --------------------------------------------------------------------------------------------
def sharpness(img, *, method: str = "entropy", mask=None, value_range: tuple[float, float] | None = None
              ) -> float:
    """Focus measure of a reconstructed image; **higher is sharper**.

    Parameters
    ----------
    img : ``(ny, nx)`` or ``(nz, ny, nx)``, numpy or torch.
    method : {"entropy", "tenengrad"}
        ``"entropy"`` (default): the negative Shannon entropy (nats) of the 256-bin grey-level
        histogram over ``value_range`` (default: the image's own 0.5–99.5 percentiles, so the
        score is invariant to a linear intensity change). A misplaced rotation axis smears every
        edge into arcs ("tuning forks"), which fills the histogram between the material levels
        and lowers this score; it is the measure the "sharpness" CoR search minimises (as entropy).
        ``"tenengrad"``: mean squared Sobel gradient magnitude divided by the image variance
        (classic autofocus measure for *blur*; note it barely separates a wrong rotation axis
        from the right one, because the arcs add edges of their own).
    mask : boolean array like ``img``, optional — only these pixels count (e.g. the
        reconstruction circle).
    value_range : (lo, hi), optional — shared histogram range when comparing several images.
    """
    from scipy import ndimage
    a = _to_numpy(img).astype(np.float64)
    if a.ndim not in (2, 3):
        raise InputError(f"sharpness expects a 2D or 3D image, got shape {a.shape}")
    m = np.ones(a.shape, bool) if mask is None else np.asarray(_to_numpy(mask), bool)
    if m.shape != a.shape:
        raise InputError(f"mask shape {m.shape} does not match the image {a.shape}")
    if method == "entropy":
        v = a[m]
        lo, hi = (np.percentile(v, [0.5, 99.5]) if value_range is None else value_range)
        if not hi > lo:
            return 0.0
        return -_entropy(v, float(lo), float(hi))
    if method == "tenengrad":
        g2 = sum(ndimage.sobel(a, axis=ax, mode="reflect") ** 2 for ax in range(a.ndim))
        var = a[m].var()
        return float(g2[m].mean() / var) if var > 0 else 0.0
    raise InputError(f"unknown sharpness method {method!r}; use 'entropy' or 'tenengrad'")


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    if hasattr(x, "array") and hasattr(x, "spacing"):  # Volume
        return _to_numpy(x.array)
    return np.asarray(x)


@dataclass(frozen=True)
class CorEstimate:
    """Centre-of-rotation estimate.

    offset_px : axis position minus the detector centre ``(n_det − 1)/2``, detector pixels.
    offset_mm : the same in mm (``offset_px · det_spacing``).
    det_offset : value for ``ParallelBeam2D/3D(det_offset=…)`` that reconstructs these data
        (``= −offset_mm``).
    axis_index : fractional detector column of the axis.
    quality : 0…1, how distinct the optimum is (1 − best cost / median cost over the search range);
        below ~0.2 treat the estimate with suspicion.
    method : "opposed" or "sharpness".
    details : method-specific extras (pairs used, search range, the cost curve).
    """

    offset_px: float
    offset_mm: float
    det_offset: float
    axis_index: float
    quality: float
    method: str
    details: dict = field(default_factory=dict, compare=False, repr=False)


def _opposed_pairs(angles: np.ndarray, tol: float):
    """List of (i, j0, j1, w): view i is opposed to (1−w)·view j0 + w·view j1."""
    a = np.mod(angles, 2 * np.pi)
    nv = a.size
    if nv < 2:
        return []
    srt = np.sort(a)
    steps = np.diff(np.concatenate([srt, srt[:1] + 2 * np.pi]))
    step = float(np.median(steps[steps > 1e-9])) if np.any(steps > 1e-9) else 0.0
    pairs = []
    for i in range(nv):
        t = (a[i] + np.pi) % (2 * np.pi)
        d = (a - t + np.pi) % (2 * np.pi) - np.pi  # signed difference in (−π, π]
        j = int(np.argmin(np.abs(d)))
        if abs(d[j]) <= tol:
            pairs.append((i, j, j, 0.0))
            continue
        neg = np.where(d < 0)[0]
        pos = np.where(d > 0)[0]
        if neg.size == 0 or pos.size == 0 or step == 0:
            continue
        jm = neg[np.argmax(d[neg])]
        jp = pos[np.argmin(d[pos])]
        gap = d[jp] - d[jm]
        if gap <= 2.5 * step:
            pairs.append((i, int(jm), int(jp), float(-d[jm] / gap)))
    return pairs


def _minimise_bounded(f, lo: float, hi: float, tol: float = 1e-3) -> float:
    """Minimiser of a unimodal ``f`` on ``[lo, hi]``: ``scipy.optimize.minimize_scalar``
    (bounded Brent), ``xatol = tol``."""
    from scipy.optimize import minimize_scalar

    return float(minimize_scalar(f, bounds=(lo, hi), method="bounded",
                                 options={"xatol": tol}).x)


def _cor_opposed(sino3: np.ndarray, angles: np.ndarray, search: float, tol: float) -> tuple[float, float, dict]:
    from scipy import ndimage
    pairs = _opposed_pairs(angles, tol)
    if not pairs:
        raise InputError("no opposed (θ, θ+180°) views: the angles cover less than 180°",
                         hint="use method='sharpness'")
    # deduplicate symmetric pairs (i↔j exact pairs carry the same information)
    seen, uniq = set(), []
    for i, j0, j1, w in pairs:
        key = (min(i, j0), max(i, j0)) if w == 0 else (i, j0, j1)
        if key in seen:
            continue
        seen.add(key)
        uniq.append((i, j0, j1, w))
    A = np.stack([sino3[i] for i, *_ in uniq]).astype(np.float64)          # (P, rows, n)
    B = np.stack([(1 - w) * sino3[j0] + w * sino3[j1] for _, j0, j1, w in uniq]).astype(np.float64)
    Bm = B[..., ::-1]  # mirrored: Bm[k] = B[n-1-k]
    n = A.shape[-1]
    A2 = A.reshape(-1, n)
    coeffs = ndimage.spline_filter1d(Bm.reshape(-1, n), order=3, axis=-1, mode="nearest")
    n_lines = coeffs.shape[0]
    scale = float(np.mean(A ** 2)) + 1e-30
    kk = np.arange(n)

    def cost(off: float) -> float:
        # B(θ+π)(c + t) = A(θ)(c − t); with Bm(k) = B(n−1−k):  A(k) = Bm(k − 2·off)
        sh = 2.0 * off
        src = kk - sh
        valid = (src >= 0) & (src <= n - 1)
        if valid.sum() < max(8, n // 4):
            return np.inf
        nv = int(valid.sum())
        vals = ndimage.map_coordinates(
            coeffs, [np.repeat(np.arange(n_lines), nv), np.tile(src[valid], n_lines)],
            order=3, mode="nearest", prefilter=False).reshape(n_lines, nv)
        diff = A2[:, valid] - vals
        return float(np.mean(diff ** 2) / scale)

    grid = np.arange(-search, search + 1e-9, 0.5)
    costs = np.array([cost(o) for o in grid])
    finite = np.isfinite(costs)
    if not finite.any():
        raise InputError("opposed-view search found no overlap; the detector is too small")
    b = int(np.nanargmin(np.where(finite, costs, np.nan)))
    best = _minimise_bounded(cost, grid[max(b - 1, 0)], grid[min(b + 1, grid.size - 1)], tol=1e-4)
    cbest = cost(best)
    med = float(np.median(costs[finite]))
    quality = float(max(0.0, 1.0 - cbest / med)) if med > 0 else 0.0
    details = {"n_pairs": len(uniq), "interpolated_pairs": int(sum(1 for p in uniq if p[3] != 0)),
               "grid_px": grid.tolist(), "cost": costs.tolist(), "best_cost": cbest}
    return best, quality, details


def _entropy(v: np.ndarray, lo: float, hi: float, bins: int = 256) -> float:
    h, _ = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    pr = h[h > 0] / h.sum()
    return float(-(pr * np.log(pr)).sum())


def _cor_sharpness(sino2: np.ndarray, angles: np.ndarray, search: float, fbp: str
                   ) -> tuple[float, float, dict]:
    import torch

    from ..geometry import ParallelBeam2D
    from .fbp import backproject_parallel, filter_sinogram

    nv, n = sino2.shape
    m = n
    if fbp not in ("builtin", "medvol"):
        raise InputError(f"unknown fbp {fbp!r} for the sharpness search; use 'builtin' or 'medvol'")
    # the sinogram is filtered once; each candidate axis is one back-projection (the second
    # half of medvol.recon.fbp, same images)
    q = filter_sinogram(torch.from_numpy(np.ascontiguousarray(sino2, dtype=np.float64)), 1.0,
                        "hann")

    def recon(off, mm, px, mask):
        g = ParallelBeam2D(angles=angles, n_det=n, det_spacing=1.0, det_offset=-off)
        return backproject_parallel(q, g, (mm, mm), (px, px)).numpy()[mask]

    def stage(offs: np.ndarray, px: float) -> np.ndarray:
        # one mask for the whole stage: the circle every candidate axis sees in every view
        mm = int(round(m / px))
        yy, xx = np.mgrid[:mm, :mm]
        r = np.hypot(xx - (mm - 1) / 2, yy - (mm - 1) / 2) * px
        rad = (n - 1) / 2 - float(np.max(np.abs(offs))) - 2
        mask = r < max(rad, 4)
        vals = [recon(float(o), mm, px, mask) for o in offs]
        lo = min(float(np.percentile(v, 0.5)) for v in vals)
        hi = max(float(np.percentile(v, 99.5)) for v in vals)
        if not hi > lo:
            return np.zeros(len(offs))
        return np.array([_entropy(v, lo, hi) for v in vals])

    coarse = np.arange(-search, search + 1e-9, 1.0)
    c0 = stage(coarse, 2.0)  # coarse: half-resolution image
    b = float(coarse[int(np.argmin(c0))])
    fine = np.round(np.arange(b - 1.2, b + 1.2 + 1e-9, 0.1), 10)
    c1 = stage(fine, 1.0)
    j = int(np.argmin(c1))
    best = float(fine[j])
    if 0 < j < fine.size - 1:  # vertex of the parabola through the lowest point and neighbours
        y0, y1, y2 = c1[j - 1], c1[j], c1[j + 1]
        den = y0 - 2 * y1 + y2
        if den > 0:
            best += 0.5 * (y0 - y2) / den * 0.1
    med = float(np.median(c0))
    quality = float(max(0.0, 1.0 - float(c0.min()) / med)) if med > 0 else 0.0
    details = {"grid_px": coarse.tolist(), "cost": c0.tolist(), "fine_px": fine.tolist(),
               "fine_cost": c1.tolist(), "metric": "histogram entropy of the FBP image (nats)"}
    return best, quality, details


def estimate_center_of_rotation(sino, angles, *, method: str = "auto", det_spacing: float = 1.0,
                                search_px: float | None = None, rows: Sequence[int] | None = None,
                                fbp: str = "builtin") -> CorEstimate:
    """Estimate where the rotation axis projects onto the detector (parallel beam).

    Parameters
    ----------
    sino : array ``(views, n_det)`` or ``(views, rows, n_det)``
        Line integrals (after flat/dark correction and −log). Numpy or torch.
    angles : ``(views,)`` radians.
    method : {"auto", "opposed", "sharpness"}
        See the module docstring. With a 3D input, "opposed" compares whole projections (all
        rows); "sharpness" reconstructs the row-summed sinogram (the sinogram of the object
        projected along the axis — same centre of rotation), or the mean over ``rows`` if given.
    det_spacing : mm per detector column (only scales ``offset_mm`` / ``det_offset``).
    search_px : half-width of the search range in pixels (default ``n_det / 4``).
    rows : detector rows to use for a 3D input (default all).
    fbp : {"builtin", "medvol"}
        Kept for compatibility; both names now mean :mod:`medvol.recon.fbp` (Hann filter
        applied once, one pixel-driven back-projection per candidate axis).

    Returns
    -------
    CorEstimate

    Examples
    --------
    >>> est = estimate_center_of_rotation(li, p.angles)          # doctest: +SKIP
    >>> g = ParallelBeam2D(p.angles, n_det=li.shape[-1], det_offset=est.det_offset)  # doctest: +SKIP
    """
    s = _to_numpy(sino).astype(np.float64)
    a = np.asarray(_to_numpy(angles), dtype=np.float64).reshape(-1)
    if s.ndim == 2:
        s3 = s[:, None, :]
    elif s.ndim == 3:
        s3 = s
    else:
        raise InputError(f"sinogram must be (views, n_det) or (views, rows, n_det), got {s.shape}")
    if s3.shape[0] != a.size:
        raise InputError(f"{a.size} angles but the sinogram has {s3.shape[0]} views",
                         hint="the sinogram layout is (views, n_det) or (views, rows, n_det)")
    if not np.all(np.isfinite(s3)):
        raise InputError("sinogram contains NaN/infinite values",
                         hint="flat/dark-correct with clipping (flat_dark_correct) first")
    if det_spacing <= 0:
        raise GeometryError(f"det_spacing must be a positive number of mm, got {det_spacing}")
    if rows is not None:
        s3 = s3[:, np.asarray(rows, dtype=int), :]
    n = s3.shape[-1]
    search = float(search_px) if search_px is not None else max(2.0, n / 4)
    if search >= n / 2 - 4:
        raise InputError(f"search_px={search} too large for {n} detector columns")
    step_tol = 1e-3
    if method == "auto":
        method = "opposed" if _opposed_pairs(a, step_tol) else "sharpness"
    if method == "opposed":
        off, q, det = _cor_opposed(s3, a, search, step_tol)
    elif method == "sharpness":
        off, q, det = _cor_sharpness(s3.mean(axis=1), a, search, fbp)
    else:
        raise InputError(f"unknown CoR method {method!r}; use 'auto', 'opposed' or 'sharpness'")
    det["search_px"] = search
    return CorEstimate(offset_px=float(off), offset_mm=float(off * det_spacing),
                       det_offset=float(-off * det_spacing), axis_index=float((n - 1) / 2 + off),
                       quality=q, method=method, details=det)
