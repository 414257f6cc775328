"""Numba CPU Joseph projectors for 3D geometries (``ParallelBeam3D``, ``ConeBeam3D``).

Same discretisation as :mod:`medvol.kernels._torch_kernels` (read its docstring): every ray is
the whole line through the source (cone) or detector point (parallel), sampled once per
``y``-slice or ``x``-slice of the volume along its dominant in-plane axis (``y`` when
``|d_y| >= |d_x|``), bilinear interpolation in that slice's (other in-plane axis, ``z``) plane
with zero outside the grid, each sample weighted by the step length in mm.

Both directions first build the same per-ray table ``(ydom, a, b, az, bz, step)`` for a chunk of
views, so the weights of forward and adjoint are bit-identical and the adjoint is the exact
transpose:

* ``forward`` runs in parallel over rays (gather);
* ``adjoint`` scatters, in parallel over blocks of volume slices: pass 1 over ``y``-slices for
  the ``y``-dominant rays, pass 2 over ``x``-slices for the ``x``-dominant ones. A ray's sample
  on slice ``j`` touches only voxels of slice ``j``, so threads never write the same voxel, no
  per-thread volume buffers are needed, and the result does not depend on the thread count.

Arithmetic is float64 inside; outputs have the input's dtype (float32 or float64).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from medvol.errors import GeometryError, InputError

__all__ = ["forward", "adjoint"]

#: Upper bound (bytes) of one chunk's ray table.
TABLE_BYTES = 64 * 2**20
#: Rays per cache-resident tile in the adjoint scatter.
ADJOINT_TILE = 2048


@njit(parallel=True, fastmath=True, cache=True)
def _ray_table(cos, sin, s, v, cone, src_iso, iso_det, nz, ny, nx, sz, sy, sx, table):
    """Fill ``table (views·rows·det, 6)`` with ``ydom, a, b, az, bz, step`` per ray."""
    nv = cos.shape[0]
    nr = v.shape[0]
    nk = s.shape[0]
    cx = (nx - 1) / 2.0
    cy = (ny - 1) / 2.0
    cz = (nz - 1) / 2.0
    R = src_iso + iso_det
    for q in prange(nv * nr):
        iv = q // nr
        ir = q % nr
        c = cos[iv]
        sn = sin[iv]
        vr = v[ir]
        for ik in range(nk):
            sk = s[ik]
            if cone:
                px = src_iso * sn
                py = -src_iso * c
                pz = 0.0
                dx = sk * c - R * sn
                dy = sk * sn + R * c
                dz = vr
            else:
                px = sk * c
                py = sk * sn
                pz = vr
                dx = -sn
                dy = c
                dz = 0.0
            length = math.sqrt(dx * dx + dy * dy + dz * dz)
            row = table[q * nk + ik]
            if abs(dy) >= abs(dx):
                slope = dx / dy
                slope_z = dz / dy
                off = cy * sy + py
                row[0] = 1.0
                row[1] = (px - off * slope) / sx + cx
                row[2] = sy * slope / sx
                row[3] = (pz - off * slope_z) / sz + cz
                row[4] = sy * slope_z / sz
                row[5] = sy * length / abs(dy)
            else:
                slope = dy / dx
                slope_z = dz / dx
                off = cx * sx + px
                row[0] = 0.0
                row[1] = (py - off * slope) / sy + cy
                row[2] = sx * slope / sy
                row[3] = (pz - off * slope_z) / sz + cz
                row[4] = sx * slope_z / sz
                row[5] = sx * length / abs(dx)


@njit(inline="always")
def _sample_range(a, b, n, n_dom):
    """Conservative range ``[lo, hi)`` of slices where ``-1 < a + m·b < n`` can hold."""
    if abs(b) < 1e-12:
        if a > -1.0 and a < n:
            return 0, n_dom
        return 0, 0
    m0 = (-1.0 - a) / b
    m1 = (n - a) / b
    if m0 > m1:
        m0, m1 = m1, m0
    lo = max(0, int(math.floor(m0)) - 1)
    hi = min(n_dom, int(math.ceil(m1)) + 2)
    return lo, hi


@njit(parallel=True, fastmath=True, cache=True)
def _forward_chunk(xf, table, nz, ny, nx, out):
    """Gather: ``out[q] = step_q · Σ_m bilinear(x, sample m of ray q)``; ``xf`` flat (z, y, x)."""
    plane = ny * nx
    for q in prange(table.shape[0]):
        row = table[q]
        if row[0] > 0.5:
            n_dom, n_oth, st_dom, st_oth = ny, nx, nx, 1
        else:
            n_dom, n_oth, st_dom, st_oth = nx, ny, 1, nx
        a, b, az, bz = row[1], row[2], row[3], row[4]
        lo, hi = _sample_range(a, b, n_oth, n_dom)
        lz, hz = _sample_range(az, bz, nz, n_dom)
        lo = max(lo, lz)
        hi = min(hi, hz)
        acc = 0.0
        for m in range(lo, hi):
            f = a + m * b
            g = az + m * bz
            fi = math.floor(f)
            fk = math.floor(g)
            i0 = int(fi)
            k0 = int(fk)
            w1 = f - fi
            w0 = 1.0 - w1
            v1 = g - fk
            v0 = 1.0 - v1
            base = m * st_dom
            if k0 >= 0 and k0 < nz:
                zb = k0 * plane + base
                if i0 >= 0 and i0 < n_oth:
                    acc += w0 * v0 * xf[zb + i0 * st_oth]
                if i0 >= -1 and i0 < n_oth - 1:
                    acc += w1 * v0 * xf[zb + (i0 + 1) * st_oth]
            if k0 >= -1 and k0 < nz - 1:
                zb = (k0 + 1) * plane + base
                if i0 >= 0 and i0 < n_oth:
                    acc += w0 * v1 * xf[zb + i0 * st_oth]
                if i0 >= -1 and i0 < n_oth - 1:
                    acc += w1 * v1 * xf[zb + (i0 + 1) * st_oth]
        out[q] = acc * row[5]


@njit(parallel=True, fastmath=True, cache=True)
def _adjoint_chunk(yf, table, nz, ny, nx, ydom_pass, tile, n_blocks, out):
    """Scatter ``y`` of the rays of one dominance class into ``out`` (flat (z, y, x), float64).

    The dominant slices are split into ``n_blocks`` contiguous blocks, processed in parallel
    (one parallel region per call, so a busy machine costs no per-tile barriers); a thread writes
    only voxels of its own slices. Within a block, rays are taken in tiles of ``tile`` so that
    the tile's table stays in cache while the thread walks its slices.
    """
    plane = ny * nx
    if ydom_pass:
        n_dom, n_oth, st_dom, st_oth = ny, nx, nx, 1
    else:
        n_dom, n_oth, st_dom, st_oth = nx, ny, 1, nx
    nq = table.shape[0]
    for blk in prange(n_blocks):
        m_lo = blk * n_dom // n_blocks
        m_hi = (blk + 1) * n_dom // n_blocks
        for t0 in range(0, nq, tile):
            t1 = min(nq, t0 + tile)
            for m in range(m_lo, m_hi):
                base = m * st_dom
                for q in range(t0, t1):
                    row = table[q]
                    if (row[0] > 0.5) != ydom_pass:
                        continue
                    val = yf[q]
                    if val == 0.0:
                        continue
                    f = row[1] + m * row[2]
                    g = row[3] + m * row[4]
                    fi = math.floor(f)
                    fk = math.floor(g)
                    i0 = int(fi)
                    k0 = int(fk)
                    if i0 < -1 or i0 >= n_oth or k0 < -1 or k0 >= nz:
                        continue
                    val = val * row[5]
                    w1 = f - fi
                    w0 = 1.0 - w1
                    v1 = g - fk
                    v0 = 1.0 - v1
                    if k0 >= 0:
                        zb = k0 * plane + base
                        if i0 >= 0:
                            out[zb + i0 * st_oth] += w0 * v0 * val
                        if i0 < n_oth - 1:
                            out[zb + (i0 + 1) * st_oth] += w1 * v0 * val
                    if k0 < nz - 1:
                        zb = (k0 + 1) * plane + base
                        if i0 >= 0:
                            out[zb + i0 * st_oth] += w0 * v1 * val
                        if i0 < n_oth - 1:
                            out[zb + (i0 + 1) * st_oth] += w1 * v1 * val


# --------------------------------------------------------------------------------------------
# Python wrappers
# --------------------------------------------------------------------------------------------
def _setup(geom, vol_shape, spacing):
    from medvol.geometry import ConeBeam3D, ParallelBeam3D

    if isinstance(geom, ConeBeam3D):
        cone, src_iso, iso_det = True, float(geom.src_iso), float(geom.iso_det)
    elif isinstance(geom, ParallelBeam3D):
        cone, src_iso, iso_det = False, 0.0, 0.0
    else:
        raise GeometryError(f"the numba 3D kernels take ParallelBeam3D or ConeBeam3D, got "
                            f"{type(geom).__name__}; use the 2D kernels for 2D geometries")
    vol_shape = tuple(int(n) for n in vol_shape)
    if len(vol_shape) != 3 or min(vol_shape) < 1:
        raise GeometryError(f"volume shape {vol_shape} must be (nz, ny, nx) for a 3D geometry")
    spacing = tuple(float(x) for x in spacing)
    if len(spacing) != 3 or not all(math.isfinite(x) and x > 0 for x in spacing):
        raise GeometryError(f"spacing {spacing} must hold 3 positive mm values (sz, sy, sx)")
    s = (np.arange(geom.n_det) - (geom.n_det - 1) / 2.0) * geom.det_spacing + geom.det_offset
    v = ((np.arange(geom.n_rows) - (geom.n_rows - 1) / 2.0) * geom.det_spacing_row
         + geom.det_offset_row)
    cos = np.cos(geom.angles)
    sin = np.sin(geom.angles)
    per_view = geom.n_rows * geom.n_det * 6 * 8
    chunk = max(1, min(geom.n_views, TABLE_BYTES // per_view))
    return cone, src_iso, iso_det, vol_shape, spacing, s, v, cos, sin, chunk


def _check_array(a, name, tail, what):
    if not isinstance(a, np.ndarray):
        raise InputError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in (np.float32, np.float64):
        raise InputError(f"{name} has dtype {a.dtype}; the numba projector takes float32 or "
                         "float64 — convert it with .astype(np.float32)")
    if a.ndim != len(tail) + 1 or tuple(a.shape[1:]) != tuple(tail):
        raise GeometryError(f"{name} has shape {a.shape}; expected (B, "
                            f"{', '.join(map(str, tail))}) for this {what}")


def forward(x: np.ndarray, geom, spacing: tuple[float, ...]) -> np.ndarray:
    """Joseph forward projection of 3D volumes.

    Parameters
    ----------
    x : ndarray, shape ``(B, nz, ny, nx)``, float32/float64
        Volumes in attenuation units per mm.
    geom : ParallelBeam3D | ConeBeam3D
    spacing : tuple of float
        Voxel size ``(sz, sy, sx)`` in mm.

    Returns
    -------
    ndarray, shape ``(B, views, n_rows, n_det)``, dtype of ``x``
        Line integrals in mm × image units.
    """
    if not isinstance(x, np.ndarray):
        raise InputError(f"volume must be a numpy array, got {type(x).__name__}")
    cone, src_iso, iso_det, vol_shape, spacing, s, v, cos, sin, chunk = _setup(
        geom, x.shape[1:], spacing)
    _check_array(x, "volume", vol_shape, type(geom).__name__)
    nz, ny, nx = vol_shape
    sz, sy, sx = spacing
    B = x.shape[0]
    per_view = geom.n_rows * geom.n_det
    out = np.empty((B, geom.n_views * per_view), dtype=x.dtype)
    table = np.empty((chunk * per_view, 6))
    xs = [np.ascontiguousarray(x[b]).reshape(-1) for b in range(B)]
    tmp = np.empty(chunk * per_view)
    for v0 in range(0, geom.n_views, chunk):
        v1 = min(geom.n_views, v0 + chunk)
        n = (v1 - v0) * per_view
        _ray_table(cos[v0:v1], sin[v0:v1], s, v, cone, src_iso, iso_det,
                   nz, ny, nx, sz, sy, sx, table[:n])
        for b in range(B):
            _forward_chunk(xs[b], table[:n], nz, ny, nx, tmp[:n])
            out[b, v0 * per_view:v1 * per_view] = tmp[:n]
    return out.reshape(B, *geom.sino_shape)


def adjoint(y: np.ndarray, geom, vol_shape: tuple, spacing: tuple[float, ...]) -> np.ndarray:
    """Exact transpose of :func:`forward` (unfiltered back projection).

    Parameters
    ----------
    y : ndarray, shape ``(B, views, n_rows, n_det)``, float32/float64
    geom : ParallelBeam3D | ConeBeam3D
    vol_shape : tuple of int
        ``(nz, ny, nx)``.
    spacing : tuple of float
        Voxel size ``(sz, sy, sx)`` in mm.

    Returns
    -------
    ndarray, shape ``(B, nz, ny, nx)``, dtype of ``y``
    """
    cone, src_iso, iso_det, vol_shape, spacing, s, v, cos, sin, chunk = _setup(
        geom, vol_shape, spacing)
    _check_array(y, "sinogram", geom.sino_shape, type(geom).__name__)
    nz, ny, nx = vol_shape
    sz, sy, sx = spacing
    B = y.shape[0]
    per_view = geom.n_rows * geom.n_det
    acc = np.zeros((B, nz * ny * nx))
    table = np.empty((chunk * per_view, 6))
    threads = numba.get_num_threads()
    nb_y, nb_x = min(ny, 4 * threads), min(nx, 4 * threads)
    yf = y.reshape(B, -1).astype(np.float64, copy=False)
    for v0 in range(0, geom.n_views, chunk):
        v1 = min(geom.n_views, v0 + chunk)
        n = (v1 - v0) * per_view
        _ray_table(cos[v0:v1], sin[v0:v1], s, v, cone, src_iso, iso_det,
                   nz, ny, nx, sz, sy, sx, table[:n])
        for b in range(B):
            yc = np.ascontiguousarray(yf[b, v0 * per_view:v1 * per_view])
            _adjoint_chunk(yc, table[:n], nz, ny, nx, True, ADJOINT_TILE, nb_y, acc[b])
            _adjoint_chunk(yc, table[:n], nz, ny, nx, False, ADJOINT_TILE, nb_x, acc[b])
    return acc.reshape(B, *vol_shape).astype(y.dtype, copy=False)
