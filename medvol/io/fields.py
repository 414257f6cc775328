"""Displacement fields: NRRD vector fields and ITK ``.h5``/``.tfm`` displacement transforms."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._atomic import atomic_path, check_writable
from ..errors import GeometryError, InputError, MedvolError
from ..volume import Volume
from ._common import FIELD_SUFFIXES, _native, _one_line, _provenance_fields, _require_file, _suffix
from .nrrd import _domain_geometry, _space_flip, _write_nrrd_file, read_nrrd

__all__ = ["write_displacement_field", "read_displacement_field", "voxel_ddf_to_lps_mm",
           "field_image"]

# --------------------------------------------------------------------------- displacement fields
def voxel_ddf_to_lps_mm(ddf_vox, reference: Volume) -> np.ndarray:
    """Convert a network DDF in array-order voxel units to LPS millimetres.

    Parameters
    ----------
    ddf_vox : array ``(3, z, y, x)``
        Components ``(dz, dy, dx)`` in voxels of ``reference`` (the usual channel order of a
        registration network fed ``(z, y, x)`` tensors). A torch tensor is accepted.
    reference : Volume
        The grid the DDF lives on.

    Returns
    -------
    numpy.ndarray ``(z, y, x, 3)``, float64
        LPS displacement ``(ux, uy, uz)`` in mm: ``u_mm = D · diag(spacing) · (dx, dy, dz)``.
    """
    if hasattr(ddf_vox, "detach"):
        ddf_vox = ddf_vox.detach().cpu().numpy()
    d = np.asarray(ddf_vox, dtype=np.float64)
    if d.shape != (3,) + reference.shape:
        raise GeometryError(f"DDF shape {d.shape} != (3,) + reference shape {reference.shape}",
                            hint="pass one (3, z, y, x) field with components (dz, dy, dx)")
    u_xyz = np.stack([d[2], d[1], d[0]], axis=-1)  # (z, y, x, 3) = (dx, dy, dz) voxels
    m = reference.direction * np.asarray(reference.spacing)[None, :]
    return u_xyz @ m.T


def _check_field(disp, reference: Volume, path: Path) -> np.ndarray:
    if hasattr(disp, "detach"):
        disp = disp.detach().cpu().numpy()
    u = np.asarray(disp)
    if u.shape != reference.shape + (3,):
        raise InputError(f"displacement field shape {u.shape} != reference shape "
                         f"{reference.shape} + (3,)", path=path,
                         hint="pass (z, y, x, 3) LPS mm; convert network DDFs with "
                              "voxel_ddf_to_lps_mm")
    if u.dtype.kind != "f" or not np.all(np.isfinite(u)):
        raise InputError("displacement field must be finite floats (mm)", path=path)
    return u


def write_displacement_field(disp, path: str | os.PathLike, *, reference: Volume,
                             kind: str = "resampling", overwrite: bool = False) -> Path:
    """Write a dense displacement field that Slicer and ITK load as a transform.

    Parameters
    ----------
    disp : array ``(z, y, x, 3)``, float
        LPS displacement ``(ux, uy, uz)`` in mm at each voxel of ``reference``.
    path : str or Path
        ``.nrrd`` (Slicer vector-field NRRD, ``intent_code:=1006``) or ``.h5``/``.hdf5``/``.tfm``
        (ITK ``DisplacementFieldTransform``, always the resampling direction; ``.tfm`` is text
        and large — prefer ``.h5``).
    reference : Volume
        The grid of the field (its array is not used).
    kind : {"resampling", "modeling"}
        ``resampling`` (ITK/Slicer "from parent"): a point ``x`` of the reference (fixed) space
        maps to ``x + u(x)`` in the moving space. ``modeling`` = the opposite direction; only NRRD
        can store it (``displacement field type:=modeling``).
    overwrite : bool
        Replace an existing file.
    """
    path = Path(path)
    suffix = _suffix(path)
    if kind not in ("resampling", "modeling"):
        raise InputError(f"kind must be 'resampling' or 'modeling', got {kind!r}", path=path)
    if suffix not in (".nrrd", ".h5", ".hdf5", ".tfm"):
        raise InputError(f"cannot write a displacement field as {suffix or '(none)'!r}",
                         path=path, hint="use .nrrd, .h5, .hdf5 or .tfm")
    if suffix != ".nrrd" and kind != "resampling":
        raise InputError("ITK transform files always hold the resampling direction", path=path,
                         hint="write a modeling field as .nrrd, or invert it first")
    u = _check_field(disp, reference, path)
    check_writable(path, overwrite)
    if suffix == ".nrrd":
        data = np.ascontiguousarray(u.astype(np.float64 if u.dtype == np.float64 else np.float32))
        a = reference.affine
        sd = np.full((4, 3), np.nan)
        sd[1:] = a[:3, :3].T
        header = {
            "dimension": 4,
            "space": "left-posterior-superior",
            "space directions": sd,
            "kinds": ["vector", "domain", "domain", "domain"],
            "encoding": "gzip",
            "space origin": a[:3, 3].copy(),
            "measurement frame": np.eye(3),
            "intent_code": "1006",
            "displacement field type": kind,
            **_provenance_fields(reference.meta),
        }
        with atomic_path(path, overwrite) as tmp:
            _write_nrrd_file(tmp, data, header)
    else:
        with atomic_path(path, overwrite) as tmp:
            _write_itk_field(u, reference, tmp)
    return path


def field_image(u: np.ndarray, reference: Volume):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(u, dtype=np.float64), isVector=True)
    img.SetSpacing(reference.spacing)
    img.SetOrigin(reference.origin)
    img.SetDirection(tuple(float(x) for x in reference.direction.reshape(-1)))
    return img


def _write_itk_field(u: np.ndarray, reference: Volume, tmp: Path) -> None:
    import SimpleITK as sitk

    tx = sitk.DisplacementFieldTransform(field_image(u, reference))
    sitk.WriteTransform(tx, str(tmp))


def read_displacement_field(path: str | os.PathLike) -> tuple[np.ndarray, Volume]:
    """Read a displacement field written by medvol, Slicer or ITK.

    Supports vector NRRD (any axis order of ``kinds``; RAS/LAS spaces and a ``measurement frame``
    are converted to LPS), MetaImage with 3 components, and ITK ``.h5``/``.hdf5``/``.tfm``
    ``DisplacementFieldTransform`` files.

    Returns
    -------
    disp : numpy.ndarray ``(z, y, x, 3)``, float64
        LPS displacement ``(ux, uy, uz)`` in mm.
    grid : Volume
        The field's grid; its array is the displacement magnitude ``|u|`` in mm, and
        ``meta["displacement_field_type"]`` is ``"resampling"`` or ``"modeling"``.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in FIELD_SUFFIXES:
        raise InputError(f"cannot read a displacement field from {suffix or '(none)'!r}",
                         path=path, hint=f"use one of {', '.join(FIELD_SUFFIXES)}")
    _require_file(path)
    try:
        if suffix in (".nrrd", ".nhdr"):
            u, spacing, origin, direction, kind = _read_nrrd_field(path)
        elif suffix in (".mha", ".mhd"):
            u, spacing, origin, direction, kind = _read_sitk_field(path)
        else:
            u, spacing, origin, direction, kind = _read_itk_transform_field(path)
    except MedvolError:
        raise
    except Exception as e:
        raise InputError(f"cannot read displacement field: {_one_line(e)}", path=path) from None
    u = np.ascontiguousarray(u, dtype=np.float64)
    try:
        grid = Volume(np.linalg.norm(u, axis=-1), spacing=spacing, origin=origin,
                      direction=direction, meta={"displacement_field_type": kind})
    except GeometryError as e:
        raise GeometryError(str(e), path=path) from None
    return u, grid


def _read_nrrd_field(path: Path):
    data, header = read_nrrd(path)
    kinds = [str(k).lower() for k in header.get("kinds", [])]
    if data.ndim != 4 or len(kinds) != 4:
        raise InputError(f"not a 3D vector field (dimension {data.ndim})", path=path,
                         hint="use medvol.io.read for scalar volumes")
    vec_axes = [n for n, k in enumerate(kinds) if k not in ("domain", "space")]
    sizes = list(data.shape[::-1])  # NRRD axis order
    if len(vec_axes) != 1 or sizes[vec_axes[0]] != 3:
        raise InputError(f"expected one 3-component vector axis, got kinds {' '.join(kinds)} "
                         f"and sizes {sizes}", path=path)
    va = vec_axes[0]
    domain = [n for n in range(4) if n != va]
    spacing, origin, direction = _domain_geometry(header, domain, path)
    u = np.moveaxis(_native(data), 3 - va, -1).astype(np.float64)
    mf = header.get("measurement frame")
    if mf is not None:  # each written vector is a column of the frame -> space matrix
        m = np.asarray(mf, dtype=float).T
        if not np.allclose(m, np.eye(3)):
            u = u @ m.T
    u = u * _space_flip(header, path)[None, None, None, :]
    kind = str(header.get("displacement field type", "resampling")).strip().lower()
    if kind not in ("resampling", "modeling"):
        raise InputError(f"unknown displacement field type {kind!r}", path=path)
    return u, spacing, origin, direction, kind


def _read_sitk_field(path: Path):
    import SimpleITK as sitk

    from .volumes import check_metaimage

    check_metaimage(path, components=3)
    img = sitk.ReadImage(str(path))
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 3:
        raise InputError("not a 3D field with 3 components per voxel", path=path)
    u = sitk.GetArrayFromImage(img)
    return (u, img.GetSpacing(), img.GetOrigin(), np.array(img.GetDirection()).reshape(3, 3),
            "resampling")


def _read_itk_transform_field(path: Path):
    import SimpleITK as sitk

    tx = sitk.ReadTransform(str(path))
    if tx.GetName() == "CompositeTransform":
        comp = sitk.CompositeTransform(tx)
        if comp.GetNumberOfTransforms() != 1:
            raise InputError(f"composite transform with {comp.GetNumberOfTransforms()} parts; "
                             "expected a single displacement field", path=path)
        tx = comp.GetNthTransform(0)
    if tx.GetName() != "DisplacementFieldTransform":
        raise InputError(f"transform is a {tx.GetName()}, not a displacement field", path=path)
    img = sitk.DisplacementFieldTransform(tx).GetDisplacementField()
    u = sitk.GetArrayFromImage(img)
    return (u, img.GetSpacing(), img.GetOrigin(), np.array(img.GetDirection()).reshape(3, 3),
            "resampling")


