"""Compiled (numba) CPU projectors for ``ParallelBeam2D`` and ``FanBeam2D``.

Discretisation (shared by every medvol kernel, see ``medvol.geometry`` for the coordinates):
Joseph's method. Every ray (parallel: ``s_k·u(θ) + t·d(θ)``; fan: source → centre of detector
element ``k``) is sampled once per image row or column along its *dominant* axis — rows when
``|D_y| >= |D_x|`` for the ray direction ``D`` (ties go to rows), columns otherwise. On that
row/column the image is interpolated linearly between the two neighbouring pixel centres, with
zero outside the image, and the sample is weighted by the step length along the ray in mm:
``sy·|D|/|D_y|`` for a row-dominant ray, ``sx·|D|/|D_x|`` for a column-dominant one. Rays are
integrated over the whole line (the object must lie between source and detector).

``adjoint`` is the exact transpose of ``forward`` (same samples and weights, scattered): each
thread scatters into its own image buffer and the buffers are summed at the end.

Speed notes: per view, all per-ray constants (intercept, slope, weight) are precomputed in
float64; the kernel walks image lines in the outer loop and rays in the inner loop, so that the
inner loop reads/writes one image row that sits in L1. Column-dominant rays use a transposed copy
of the image so they too walk contiguous memory. The image is zero-padded by two pixels on each
side of the inner axis and the interpolation index is clamped, so the inner loop has no branch;
per line, the range of rays that can touch the image is found by bisection (the intercept is
monotonic in the ray index within a view).

Public functions (numpy in, numpy out; float32 or float64, output dtype = input dtype)::

    forward(x: (B, ny, nx), geom, spacing=(sy, sx)) -> (B, views, n_det)
    adjoint(y: (B, views, n_det), geom, vol_shape=(ny, nx), spacing=(sy, sx)) -> (B, ny, nx)
"""
from __future__ import annotations

import numpy as np

from medvol.geometry import FanBeam2D, ParallelBeam2D

__all__ = ["forward", "adjoint", "plan", "ray_parameters", "warmup"]

_PAD = 2  # zero pixels on each side of the inner axis

try:  # numba is a hard dependency of medvol, but keep the module importable without it
    import numba as _nb
    from numba import njit, prange
    HAVE_NUMBA = True
except Exception:  # pragma: no cover - exercised only on installs without numba
    HAVE_NUMBA = False


# --------------------------------------------------------------------------------------------
# geometry → per-ray line parameters
# --------------------------------------------------------------------------------------------
def _rays(geom) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Point ``P`` on each ray and its direction ``D`` (not normalised), shapes ``(views, n_det)``."""
    th = np.asarray(geom.angles, dtype=np.float64)[:, None]
    c, s = np.cos(th), np.sin(th)
    sk = ((np.arange(geom.n_det, dtype=np.float64) - (geom.n_det - 1) / 2.0) * geom.det_spacing
          + geom.det_offset)[None, :]
    if isinstance(geom, ParallelBeam2D):
        px, py = sk * c, sk * s
        dx = np.broadcast_to(-s, px.shape)
        dy = np.broadcast_to(c, px.shape)
    elif isinstance(geom, FanBeam2D):
        # source at -src_iso·d, element k at iso_det·d + s_k·u, d = (-sin, cos), u = (cos, sin)
        srcx, srcy = geom.src_iso * s, -geom.src_iso * c
        ex = -geom.iso_det * s + sk * c
        ey = geom.iso_det * c + sk * s
        px = np.broadcast_to(srcx, ex.shape)
        py = np.broadcast_to(srcy, ex.shape)
        dx, dy = ex - srcx, ey - srcy
    else:  # pragma: no cover - guarded by the callers
        raise TypeError(f"_cpu2d handles ParallelBeam2D and FanBeam2D, not "
                        f"{type(geom).__name__}")
    return px, py, dx, dy


def ray_parameters(geom, vol_shape, spacing):
    """Per-ray Joseph parameters, sorted per view (row-dominant rays first, then by ray index).

    Returns
    -------
    a, b, w : float64 arrays ``(views, n_det)``
        Along line ``i`` (row ``i`` for row-dominant rays, column ``i`` otherwise) the ray crosses
        the inner axis at fractional pixel index ``a + b·i``; ``w`` is the step length in mm.
    order : int64 ``(views, n_det)``
        Ray (detector) index of each sorted slot.
    nrow : int64 ``(views,)``
        Number of row-dominant rays of each view (they occupy slots ``[0, nrow)``).
    """
    ny, nx = int(vol_shape[0]), int(vol_shape[1])
    sy, sx = float(spacing[0]), float(spacing[1])
    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    px, py, dx, dy = _rays(geom)
    norm = np.hypot(dx, dy)
    rowdom = np.abs(dy) >= np.abs(dx)
    with np.errstate(divide="ignore", invalid="ignore"):
        # row-dominant: at row r, y_r = (r - cy)·sy  →  column index a + b·r
        ay = (px - (py + cy * sy) * dx / dy) / sx + cx
        by = sy * dx / (dy * sx)
        wy = sy * norm / np.abs(dy)
        # column-dominant: at column c, x_c = (c - cx)·sx  →  row index a + b·c
        ax = (py - (px + cx * sx) * dy / dx) / sy + cy
        bx = sx * dy / (dx * sy)
        wx = sx * norm / np.abs(dx)
    a = np.where(rowdom, ay, ax)
    b = np.where(rowdom, by, bx)
    w = np.where(rowdom, wy, wx)
    # stable sort: row-dominant first, ascending detector index inside each group
    order = np.argsort(~rowdom, axis=1, kind="stable").astype(np.int64)
    take = lambda arr: np.ascontiguousarray(np.take_along_axis(arr, order, axis=1))  # noqa: E731
    nrow = rowdom.sum(axis=1).astype(np.int64)
    return take(a), take(b), take(w), order, nrow


def _source_outside(geom, vol_shape, spacing) -> bool:
    """True when per-line ray ranges may be bisected (intercepts monotonic in the ray index)."""
    if isinstance(geom, ParallelBeam2D):
        return True
    ny, nx = vol_shape
    sy, sx = spacing
    half = 0.5 * np.hypot(ny * sy, nx * sx)
    return bool(geom.src_iso > half + 1e-9)


# --------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------
if HAVE_NUMBA:

    @njit(cache=True, fastmath=False, inline="always")
    def _first_above(a, b, v, lo, hi, line, sgn, thr):  # pragma: no cover - compiled
        """First slot ``j`` in ``[lo, hi)`` with ``sgn·(a[v,j] + b[v,j]·line) > thr`` (hi if none).

        Requires the predicate to be monotone (False … True) over the slots.
        """
        while lo < hi:
            mid = (lo + hi) >> 1
            if sgn * (a[v, mid] + b[v, mid] * line) > thr:
                hi = mid
            else:
                lo = mid + 1
        return lo

    @njit(cache=True, fastmath=False)
    def _line_range(a, b, v, lo, hi, line, n_inner, bisect):  # pragma: no cover - compiled
        """Slots ``[j0, j1)`` of rays that may touch image line ``line`` (conservative by 1)."""
        if not bisect or hi - lo < 4:
            return lo, hi
        f_first = a[v, lo] + b[v, lo] * line
        f_last = a[v, hi - 1] + b[v, hi - 1] * line
        if f_last >= f_first:
            j0 = _first_above(a, b, v, lo, hi, line, 1.0, -1.0)
            j1 = _first_above(a, b, v, lo, hi, line, 1.0, float(n_inner))
        else:
            j0 = _first_above(a, b, v, lo, hi, line, -1.0, -float(n_inner))
            j1 = _first_above(a, b, v, lo, hi, line, -1.0, 1.0)
        j0 = max(lo, j0 - 1)
        j1 = min(hi, j1 + 1)
        return j0, j1

    @njit(fastmath=True, cache=True)
    def _line_gather(row, av, bv, line, j0, j1, fmax, acc):  # pragma: no cover - compiled
        """acc[j] += interpolated ``row`` at ``av[j] + bv[j]·line`` (padded, clamped index)."""
        one = row.dtype.type
        for j in range(j0, j1):
            f = av[j] + bv[j] * line
            f = min(max(f, -2.0), fmax) + 2.0
            i0 = int(f)
            fr = one(f - i0)
            r0 = row[i0]
            acc[j] += r0 + fr * (row[i0 + 1] - r0)

    @njit(fastmath=True, cache=True)
    def _line_scatter(row, av, bv, line, j0, j1, fmax, vals):  # pragma: no cover - compiled
        """Transpose of :func:`_line_gather`: scatter ``vals[j]`` with the same weights."""
        one = row.dtype.type
        for j in range(j0, j1):
            f = av[j] + bv[j] * line
            f = min(max(f, -2.0), fmax) + 2.0
            i0 = int(f)
            fr = one(f - i0)
            val = vals[j]
            t = fr * val
            row[i0] += val - t
            row[i0 + 1] += t

    @njit(parallel=True, fastmath=True, cache=True)
    def _fwd_kernel(img, imgT, a, b, w, order, nrow, out, bisect):  # pragma: no cover
        """img (B, ny, nx+4), imgT (B, nx, ny+4) zero-padded; out (B, V, N)."""
        nb = img.shape[0]
        ny = img.shape[1]
        nx = imgT.shape[1]
        nv = a.shape[0]
        nd = a.shape[1]
        for bv in prange(nb * nv):
            bi = bv // nv
            v = bv - bi * nv
            acc = np.zeros(nd, dtype=img.dtype)
            av = a[v]
            bvv = b[v]
            for group in range(2):
                if group == 0:
                    lo = 0
                    hi = nrow[v]
                    nl = ny
                    ni = nx
                else:
                    lo = nrow[v]
                    hi = nd
                    nl = nx
                    ni = ny
                if hi <= lo:
                    continue
                fmax = float(ni)
                for line in range(nl):
                    if group == 0:
                        row = img[bi, line]
                    else:
                        row = imgT[bi, line]
                    j0, j1 = _line_range(a, b, v, lo, hi, line, ni, bisect)
                    _line_gather(row, av, bvv, line, j0, j1, fmax, acc)
            for j in range(nd):  # the step length is constant along a ray: apply it once
                out[bi, v, order[v, j]] = acc[j] * w[v, j]

    @njit(parallel=True, fastmath=True, cache=True)
    def _adj_kernel(sino, a, b, w, order, nrow, buf, bufT, nchunk, bisect):  # pragma: no cover
        """sino (B, V, N); buf (nchunk, B, ny, nx+4), bufT (nchunk, B, nx, ny+4) zeroed."""
        nb = sino.shape[0]
        nv = a.shape[0]
        nd = a.shape[1]
        ny = buf.shape[2]
        nx = bufT.shape[2]
        per = (nv + nchunk - 1) // nchunk
        for c in prange(nchunk):
            vals = np.empty(nd, dtype=sino.dtype)
            for bi in range(nb):
                for v in range(c * per, min(nv, (c + 1) * per)):
                    for j in range(nd):
                        vals[j] = sino[bi, v, order[v, j]] * w[v, j]
                    av = a[v]
                    bvv = b[v]
                    for group in range(2):
                        if group == 0:
                            lo = 0
                            hi = nrow[v]
                            nl = ny
                            ni = nx
                        else:
                            lo = nrow[v]
                            hi = nd
                            nl = nx
                            ni = ny
                        if hi <= lo:
                            continue
                        fmax = float(ni)
                        for line in range(nl):
                            if group == 0:
                                row = buf[c, bi, line]
                            else:
                                row = bufT[c, bi, line]
                            j0, j1 = _line_range(a, b, v, lo, hi, line, ni, bisect)
                            _line_scatter(row, av, bvv, line, j0, j1, fmax, vals)

    @njit(parallel=True, fastmath=True, cache=True)
    def _adj_reduce(buf, bufT, out):  # pragma: no cover - compiled
        """out[b, r, c] = Σ_chunks buf[., b, r, c+2] + bufT[., b, c, r+2]."""
        nchunk = buf.shape[0]
        nb = out.shape[0]
        ny = out.shape[1]
        nx = out.shape[2]
        for br in prange(nb * ny):
            bi = br // ny
            r = br - bi * ny
            for c in range(nx):
                s = 0.0
                for k in range(nchunk):
                    s += buf[k, bi, r, c + _PAD] + bufT[k, bi, c, r + _PAD]
                out[bi, r, c] = s


# --------------------------------------------------------------------------------------------
# numpy reference (slow; used when numba is missing and by tests of the compiled kernels)
# --------------------------------------------------------------------------------------------
def _reference_matrix_apply(x, geom, spacing, transpose=False, y=None, vol_shape=None):
    """Plain-numpy Joseph projector (vectorised over rays); exact same discretisation."""
    if transpose:
        ny, nx = vol_shape
    else:
        ny, nx = x.shape[-2:]
    a, b, w, order, nrow = ray_parameters(geom, (ny, nx), spacing)
    nv, nd = a.shape
    slot = np.arange(nd)[None, :]
    rowdom = slot < nrow[:, None]
    if not transpose:
        bsz = x.shape[0]
        out = np.zeros((bsz, nv, nd), dtype=np.float64)
    else:
        bsz = y.shape[0]
        out = np.zeros((bsz, ny, nx), dtype=np.float64)
    vv = np.broadcast_to(np.arange(nv)[:, None], (nv, nd))
    for grp, (nl, ni) in enumerate(((ny, nx), (nx, ny))):
        mask = rowdom if grp == 0 else ~rowdom
        if not mask.any():
            continue
        vsel, jsel = vv[mask], np.broadcast_to(slot, (nv, nd))[mask]
        kdet = order[vsel, jsel]
        for line in range(nl):
            f = a[vsel, jsel] + b[vsel, jsel] * line
            i0 = np.floor(f).astype(np.int64)
            fr = f - i0
            for off, wt in ((0, 1.0 - fr), (1, fr)):
                idx = i0 + off
                ok = (idx >= 0) & (idx < ni)
                r, c = (np.full(idx.shape, line), idx) if grp == 0 else (idx, np.full(idx.shape, line))
                coef = (w[vsel, jsel] * wt)[ok]
                if not transpose:
                    out[:, vsel[ok], kdet[ok]] += coef * x[:, r[ok], c[ok]]
                else:
                    contrib = coef * y[:, vsel[ok], kdet[ok]]
                    np.add.at(out, (slice(None), r[ok], c[ok]), contrib)
    return out


# --------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------
def _check_dtype(arr: np.ndarray) -> np.ndarray:
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)
    return arr


def _nchunk() -> int:
    return max(1, int(_nb.get_num_threads())) if HAVE_NUMBA else 1


def plan(geom, vol_shape, spacing=(1.0, 1.0)) -> tuple:
    """Precompute the per-ray tables once (tens of ms at 720 × 729 rays); pass as ``plan=``."""
    vol_shape = (int(vol_shape[0]), int(vol_shape[1]))
    spacing = (float(spacing[0]), float(spacing[1]))
    return (vol_shape, spacing, *ray_parameters(geom, vol_shape, spacing),
            _source_outside(geom, vol_shape, spacing))


def _get_plan(pl, geom, vol_shape, spacing):
    vol_shape = (int(vol_shape[0]), int(vol_shape[1]))
    spacing = (float(spacing[0]), float(spacing[1]))
    if pl is None or pl[0] != vol_shape or pl[1] != spacing:
        pl = plan(geom, vol_shape, spacing)
    return pl[2:]


def forward(x: np.ndarray, geom, spacing=(1.0, 1.0), *, plan=None) -> np.ndarray:
    """Forward projection ``y = A x``.

    Parameters
    ----------
    x : ndarray ``(B, ny, nx)``, float32 or float64
        Images (attenuation per mm).
    geom : ParallelBeam2D or FanBeam2D
    spacing : (sy, sx) in mm
    plan : optional result of :func:`plan` for this geometry (saves recomputing the tables)

    Returns
    -------
    ndarray ``(B, views, n_det)``, same dtype as ``x``; line integrals (image units × mm).
    """
    x = _check_dtype(np.asarray(x))
    bsz, ny, nx = x.shape
    a, b, w, order, nrow, bisect = _get_plan(plan, geom, (ny, nx), spacing)
    if not HAVE_NUMBA:  # pragma: no cover
        return _reference_matrix_apply(x.astype(np.float64), geom, spacing).astype(x.dtype)
    img = np.zeros((bsz, ny, nx + 2 * _PAD), dtype=x.dtype)
    img[:, :, _PAD:_PAD + nx] = x
    imgT = np.zeros((bsz, nx, ny + 2 * _PAD), dtype=x.dtype)
    imgT[:, :, _PAD:_PAD + ny] = x.transpose(0, 2, 1)
    out = np.empty((bsz, a.shape[0], a.shape[1]), dtype=x.dtype)
    _fwd_kernel(img, imgT, a, b, w, order, nrow, out, bisect)
    return out


def adjoint(y: np.ndarray, geom, vol_shape, spacing=(1.0, 1.0), *, plan=None) -> np.ndarray:
    """Back projection ``x = Aᵀ y``, the exact transpose of :func:`forward`.

    Parameters
    ----------
    y : ndarray ``(B, views, n_det)``, float32 or float64
    geom : ParallelBeam2D or FanBeam2D
    vol_shape : (ny, nx)
    spacing : (sy, sx) in mm
    plan : optional result of :func:`plan` for this geometry

    Returns
    -------
    ndarray ``(B, ny, nx)``, same dtype as ``y``.
    """
    y = np.ascontiguousarray(_check_dtype(np.asarray(y)))
    ny, nx = int(vol_shape[0]), int(vol_shape[1])
    a, b, w, order, nrow, bisect = _get_plan(plan, geom, (ny, nx), spacing)
    if not HAVE_NUMBA:  # pragma: no cover
        return _reference_matrix_apply(None, geom, spacing, True, y.astype(np.float64),
                                       (ny, nx)).astype(y.dtype)
    bsz = y.shape[0]
    nchunk = min(_nchunk(), a.shape[0])
    buf = np.zeros((nchunk, bsz, ny, nx + 2 * _PAD), dtype=y.dtype)
    bufT = np.zeros((nchunk, bsz, nx, ny + 2 * _PAD), dtype=y.dtype)
    _adj_kernel(y, a, b, w, order, nrow, buf, bufT, nchunk, bisect)
    out = np.empty((bsz, ny, nx), dtype=y.dtype)
    _adj_reduce(buf, bufT, out)
    return out


def warmup() -> None:
    """Compile (or load from cache) every kernel specialisation once (float32 and float64)."""
    if not HAVE_NUMBA:  # pragma: no cover
        return
    g = ParallelBeam2D(angles=np.array([0.1, 1.2]), n_det=6)
    for dt in (np.float32, np.float64):
        x = np.ones((1, 4, 5), dtype=dt)
        adjoint(forward(x, g), g, (4, 5))
