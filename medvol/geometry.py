"""Beam geometries as plain frozen values (mm, radians).

Coordinate conventions shared by every projector backend (torch kernels, ASTRA adapter):

**Image grid.** A 2D image is an array ``(ny, nx)`` (rows, columns); a 3D volume ``(nz, ny, nx)``.
``spacing`` given to a projector is in the same order as the array shape. The grid is centred on
the isocentre: pixel ``(r, c)`` has its centre at
``x = (c - (nx - 1) / 2) * sx``, ``y = (r - (ny - 1) / 2) * sy`` (and ``z`` likewise from the slice
index). Rows therefore run along +y, which for an axial DICOM slice is the posterior direction.

**View angle θ.** Detector axis ``u(θ) = (cos θ, sin θ)``, ray direction ``d(θ) = (-sin θ, cos θ)``
(both in the x-y plane); rotation is about +z.

* Parallel beam: ``p(θ, s) = ∫ f(s·u(θ) + t·d(θ)) dt`` (mm · image units). At θ = 0 the rays run
  along +y, so the projection is the column sums times ``sy``.
* Fan / cone beam: the source sits at ``-src_iso · d(θ)``, the (flat) detector centre at
  ``+iso_det · d(θ)``; detector element ``k`` is at ``iso_det·d + s_k·u (+ v_r·e_z)``; each ray
  runs from the source to the element centre.

**Detector.** Column ``k`` sits at ``s_k = (k - (n_det - 1) / 2) * det_spacing + det_offset``
(``det_offset`` shifts the detector along ``u``; a centre-of-rotation shift of ``+δ`` mm in the
data is modelled by ``det_offset = -δ``). 3D detectors add rows along +z:
``v_r = (r - (n_rows - 1) / 2) * det_spacing_row + det_offset_row``.

**Sinogram layout.** 2D: ``(..., views, n_det)``. 3D: ``(..., views, n_rows, n_det)``.

Sparse view: ``g[::16]`` or ``g.subsample(16)`` keeps every 16th view.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Union

import numpy as np

from .errors import GeometryError

__all__ = ["ParallelBeam2D", "FanBeam2D", "ParallelBeam3D", "ConeBeam3D", "Geometry",
           "GEOMETRY_TYPES", "geometry_from_dict"]


def _angles(a) -> np.ndarray:
    arr = np.array(a, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise GeometryError("geometry needs at least one view angle")
    if not np.all(np.isfinite(arr)):
        raise GeometryError("view angles contain NaN or infinity")
    arr.setflags(write=False)
    return arr


def _positive(name: str, v: float) -> float:
    v = float(v)
    if not np.isfinite(v) or v <= 0:
        raise GeometryError(f"{name} must be a positive number of mm, got {v}")
    return v


def _count(name: str, v: int) -> int:
    if int(v) != v or int(v) < 1:
        raise GeometryError(f"{name} must be a positive integer, got {v}")
    return int(v)


def _nonnegative(name: str, v: float) -> float:
    v = float(v)
    if not v >= 0:
        raise GeometryError(f"{name} must be >= 0 mm, got {v}")
    return v


#: how each geometry field is validated and normalised (one rule per field name)
_FIELD_CHECKS = {
    "angles": lambda name, v: _angles(v),
    "n_det": _count, "n_rows": _count,
    "det_spacing": _positive, "det_spacing_row": _positive, "src_iso": _positive,
    "iso_det": _nonnegative,
    "det_offset": lambda name, v: float(v), "det_offset_row": lambda name, v: float(v),
}


class _Views:
    """Shared behaviour: validation, slicing over views, subsampling, dict round trip."""

    angles: np.ndarray

    def __post_init__(self):
        # every field, in declaration order, through the one rule for its name
        for f in fields(self):
            object.__setattr__(self, f.name, _FIELD_CHECKS[f.name](f.name, getattr(self, f.name)))

    @property
    def n_views(self) -> int:
        return int(self.angles.size)

    @property
    def sino_shape(self) -> tuple[int, ...]:
        """``(views, n_det)`` in 2D, ``(views, n_rows, n_det)`` in 3D."""
        if self.ndim == 2:
            return (self.n_views, self.n_det)
        return (self.n_views, self.n_rows, self.n_det)

    def __len__(self) -> int:
        return self.n_views

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            key = slice(int(key), int(key) + 1 if int(key) != -1 else None)
        sel = self.angles[key]
        return replace(self, angles=np.atleast_1d(sel))

    def subsample(self, k: int, offset: int = 0):
        """Keep every ``k``-th view starting at ``offset`` (sparse-view acquisition)."""
        k = _count("subsample factor", k)
        return self[offset::k]

    def to_dict(self) -> dict:
        d = {"type": type(self).__name__}
        for f in self.__dataclass_fields__:
            v = getattr(self, f)
            d[f] = v.tolist() if isinstance(v, np.ndarray) else v
        return d

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))

    @property
    def angular_range(self) -> float:
        """Covered angle in radians, counting one view step at the end (π for a half scan)."""
        a = np.sort(self.angles)
        if a.size < 2:
            return 0.0
        step = np.median(np.diff(a))
        return float(a[-1] - a[0] + step)


@dataclass(frozen=True, eq=False)
class ParallelBeam2D(_Views):
    """2D parallel beam. ``angles`` in radians, ``det_spacing``/``det_offset`` in mm."""

    angles: np.ndarray
    n_det: int
    det_spacing: float = 1.0
    det_offset: float = 0.0

    ndim = 2


class _PointSource(_Views):
    """Divergent beams (fan, cone): a source at ``src_iso``, a flat detector at ``iso_det``."""

    @property
    def magnification(self) -> float:
        return (self.src_iso + self.iso_det) / self.src_iso


@dataclass(frozen=True, eq=False)
class FanBeam2D(_PointSource):
    """2D fan beam, flat detector. Distances in mm: source→isocentre and isocentre→detector."""

    angles: np.ndarray
    n_det: int
    det_spacing: float
    src_iso: float
    iso_det: float
    det_offset: float = 0.0

    ndim = 2

    @property
    def fan_angle(self) -> float:
        """Full fan angle in radians covered by the detector."""
        half = (self.n_det * self.det_spacing / 2 + abs(self.det_offset))
        return 2 * float(np.arctan(half / (self.src_iso + self.iso_det)))


@dataclass(frozen=True, eq=False)
class ParallelBeam3D(_Views):
    """3D parallel beam rotating about z. Detector ``n_rows × n_det`` (rows along z)."""

    angles: np.ndarray
    n_rows: int
    n_det: int
    det_spacing: float = 1.0
    det_spacing_row: float = 1.0
    det_offset: float = 0.0
    det_offset_row: float = 0.0

    ndim = 3


@dataclass(frozen=True, eq=False)
class ConeBeam3D(_PointSource):
    """3D cone beam on a circular trajectory in the z = 0 plane, flat detector."""

    angles: np.ndarray
    n_rows: int
    n_det: int
    det_spacing: float
    det_spacing_row: float
    src_iso: float
    iso_det: float
    det_offset: float = 0.0
    det_offset_row: float = 0.0

    ndim = 3


Geometry = Union[ParallelBeam2D, FanBeam2D, ParallelBeam3D, ConeBeam3D]
GEOMETRY_TYPES = (ParallelBeam2D, FanBeam2D, ParallelBeam3D, ConeBeam3D)
"""The beam classes (for ``isinstance`` checks; kernels dispatch on the class, never its name)."""
_TYPES = {c.__name__: c for c in GEOMETRY_TYPES}


def geometry_from_dict(d: dict) -> Geometry:
    """Inverse of ``g.to_dict()`` (used by manifests and the CLI)."""
    d = dict(d)
    name = d.pop("type", None)
    if name not in _TYPES:
        raise GeometryError(f"unknown geometry type {name!r}; expected one of {sorted(_TYPES)}")
    try:
        return _TYPES[name](**d)
    except TypeError as e:
        raise GeometryError(f"bad {name} parameters: {e}") from None
