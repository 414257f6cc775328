"""``Volume``: one array plus its patient geometry (LPS), kept together.

Conventions (the ITK/SimpleITK ones, so conversions are lossless):

* ``array`` is C-ordered ``(z, y, x)`` = ``[k, j, i]`` (a numpy array or a torch tensor).
* ``spacing`` is ``(si, sj, sk)`` in mm — the step along the array's *last*, middle, first axis.
* ``origin`` is the LPS position (mm) of the centre of voxel ``[0, 0, 0]``.
* ``direction`` is a 3×3 matrix whose *columns* are the LPS unit vectors of the i, j, k axes.

So the world position of voxel index ``(i, j, k)`` is ``origin + direction @ (spacing * (i, j, k))``
and :attr:`Volume.affine` is the 4×4 IJK→LPS matrix. RAS appears only at the NIfTI boundary
(:meth:`Volume.to_nibabel` / :meth:`Volume.from_nibabel`), as ``diag(-1, -1, 1) @ LPS``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from .errors import GeometryError

__all__ = ["Volume", "LPS_TO_RAS"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _as_vec3(v, name: str) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=float).reshape(-1)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise GeometryError(f"{name} must be 3 finite numbers, got {v!r}")
    return tuple(float(x) for x in a)


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image with its LPS geometry and de-identified metadata.

    Parameters
    ----------
    array : numpy.ndarray or torch.Tensor, shape ``(z, y, x)``
        Voxel values (HU for CT). Not copied.
    spacing : 3 floats, mm, ``(x, y, z)`` = ``(i, j, k)`` order.
    origin : 3 floats, mm, LPS position of voxel ``[0, 0, 0]``.
    direction : 3×3, columns are the LPS unit vectors of the i, j, k axes (orthonormal).
    meta : mapping of de-identified metadata (no patient identifiers).

    Examples
    --------
    >>> v = Volume(np.zeros((4, 5, 6)), spacing=(0.5, 0.5, 2.0))
    >>> v.index_to_world([0, 0, 1]).tolist()
    [0.0, 0.0, 2.0]
    >>> v[1:, :, ::2].spacing
    (1.0, 0.5, 2.0)
    """

    array: Any
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if getattr(self.array, "ndim", None) != 3:
            raise GeometryError(
                f"Volume needs a 3D (z, y, x) array, got shape {getattr(self.array, 'shape', None)}"
            )
        sp = _as_vec3(self.spacing, "spacing")
        if min(sp) <= 0:
            raise GeometryError(f"spacing must be positive, got {sp}")
        d = np.array(self.direction, dtype=float).reshape(3, 3)
        if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
            raise GeometryError(
                "direction must be orthonormal (columns = LPS unit vectors of i, j, k); "
                "sheared (e.g. gantry-tilted) grids must be resampled first"
            )
        d.setflags(write=False)
        object.__setattr__(self, "spacing", sp)
        object.__setattr__(self, "origin", _as_vec3(self.origin, "origin"))
        object.__setattr__(self, "direction", d)
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        """Number of voxels along i, j, k (ITK ``GetSize`` order)."""
        z, y, x = self.shape
        return (x, y, z)

    @property
    def affine(self) -> np.ndarray:
        """4×4 matrix mapping homogeneous ``(i, j, k, 1)`` to LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        a[:3, 3] = self.origin
        return a

    @property
    def affine_ras(self) -> np.ndarray:
        """4×4 IJK→RAS matrix (the NIfTI convention)."""
        a = self.affine
        a[:3] = LPS_TO_RAS @ a[:3]
        return a

    def index_to_world(self, ijk) -> np.ndarray:
        """LPS mm of continuous indices ``(..., 3)`` given in ``(i, j, k)`` order."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.direction * np.asarray(self.spacing)).T + np.asarray(self.origin)

    def world_to_index(self, lps) -> np.ndarray:
        """Continuous ``(i, j, k)`` indices of LPS points ``(..., 3)``."""
        lps = np.asarray(lps, dtype=float) - np.asarray(self.origin)
        return (lps @ self.direction) / np.asarray(self.spacing)

    def same_grid(self, other: "Volume", atol: float = 1e-4) -> bool:
        return (self.shape == other.shape and np.allclose(self.affine, other.affine, atol=atol))

    # ------------------------------------------------------------------ array ops
    def with_array(self, array, **meta_updates) -> "Volume":
        """Same geometry, new voxel values (shape must match)."""
        if tuple(array.shape) != self.shape:
            raise GeometryError(f"new array shape {tuple(array.shape)} != volume shape {self.shape}")
        return replace(self, array=array, meta={**self.meta, **meta_updates})

    def numpy(self) -> np.ndarray:
        a = self.array
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        return np.asarray(a)

    def __getitem__(self, key) -> "Volume":
        """Crop/stride with basic slices in ``(z, y, x)`` order; geometry follows.

        Only slices (positive steps) are supported so the result is still a 3D grid; use
        ``vol.array[...]`` for arbitrary indexing.
        """
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) > 3 or any(not isinstance(s, slice) for s in key):
            raise TypeError("Volume indexing takes up to three slices in (z, y, x) order")
        key = key + (slice(None),) * (3 - len(key))
        starts, steps = [], []
        for s, n in zip(key, self.shape):
            start, _, step = s.indices(n)
            if step <= 0:
                raise TypeError("Volume slicing needs positive steps (flip the array explicitly)")
            starts.append(start)
            steps.append(step)
        k0, j0, i0 = starts
        sk, sj, si = steps
        new_origin = self.index_to_world([i0, j0, k0])
        new_spacing = np.asarray(self.spacing) * np.array([si, sj, sk])
        return Volume(self.array[key], spacing=new_spacing, origin=new_origin,
                      direction=self.direction, meta=self.meta)

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.4g}" for s in self.spacing)
        org = ", ".join(f"{o:.4g}" for o in self.origin)
        return (f"Volume(shape(z,y,x)={self.shape}, dtype={getattr(self.array, 'dtype', '?')}, "
                f"spacing(x,y,z)=({sp}) mm, origin(LPS)=({org}) mm)")

    # ------------------------------------------------------------------ conversions
    def to_sitk(self):
        """SimpleITK image (LPS, same voxel order), lossless."""
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(np.ascontiguousarray(self.numpy()))
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(tuple(float(x) for x in self.direction.reshape(-1)))
        return img

    @classmethod
    def from_sitk(cls, img, meta: Mapping[str, Any] | None = None) -> "Volume":
        import SimpleITK as sitk

        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise GeometryError("from_sitk needs a 3D scalar image")
        return cls(sitk.GetArrayFromImage(img), spacing=img.GetSpacing(), origin=img.GetOrigin(),
                   direction=np.array(img.GetDirection()).reshape(3, 3), meta=meta or {})

    def to_nibabel(self):
        """``nibabel.Nifti1Image`` with qform = sform (code 1), RAS affine, array in (x, y, z)."""
        import nibabel as nib

        data = np.transpose(self.numpy(), (2, 1, 0))
        img = nib.Nifti1Image(data, self.affine_ras)
        img.set_qform(self.affine_ras, code=1)
        img.set_sform(self.affine_ras, code=1)
        img.header.set_xyzt_units("mm", "sec")
        return img

    @classmethod
    def from_nibabel(cls, img, meta: Mapping[str, Any] | None = None) -> "Volume":
        data = np.asanyarray(img.dataobj)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise GeometryError(f"from_nibabel needs a 3D image, got shape {data.shape}")
        return cls._from_ras_affine(np.transpose(data, (2, 1, 0)), img.affine, meta)

    @classmethod
    def _from_ras_affine(cls, array_zyx, affine_ras, meta=None) -> "Volume":
        a = np.asarray(affine_ras, dtype=float)
        lps = LPS_TO_RAS @ a[:3, :3]
        spacing = np.linalg.norm(lps, axis=0)
        return cls(array_zyx, spacing=spacing, origin=LPS_TO_RAS @ a[:3, 3],
                   direction=lps / spacing, meta=meta or {})

    def to_metatensor(self):
        """MONAI ``MetaTensor`` shaped ``(1, x, y, z)`` (MONAI's channel-first spatial order) with
        the RAS affine MONAI uses by default (``affine_lps_to_ras=True``)."""
        import torch
        from monai.data import MetaTensor

        arr = self.array if hasattr(self.array, "detach") else torch.as_tensor(self.numpy())
        data = arr.permute(2, 1, 0).unsqueeze(0)
        return MetaTensor(data, affine=torch.as_tensor(self.affine_ras, dtype=torch.float64),
                          meta={"space": "RAS", **{f"medvol_{k}": v for k, v in self.meta.items()
                                                   if isinstance(v, (str, int, float))}})

    @classmethod
    def from_metatensor(cls, mt, meta: Mapping[str, Any] | None = None) -> "Volume":
        """Inverse of :meth:`to_metatensor` (accepts ``(1, x, y, z)`` or ``(x, y, z)``)."""
        data = mt.as_tensor() if hasattr(mt, "as_tensor") else mt
        if data.ndim == 4:
            if data.shape[0] != 1:
                raise GeometryError("from_metatensor needs a single-channel tensor")
            data = data[0]
        affine = np.asarray(mt.affine, dtype=float)
        space = str(getattr(mt, "meta", {}).get("space", "RAS"))
        if space.upper() == "LPS":
            affine = affine.copy()
            affine[:3] = LPS_TO_RAS @ affine[:3]
        return cls._from_ras_affine(data.permute(2, 1, 0), affine, meta)
