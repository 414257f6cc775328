"""Simulated CT acquisitions: HU ↔ attenuation, default geometries, noisy sinograms.

Units
-----
Projectors integrate *linear attenuation* μ (1/mm) along rays measured in mm, so a sinogram of
line integrals is dimensionless. CT images in Hounsfield units must be converted first:

``μ = μ_water · (1 + HU / 1000)``, with ``μ_water = 0.0192 /mm`` — the NIST XCOM mass attenuation
coefficient of water at 70 keV (0.1929 cm²/g × 1 g/cm³ = 0.01929 /mm), the effective energy of a
typical 120 kVp CT spectrum. Air (−1000 HU) maps to 0.

Noise model
-----------
With ``I0`` photons per ray (a monochromatic Beer–Lambert model, no scatter or electronic noise),
the detected counts are ``N ~ Poisson(I0 · exp(−p))`` and the measured line integral is
``y = −log(max(N, 1) / I0)`` (zero counts are clipped to one count, i.e. ``y ≤ log(I0)``).
For moderate ``p`` the variance of ``y`` is ``≈ 1 / (I0 · exp(−p))`` (delta method).

Geometry defaults
-----------------
:func:`default_fan_geometry` scales a clinical scanner (source–isocentre 570 mm,
isocentre–detector 470 mm for a 500 mm field of view) to the image's field of view, taken as the
circle through the image corners; its flat detector covers that circle's fan with a margin, with
pixels of the image pixel size × magnification.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import GeometryError, InputError

__all__ = ["MU_WATER_70KEV", "hu_to_mu", "mu_to_hu", "add_poisson_noise", "simulate_sinogram",
           "default_fan_geometry", "default_parallel_geometry", "default_cone_geometry",
           "GEOMETRIES", "default_geometry"]

GEOMETRIES = ("fan", "parallel", "cone")
"""Names of the simulated acquisitions (``medvol recon/simulate --geometry``, the flows): 2D fan
or parallel beam per axial slice, or one 3D circular cone beam over the slab."""

MU_WATER_70KEV = 0.0192
"""Linear attenuation coefficient of water at 70 keV in 1/mm (NIST XCOM: 0.1929 cm²/g)."""


def _is_torch(x) -> bool:
    return hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "dtype")


def hu_to_mu(hu, mu_water: float = MU_WATER_70KEV, *, clip: bool = True):
    """Hounsfield units → linear attenuation μ in 1/mm: ``μ_w (1 + HU/1000)``.

    ``clip`` sets values below −1000 HU (e.g. −3024 padding outside the scan field) to μ = 0.
    Works on numpy arrays and torch tensors (returns the same type; float).
    """
    if not mu_water > 0:
        raise InputError(f"mu_water must be a positive attenuation in 1/mm, got {mu_water}")
    if _is_torch(hu):
        mu = mu_water * (1.0 + hu.float() / 1000.0) if not hu.is_floating_point() else \
            mu_water * (1.0 + hu / 1000.0)
        return mu.clamp_min(0.0) if clip else mu
    mu = mu_water * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0)
    mu = np.maximum(mu, 0.0) if clip else mu
    return mu.astype(np.float32) if np.asarray(hu).dtype != np.float64 else mu


def mu_to_hu(mu, mu_water: float = MU_WATER_70KEV):
    """Linear attenuation μ (1/mm) → Hounsfield units: ``1000 (μ − μ_w) / μ_w``."""
    if not mu_water > 0:
        raise InputError(f"mu_water must be a positive attenuation in 1/mm, got {mu_water}")
    if _is_torch(mu):
        return 1000.0 * (mu - mu_water) / mu_water
    out = 1000.0 * (np.asarray(mu, dtype=np.float64) - mu_water) / mu_water
    return out.astype(np.float32) if np.asarray(mu).dtype != np.float64 else out


def add_poisson_noise(line_integrals, I0: float, *, seed: int | None = 0,
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """Poisson counting noise on a sinogram of line integrals.

    ``y = −log(max(N, 1) / I0)``, ``N ~ Poisson(I0 · exp(−p))``; returns float32 numpy of the input
    shape. ``seed`` (or an explicit ``rng``) makes it reproducible.
    """
    if not (I0 is not None and np.isfinite(I0) and I0 > 0):
        raise InputError(f"I0 (photons per ray) must be a positive number, got {I0}")
    p = np.asarray(line_integrals.detach().cpu().numpy() if _is_torch(line_integrals)
                   else line_integrals, dtype=np.float64)
    if not np.all(np.isfinite(p)):
        raise InputError("sinogram contains NaN/infinite values; cannot add noise")
    g = rng if rng is not None else np.random.default_rng(seed)
    n = g.poisson(I0 * np.exp(-p))
    n = np.maximum(n, 1)
    return (-np.log(n / I0)).astype(np.float32)


def _fov_radius(image_shape, spacing) -> float:
    shape = tuple(int(n) for n in image_shape)
    sp = tuple(float(s) for s in spacing)
    if len(shape) not in (2, 3) or len(sp) != len(shape):
        raise GeometryError(f"image_shape {shape} and spacing {sp} must both be 2D (ny, nx) or "
                            "3D (nz, ny, nx), in the same order")
    if any(n < 1 for n in shape) or not all(s > 0 for s in sp):
        raise GeometryError(f"image_shape {shape} / spacing {sp} must be positive")
    ny, nx = shape[-2:]
    sy, sx = sp[-2:]
    return 0.5 * math.hypot(nx * sx, ny * sy)


def _full_angles(n_views: int, angular_range: float) -> np.ndarray:
    if int(n_views) != n_views or n_views < 1:
        raise GeometryError(f"n_views must be a positive integer, got {n_views}")
    return np.linspace(0.0, angular_range, int(n_views), endpoint=False)


def default_parallel_geometry(image_shape, spacing=None, n_views: int = 180, *,
                              angular_range: float = math.pi, det_spacing: float | None = None):
    """Parallel beam covering the image: ``ParallelBeam2D`` for ``(ny, nx)``, ``ParallelBeam3D``
    (rows along z, row pitch = slice spacing) for ``(nz, ny, nx)``.

    Detector pitch defaults to the smallest in-plane pixel size; the detector spans the image
    diagonal plus two pixels. Views evenly over ``angular_range`` (radians, default π),
    endpoint excluded.
    """
    from .geometry import ParallelBeam2D, ParallelBeam3D

    spacing = (1.0,) * len(image_shape) if spacing is None else spacing
    R = _fov_radius(image_shape, spacing)
    ds = float(det_spacing) if det_spacing is not None else float(min(spacing[-2:]))
    n_det = int(math.ceil(2 * R / ds)) + 2
    angles = _full_angles(n_views, angular_range)
    if len(image_shape) == 2:
        return ParallelBeam2D(angles=angles, n_det=n_det, det_spacing=ds)
    return ParallelBeam3D(angles=angles, n_rows=int(image_shape[0]), n_det=n_det, det_spacing=ds,
                          det_spacing_row=float(spacing[0]))


def _fan_distances(R: float, src_iso: float | None, iso_det: float | None) -> tuple[float, float]:
    scale = (2 * R) / 500.0
    D = float(src_iso) if src_iso is not None else 570.0 * max(scale, 1e-6)
    d = float(iso_det) if iso_det is not None else 470.0 * max(scale, 1e-6)
    if D <= R:
        raise GeometryError(f"src_iso={D:.1f} mm puts the source inside the field of view "
                            f"(radius {R:.1f} mm); increase it")
    return D, d


def default_fan_geometry(image_shape, spacing=None, n_views: int = 360, *,
                         src_iso: float | None = None, iso_det: float | None = None,
                         det_spacing: float | None = None, angular_range: float = 2 * math.pi):
    """A clinical-like flat-detector fan beam (``FanBeam2D``) that covers the whole image.

    Parameters
    ----------
    image_shape : ``(ny, nx)``; spacing : ``(sy, sx)`` mm (default 1).
    n_views : views evenly over ``angular_range`` (default a full 2π turn, endpoint excluded).
    src_iso, iso_det : mm; default 570 and 470 mm scaled by ``FOV / 500 mm`` where the FOV is the
        image diagonal (so a 500 mm FOV gets the clinical 570/470 mm).
    det_spacing : mm at the detector; default ``min(sy, sx) · magnification``.

    The detector is wide enough for the fan through the FOV circle (half-width
    ``(src_iso + iso_det) · tan(asin(R / src_iso))``) plus two pixels.
    """
    from .geometry import FanBeam2D

    if len(image_shape) != 2:
        raise GeometryError(f"default_fan_geometry is 2D: image_shape must be (ny, nx), "
                            f"got {tuple(image_shape)}; use default_cone_geometry for volumes")
    spacing = (1.0, 1.0) if spacing is None else spacing
    R = _fov_radius(image_shape, spacing)
    D, d = _fan_distances(R, src_iso, iso_det)
    M = (D + d) / D
    ds = float(det_spacing) if det_spacing is not None else float(min(spacing)) * M
    half = (D + d) * math.tan(math.asin(R / D))
    n_det = int(math.ceil(2 * half / ds)) + 2
    return FanBeam2D(angles=_full_angles(n_views, angular_range), n_det=n_det, det_spacing=ds,
                     src_iso=D, iso_det=d)


def default_cone_geometry(volume_shape, spacing=None, n_views: int = 360, *,
                          src_iso: float | None = None, iso_det: float | None = None,
                          det_spacing: float | None = None, angular_range: float = 2 * math.pi):
    """A circular cone beam (``ConeBeam3D``) covering a ``(nz, ny, nx)`` volume.

    Distances as in :func:`default_fan_geometry` (from the in-plane FOV). Square detector pixels
    of ``min(spacing) · magnification``; the rows cover the volume's z half-height ``h`` as seen
    from the source at its closest point: ``v_max = h · (src_iso + iso_det) / (src_iso − R)``.
    """
    from .geometry import ConeBeam3D

    if len(volume_shape) != 3:
        raise GeometryError(f"default_cone_geometry needs a (nz, ny, nx) volume shape, "
                            f"got {tuple(volume_shape)}")
    spacing = (1.0, 1.0, 1.0) if spacing is None else spacing
    R = _fov_radius(volume_shape, spacing)
    D, d = _fan_distances(R, src_iso, iso_det)
    M = (D + d) / D
    ds = float(det_spacing) if det_spacing is not None else float(min(spacing)) * M
    half_u = (D + d) * math.tan(math.asin(R / D))
    h = 0.5 * int(volume_shape[0]) * float(spacing[0])
    half_v = h * (D + d) / (D - R)
    return ConeBeam3D(angles=_full_angles(n_views, angular_range),
                      n_rows=int(math.ceil(2 * half_v / ds)) + 2,
                      n_det=int(math.ceil(2 * half_u / ds)) + 2,
                      det_spacing=ds, det_spacing_row=ds, src_iso=D, iso_det=d)


def default_geometry(name: str, shape, spacing, n_views: int):
    """The default geometry called ``name`` (one of :data:`GEOMETRIES`) for an image of
    ``shape`` (2D for fan/parallel, 3D for cone) and ``spacing`` (mm, array order)."""
    makers = {"fan": default_fan_geometry, "parallel": default_parallel_geometry,
              "cone": default_cone_geometry}
    if name not in makers:
        raise InputError(f"unknown geometry {name!r}", hint=f"use one of {', '.join(GEOMETRIES)}")
    return makers[name](shape, spacing, n_views=n_views)


def simulate_sinogram(image_or_volume, geometry, *, spacing=None, views: int | None = None,
                      I0: float | None = None, seed: int | None = 0, backend: str = "auto",
                      hu: bool = False) -> tuple[np.ndarray, Any]:
    """Forward-project an attenuation image/volume, optionally subsample views and add noise.

    Parameters
    ----------
    image_or_volume : ``(ny, nx)`` / ``(nz, ny, nx)`` numpy array or torch tensor of μ in 1/mm,
        or a :class:`medvol.Volume` (its spacing is used; ITK (x, y, z) order is converted).
        Pass ``hu=True`` (or convert with :func:`hu_to_mu`) for CT images in HU.
    geometry : a :mod:`medvol.geometry` beam whose dimension matches the image.
    spacing : mm in array order ``(sy, sx)`` / ``(sz, sy, sx)``; required for arrays unless 1 mm.
    views : keep every ``views``-th view (sparse-view acquisition); ``None`` keeps all.
    I0 : photons per ray for Poisson noise (see :func:`add_poisson_noise`); ``None`` = noiseless.
    seed : noise seed (reproducible).
    backend : projector backend (``"auto" | "torch" | "astra"``).

    Returns
    -------
    (sinogram, geometry_used)
        float32 numpy ``(views, n_det)`` or ``(views, n_rows, n_det)``, and the (subsampled)
        geometry that produced it.
    """
    from .kernels import Projector

    x = image_or_volume
    if hasattr(x, "array") and hasattr(x, "spacing") and hasattr(x, "direction"):  # Volume
        if spacing is None:
            spacing = tuple(float(s) for s in reversed(x.spacing))
        x = x.array
        if len(spacing) == 3 and getattr(x, "ndim", 3) == 3 and x.shape[0] == 1 and geometry.ndim == 2:
            x, spacing = x[0], spacing[1:]
    arr = x.detach().cpu().numpy() if _is_torch(x) else np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"image must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim != geometry.ndim:
        raise GeometryError(f"a {arr.ndim}D image {arr.shape} cannot be projected with the "
                            f"{geometry.ndim}D geometry {type(geometry).__name__}")
    if not np.all(np.isfinite(arr)):
        raise InputError("image contains NaN/infinite values")
    if hu:
        arr = hu_to_mu(arr)
    elif arr.size and float(arr.min()) < -10:
        raise InputError(f"image minimum {float(arr.min()):.1f} looks like Hounsfield units, "
                         "not attenuation (1/mm)", hint="pass hu=True or convert with hu_to_mu()")
    g = geometry if views is None else geometry.subsample(int(views))
    A = Projector(g, arr.shape, spacing, backend=backend)
    sino = np.asarray(A(np.ascontiguousarray(arr)), dtype=np.float32)
    if I0 is not None:
        sino = add_poisson_noise(sino, I0, seed=seed)
    return sino, g
