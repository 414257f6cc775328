"""Analytic ellipse / ellipsoid phantoms and their exact projections.

A 2D phantom is an array of ellipses, one per row ``(value, a, b, x0, y0, phi)``: attenuation
added inside the ellipse (image units, e.g. 1/mm), semi-axes ``a`` (along the ellipse's first axis)
and ``b`` in mm, centre ``(x0, y0)`` in mm, and ``phi`` (radians) the angle from +x to the first
axis, counter-clockwise towards +y. A 3D phantom uses ellipsoids
``(value, a, b, c, x0, y0, z0, phi)`` rotated about +z by ``phi`` (``c`` is the z semi-axis).

Coordinates follow :mod:`medvol.geometry`: pixel ``(r, c)`` of an ``(ny, nx)`` image has its centre
at ``x = (c - (nx-1)/2)·sx``, ``y = (r - (ny-1)/2)·sy``; rows run along +y. The Shepp–Logan tables
here are written with ``y`` flipped relative to the textbook figure, so that an image displayed
with row 0 at the top (``imshow``) looks like the familiar picture.

:func:`ellipse_sinogram` returns **analytic** line integrals (mm × image units) of every ray of
a :class:`~medvol.geometry.ParallelBeam2D`, :class:`~medvol.geometry.FanBeam2D`,
:class:`~medvol.geometry.ParallelBeam3D` or :class:`~medvol.geometry.ConeBeam3D` geometry — no
pixelisation — so reconstructions can be compared against exact truth.
"""
from __future__ import annotations

import numpy as np

from .errors import GeometryError, InputError

__all__ = [
    "shepp_logan_ellipses", "shepp_logan_ellipsoids", "shepp_logan_2d", "shepp_logan_3d",
    "ellipse_image", "ellipsoid_volume", "ellipse_sinogram",
]

# Textbook Shepp–Logan table in units of the half field of view:
# (value original, value modified [Toft], a, b, x0, y0, phi [deg]); z-extent for 3D: (c, z0).
_SL = np.array([
    # A_orig  A_mod   a       b       x0     y0      phi    c      z0
    [2.00,   1.00,  0.6900, 0.9200, 0.00,  0.0000,   0.0, 0.810, 0.00],
    [-0.98, -0.80,  0.6624, 0.8740, 0.00, -0.0184,   0.0, 0.780, 0.00],
    [-0.02, -0.20,  0.1100, 0.3100, 0.22,  0.0000, -18.0, 0.220, 0.00],
    [-0.02, -0.20,  0.1600, 0.4100, -0.22, 0.0000,  18.0, 0.280, 0.00],
    [0.01,   0.10,  0.2100, 0.2500, 0.00,  0.3500,   0.0, 0.410, -0.15],
    [0.01,   0.10,  0.0460, 0.0460, 0.00,  0.1000,   0.0, 0.050, 0.25],
    [0.01,   0.10,  0.0460, 0.0460, 0.00, -0.1000,   0.0, 0.050, 0.25],
    [0.01,   0.10,  0.0460, 0.0230, -0.08, -0.6050,  0.0, 0.050, 0.00],
    [0.01,   0.10,  0.0230, 0.0230, 0.00, -0.6060,   0.0, 0.020, 0.00],
    [0.01,   0.10,  0.0230, 0.0460, 0.06, -0.6050,   0.0, 0.020, 0.00],
])


def shepp_logan_ellipses(fov: float = 2.0, *, modified: bool = True) -> np.ndarray:
    """Shepp–Logan ellipses scaled to a field of view.

    Parameters
    ----------
    fov : float
        Width in mm of the square the textbook phantom's ``[-1, 1]²`` is mapped onto (the outer
        ellipse spans 0.69·fov × 0.92·fov).
    modified : bool
        Use Toft's higher-contrast values (outer 1.0, brain 0.2, features 0.1–0.4) instead of the
        original (outer 2.0, brain 1.02).

    Returns
    -------
    ndarray, shape ``(10, 6)``
        Rows ``(value, a, b, x0, y0, phi)`` in image units, mm, mm, mm, mm, radians.
    """
    if not np.isfinite(fov) or fov <= 0:
        raise InputError(f"phantom field of view must be a positive number of mm, got {fov}")
    h = fov / 2.0
    t = _SL
    out = np.empty((len(t), 6))
    out[:, 0] = t[:, 1] if modified else t[:, 0]
    out[:, 1] = t[:, 2] * h
    out[:, 2] = t[:, 3] * h
    out[:, 3] = t[:, 4] * h
    out[:, 4] = -t[:, 5] * h            # y flipped: display orientation with row 0 at the top
    out[:, 5] = -np.deg2rad(t[:, 6])
    return out


def shepp_logan_ellipsoids(fov: float = 2.0, *, modified: bool = True) -> np.ndarray:
    """3D Shepp–Logan-style ellipsoids: the 2D ellipses given z semi-axes and z centres.

    The in-plane parameters are those of :func:`shepp_logan_ellipses` (so the ``z = 0`` section
    is close to, but not identical with, the 2D phantom); z extents follow Kak & Slaney's 3D
    table; the small out-of-plane tilts of that table are omitted (rotation about z only).

    Returns
    -------
    ndarray, shape ``(10, 8)``
        Rows ``(value, a, b, c, x0, y0, z0, phi)``.
    """
    e2 = shepp_logan_ellipses(fov, modified=modified)
    h = fov / 2.0
    out = np.empty((len(e2), 8))
    out[:, 0:3] = e2[:, 0:3]
    out[:, 3] = _SL[:, 7] * h
    out[:, 4:6] = e2[:, 3:5]
    out[:, 6] = _SL[:, 8] * h
    out[:, 7] = e2[:, 5]
    return out


def _check(ell, ncol: int, what: str) -> np.ndarray:
    e = np.asarray(ell, dtype=np.float64)
    if e.ndim == 1:
        e = e[None]
    if e.ndim != 2 or e.shape[1] != ncol:
        raise InputError(f"{what} must be an array of shape (n, {ncol}), got {np.shape(ell)}")
    naxes = 2 if ncol == 6 else 3
    if np.any(e[:, 1:1 + naxes] <= 0) or not np.all(np.isfinite(e)):
        raise InputError(f"{what}: semi-axes must be positive mm and all entries finite")
    return e


def _grid_axes(shape, spacing, supersample: int):
    axes = []
    for n, s in zip(shape, spacing):
        centres = (np.arange(n) - (n - 1) / 2.0) * s
        sub = ((np.arange(supersample) + 0.5) / supersample - 0.5) * s
        axes.append((centres[:, None] + sub[None, :]).reshape(-1))
    return axes


def _bin(img: np.ndarray, ss: int) -> np.ndarray:
    if ss == 1:
        return img
    shp = []
    for n in img.shape:
        shp += [n // ss, ss]
    return img.reshape(shp).mean(axis=tuple(range(1, 2 * img.ndim, 2)))


def ellipse_image(ellipses, shape: tuple[int, int], spacing=(1.0, 1.0), *,
                  supersample: int = 1) -> np.ndarray:
    """Render ellipses on a pixel grid.

    Parameters
    ----------
    ellipses : array ``(n, 6)``
        Rows ``(value, a, b, x0, y0, phi)`` (see module docstring).
    shape : (ny, nx)
        Image shape.
    spacing : (sy, sx)
        Pixel size in mm, in array order.
    supersample : int
        Each pixel is the mean of ``supersample²`` point samples (partial-volume averaging).

    Returns
    -------
    ndarray ``(ny, nx)`` float64
    """
    e = _check(ellipses, 6, "ellipses")
    ss = int(supersample)
    if ss < 1:
        raise InputError(f"supersample must be >= 1, got {supersample}")
    ys, xs = _grid_axes(shape, _pair(spacing), ss)
    Y, X = np.meshgrid(ys, xs, indexing="ij")
    img = np.zeros_like(X)
    for val, a, b, x0, y0, phi in e:
        c, s = np.cos(phi), np.sin(phi)
        dx, dy = X - x0, Y - y0
        p = dx * c + dy * s
        q = -dx * s + dy * c
        img += val * (((p / a) ** 2 + (q / b) ** 2) <= 1.0)
    return _bin(img, ss)


def ellipsoid_volume(ellipsoids, shape: tuple[int, int, int], spacing=(1.0, 1.0, 1.0), *,
                     supersample: int = 1) -> np.ndarray:
    """Render ellipsoids ``(value, a, b, c, x0, y0, z0, phi)`` on a ``(nz, ny, nx)`` grid.

    ``spacing`` is ``(sz, sy, sx)`` in mm; ``supersample`` as in :func:`ellipse_image`.
    """
    e = _check(ellipsoids, 8, "ellipsoids")
    ss = int(supersample)
    if ss < 1:
        raise InputError(f"supersample must be >= 1, got {supersample}")
    sp = tuple(float(v) for v in np.broadcast_to(np.asarray(spacing, float), (3,)))
    zs, ys, xs = _grid_axes(shape, sp, ss)
    Y, X = np.meshgrid(ys, xs, indexing="ij")
    vol = np.zeros((zs.size,) + X.shape)
    for val, a, b, cz, x0, y0, z0, phi in e:
        co, si = np.cos(phi), np.sin(phi)
        dx, dy = X - x0, Y - y0
        r2 = ((dx * co + dy * si) / a) ** 2 + ((-dx * si + dy * co) / b) ** 2
        zt = ((zs - z0) / cz) ** 2
        vol += val * ((r2[None] + zt[:, None, None]) <= 1.0)
    return _bin(vol, ss)


def _pair(spacing) -> tuple[float, float]:
    sp = np.broadcast_to(np.asarray(spacing, float), (2,))
    return float(sp[0]), float(sp[1])


def shepp_logan_2d(n: int, *, modified: bool = True, fov: float | None = None,
                   supersample: int = 4) -> np.ndarray:
    """Shepp–Logan phantom image ``(n, n)`` on a grid of pixel size ``fov / n`` mm.

    Parameters
    ----------
    n : int
        Image size in pixels.
    modified : bool
        Toft's modified (higher-contrast) values; see :func:`shepp_logan_ellipses`.
    fov : float, optional
        Field of view in mm (default ``n``, i.e. 1 mm pixels). The phantom's ellipses are
        ``shepp_logan_ellipses(fov)``, so ``ellipse_sinogram(shepp_logan_ellipses(fov), g)`` is
        the exact sinogram of this image (up to pixelisation).
    supersample : int
        Anti-aliasing: each pixel is the mean of ``supersample²`` samples.
    """
    fov = float(n if fov is None else fov)
    return ellipse_image(shepp_logan_ellipses(fov, modified=modified), (n, n), (fov / n,) * 2,
                         supersample=supersample)


def shepp_logan_3d(n: int, *, modified: bool = True, fov: float | None = None,
                   supersample: int = 2) -> np.ndarray:
    """3D Shepp–Logan-style phantom ``(n, n, n)`` with voxel size ``fov / n`` mm.

    The ellipsoids are ``shepp_logan_ellipsoids(fov)``; see :func:`shepp_logan_2d`.
    """
    fov = float(n if fov is None else fov)
    return ellipsoid_volume(shepp_logan_ellipsoids(fov, modified=modified), (n, n, n),
                            (fov / n,) * 3, supersample=supersample)


# --------------------------------------------------------------------------- analytic rays
def _chords(origins: np.ndarray, dirs: np.ndarray, centres: np.ndarray, axes: np.ndarray,
            rots: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sum over ellipsoids of ``value × chord length`` of the lines ``origin + t·dir``.

    origins, dirs: ``(..., D)`` (dirs unit vectors); centres, axes: ``(n, D)``; rots: ``(n, D, D)``
    whose columns are the ellipsoid axes in world coordinates; values ``(n,)``.
    """
    out = np.zeros(origins.shape[:-1])
    for c, ax, R, v in zip(centres, axes, rots, values):
        q = ((origins - c) @ R) / ax
        e = (dirs @ R) / ax
        ee = np.einsum("...i,...i->...", e, e)
        qe = np.einsum("...i,...i->...", q, e)
        qq = np.einsum("...i,...i->...", q, q)
        disc = qe * qe - ee * (qq - 1.0)
        out += v * 2.0 * np.sqrt(np.maximum(disc, 0.0)) / ee
    return out


def _rot2(phi):
    c, s = np.cos(phi), np.sin(phi)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def _rot3(phi):
    c, s = np.cos(phi), np.sin(phi)
    z, o = np.zeros_like(phi), np.ones_like(phi)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1),
                     np.stack([z, z, o], -1)], -2)


def ellipse_sinogram(ellipses, geometry, *, views_per_chunk: int = 64) -> np.ndarray:
    """Exact line integrals of an ellipse (2D) or ellipsoid (3D) phantom.

    Parameters
    ----------
    ellipses : array
        ``(n, 6)`` ellipses for :class:`ParallelBeam2D` / :class:`FanBeam2D`, or ``(n, 8)``
        ellipsoids for :class:`ParallelBeam3D` / :class:`ConeBeam3D`.
    geometry : Geometry
        Beam geometry (see :mod:`medvol.geometry` for the ray convention). Fan and cone rays run
        from the source through each detector element centre; the lines are treated as
        infinite, so the phantom must not contain the source or reach beyond the detector.

    Returns
    -------
    ndarray float64
        ``(views, n_det)`` for 2D geometries, ``(views, n_rows, n_det)`` for 3D ones, in
        mm × image units.
    """
    from .geometry import ConeBeam3D, FanBeam2D, ParallelBeam2D, ParallelBeam3D

    g = geometry
    if isinstance(g, (ParallelBeam2D, FanBeam2D)):
        e = _check(ellipses, 6, "ellipses")
        centres, axes, rots, vals = e[:, 3:5], e[:, 1:3], _rot2(e[:, 5]), e[:, 0]
    elif isinstance(g, (ParallelBeam3D, ConeBeam3D)):
        e = _check(ellipses, 8, "ellipsoids")
        centres, axes, rots, vals = e[:, 4:7], e[:, 1:4], _rot3(e[:, 7]), e[:, 0]
    else:
        raise GeometryError(f"ellipse_sinogram: unsupported geometry {type(g).__name__}")

    s = (np.arange(g.n_det) - (g.n_det - 1) / 2.0) * g.det_spacing + g.det_offset
    three_d = isinstance(g, (ParallelBeam3D, ConeBeam3D))
    if three_d:
        v = (np.arange(g.n_rows) - (g.n_rows - 1) / 2.0) * g.det_spacing_row + g.det_offset_row
    out = np.empty(g.sino_shape)
    for i0 in range(0, g.n_views, views_per_chunk):
        th = g.angles[i0:i0 + views_per_chunk]
        u = np.stack([np.cos(th), np.sin(th)], -1)        # (c, 2)
        d = np.stack([-np.sin(th), np.cos(th)], -1)
        if three_d:
            u = np.concatenate([u, np.zeros_like(th)[:, None]], -1)
            d = np.concatenate([d, np.zeros_like(th)[:, None]], -1)
            ez = np.array([0.0, 0.0, 1.0])
            # detector points relative to the plane through the isocentre: (c, R, K, 3)
            det = (s[None, None, :, None] * u[:, None, None, :]
                   + v[None, :, None, None] * ez[None, None, None, :])
            dd = d[:, None, None, :]
        else:
            det = s[None, :, None] * u[:, None, :]         # (c, K, 2)
            dd = d[:, None, :]
        if isinstance(g, (ParallelBeam2D, ParallelBeam3D)):
            origins = det
            dirs = np.broadcast_to(dd, det.shape)
        else:
            src = -g.src_iso * dd
            ray = det + g.iso_det * dd - src
            dirs = ray / np.linalg.norm(ray, axis=-1, keepdims=True)
            origins = np.broadcast_to(src, det.shape)
        out[i0:i0 + views_per_chunk] = _chords(origins, dirs, centres, axes, rots, vals)
    return out
