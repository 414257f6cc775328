"""Scalar volumes: read and write NRRD, NIfTI and MetaImage (``.mha``/``.mhd``).

Conventions (see ``medvol.volume``): arrays are ``(z, y, x)``; geometry is LPS. NRRD files are
written exactly as Slicer writes them (``space: left-posterior-superior``, ``space directions`` =
direction × spacing per axis, ``space origin`` = LPS centre of voxel 0). NIfTI is RAS by definition
and is converted at that boundary only (qform = sform, code 1). Every writer is atomic (temp file
beside the target, then rename) and refuses to replace an existing file unless ``overwrite=True``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path, check_writable
from ..errors import GeometryError, InputError, MedvolError
from ..volume import Volume
from ._common import (VOLUME_SUFFIXES, _WRITE_SUFFIXES, _medvol_version, _native, _one_line,
                      _provenance_fields, _meta_from_header, _require_file, _suffix)
from .nrrd import _domain_geometry, _nrrd_geometry, _write_nrrd_file, read_nrrd

__all__ = ["read", "write", "write_repeats", "read_repeats"]


def _writable_array(vol: Volume, path: Path) -> np.ndarray:
    arr = vol.numpy()
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif arr.dtype.kind not in "iuf":
        raise InputError(f"cannot write voxel type {arr.dtype}; medvol writes integer or float "
                         "volumes", path=path, hint="convert the array (e.g. to float32) first")
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr)



# --------------------------------------------------------------------------- write
def write(vol: Volume, path: str | os.PathLike, *, overwrite: bool = False,
          compress: bool = True) -> Path:
    """Write a volume; the format follows the suffix.

    Parameters
    ----------
    vol : Volume
        Array ``(z, y, x)`` with LPS geometry.
    path : str or Path
        ``.nrrd`` (Slicer-style header, LPS), ``.nii`` / ``.nii.gz`` (RAS affine, qform = sform,
        code 1, mm), ``.mha`` / ``.mhd`` (SimpleITK, LPS).
    overwrite : bool
        Replace an existing file; otherwise :class:`~medvol.errors.OutputExistsError`.
    compress : bool
        gzip the voxel data (NRRD ``encoding: gzip``, MetaImage compression). ``.nii`` is never
        compressed and ``.nii.gz`` always is.

    Returns
    -------
    Path of the written file.

    Examples
    --------
    >>> write(Volume(np.zeros((2, 3, 4), np.int16)), "ct.nrrd")  # doctest: +SKIP
    """
    path = Path(path)
    suffix = _suffix(path)
    if not isinstance(vol, Volume):
        raise InputError(f"write() needs a medvol Volume, got {type(vol).__name__}", path=path)
    if suffix not in _WRITE_SUFFIXES:
        raise InputError(f"cannot write suffix {suffix or '(none)'!r}", path=path,
                         hint=f"use one of {', '.join(_WRITE_SUFFIXES)}")
    check_writable(path, overwrite)
    data = _writable_array(vol, path)
    if suffix == ".nrrd":
        header: dict[str, Any] = {
            "dimension": 3,
            **_nrrd_geometry(vol),
            "kinds": ["domain", "domain", "domain"],
            "encoding": "gzip" if compress else "raw",
            **_provenance_fields(vol.meta),
        }
        with atomic_path(path, overwrite) as tmp:
            _write_nrrd_file(tmp, data, header)
    elif suffix in (".nii", ".nii.gz"):
        img = vol.with_array(data).to_nibabel()
        img.header["descrip"] = f"medvol {_medvol_version()}".encode()[:79]
        with atomic_path(path, overwrite) as tmp:
            _save_nifti(img, tmp)
    elif suffix == ".mha":
        with atomic_path(path, overwrite) as tmp:
            _write_sitk(vol.with_array(data).to_sitk(), tmp, compress)
    else:  # .mhd + detached data file
        _write_mhd(vol.with_array(data).to_sitk(), path, overwrite, compress)
    return path


def write_repeats(vols: list[Volume], path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write repeats of one volume (time points, acquisitions; same grid) as ONE 4D file.

    ``.nrrd``: a 4D NRRD whose 4th axis (the slowest) has kind ``list`` and no space direction
    (Slicer loads it as a sequence / multi-volume; pynrrd and SimpleITK read it); the three
    domain axes carry the LPS geometry exactly as :func:`write` writes a 3D volume.
    ``.nii`` / ``.nii.gz``: a 4D NIfTI ``(x, y, z, t)`` with the RAS affine, as dcm2niix writes
    repeats. Returns the path.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not vols:
        raise InputError("no volumes to write", path=path)
    first = vols[0]
    for v in vols[1:]:
        if not v.same_grid(first):
            raise GeometryError("repeats must share one grid to be stacked into 4D; write "
                                "them separately (CLI: --split-repeats)")
    if suffix not in (".nrrd", ".nii", ".nii.gz"):
        raise InputError(f"4D repeats can be written as .nrrd or .nii[.gz], not {suffix!r}",
                         path=path)
    check_writable(path, overwrite)
    arrays = [_writable_array(v, path) for v in vols]
    dtype = np.result_type(*arrays)
    data = np.stack([a.astype(dtype, copy=False) for a in arrays])      # (t, z, y, x)
    if suffix == ".nrrd":
        geo = _nrrd_geometry(first)
        dirs = np.vstack([geo["space directions"], np.full((1, 3), np.nan)])
        header: dict[str, Any] = {
            "dimension": 4, "space": geo["space"], "space directions": dirs,
            "space origin": geo["space origin"],
            "kinds": ["domain", "domain", "domain", "list"], "encoding": "gzip",
            **_provenance_fields(first.meta), "medvol_repeats": str(len(vols)),
        }
        with atomic_path(path, overwrite) as tmp:
            _write_nrrd_file(tmp, data, header)
    else:
        import nibabel as nib

        img3 = first.with_array(arrays[0]).to_nibabel()
        img = nib.Nifti1Image(np.transpose(data, (3, 2, 1, 0)), img3.affine, img3.header)
        img.header["descrip"] = f"medvol {_medvol_version()}".encode()[:79]
        with atomic_path(path, overwrite) as tmp:
            _save_nifti(img, tmp)
    return path


def _save_nifti(img, tmp: Path) -> None:
    import nibabel as nib

    nib.save(img, str(tmp))


def _write_sitk(img, tmp: Path, compress: bool) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(img, str(tmp), useCompression=bool(compress))


def _write_mhd(img, path: Path, overwrite: bool, compress: bool) -> None:
    """``.mhd`` names a detached data file, so both are written in a temp folder, then moved."""
    data_name = path.with_suffix(".zraw" if compress else ".raw").name
    check_writable(path.parent / data_name, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        _write_sitk(img, tmpdir / path.name, compress)
        produced = [p for p in tmpdir.iterdir() if p.name != path.name]
        for p in produced:
            os.replace(p, path.parent / p.name)
        os.replace(tmpdir / path.name, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


# --------------------------------------------------------------------------- read
def read(path: str | os.PathLike, *, min_shape: tuple[int, int, int] | None = None,
         purpose: str = "") -> Volume:
    """Read a 3D scalar volume from ``.nrrd``/``.nhdr``, ``.nii``/``.nii.gz`` or ``.mha``/``.mhd``.

    NRRD ``space`` may be LPS, RAS or LAS (long or short spelling); RAS/LAS are converted to LPS.
    Whitelisted ``medvol_<key>`` provenance fields come back in ``Volume.meta``.

    ``min_shape`` (z, y, x): refuse smaller volumes with one clear line (e.g. registration
    needs ≥ 4 voxels per axis); ``purpose`` names the use in that message.

    Raises
    ------
    InputError
        Missing, unreadable, non-3D or vector file, an unsupported suffix, or smaller than
        ``min_shape``.
    LimitError
        The declared size is over the budget (:mod:`medvol.io.budget`).
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in VOLUME_SUFFIXES:
        raise InputError(f"unsupported suffix {suffix or '(none)'!r}", path=path,
                         hint=f"medvol reads {', '.join(VOLUME_SUFFIXES)}")
    _require_file(path)
    try:
        if suffix in (".nrrd", ".nhdr"):
            vol = _read_nrrd_volume(path)
        elif suffix in (".nii", ".nii.gz"):
            vol = _read_nifti(path)
        else:
            vol = _read_sitk_volume(path)
    except MedvolError:
        raise
    except Exception as e:  # library errors -> one line
        raise InputError(f"cannot read: {_one_line(e)}", path=path,
                         hint="is it a valid, complete file?") from None
    if vol.array.size == 0:
        raise InputError(f"volume has no voxels (shape {tuple(vol.shape)})", path=path)
    if min_shape is not None and any(n < m for n, m in zip(vol.shape, min_shape)):
        raise InputError(f"volume of shape {tuple(vol.shape)} (z, y, x) is too small"
                         + (f" for {purpose}" if purpose else "") + f": at least "
                         f"{'×'.join(map(str, min_shape))} voxels are needed", path=path)
    return vol



def _read_nrrd_volume(path: Path) -> Volume:
    data, header = read_nrrd(path)
    kinds = [str(k).lower() for k in header.get("kinds", ["domain"] * data.ndim)]
    if data.ndim != 3 or any(k not in ("domain", "space") for k in kinds):
        raise InputError(
            f"not a 3D scalar volume (dimension {data.ndim}, kinds {' '.join(kinds)})", path=path,
            hint="use medvol.io.read_displacement_field for vector fields or "
                 "medvol.io.read_segmentation for (overlapping) segmentations")
    spacing, origin, direction = _domain_geometry(header, [0, 1, 2], path)
    try:
        return Volume(_native(data), spacing=spacing, origin=origin, direction=direction,
                      meta=_meta_from_header(header))
    except GeometryError as e:
        raise GeometryError(str(e), path=path) from None


def read_repeats(path: str | os.PathLike) -> list[Volume]:
    """Read a file of :func:`write_repeats` (4D NRRD with a ``list``/``time`` 4th axis, or a 4D
    NIfTI) as a list of 3D Volumes on one grid; a 3D file gives a list of one.

    Raises InputError for other layouts (vector fields: :func:`read_displacement_field`)."""
    path = Path(path)
    suffix = _suffix(path)
    _require_file(path)
    if suffix in (".nii", ".nii.gz"):
        import nibabel as nib

        from .budget import check_volume

        img = nib.load(str(path))
        check_volume(img.shape, img.get_data_dtype().itemsize, what="NIfTI volume", path=path)
        if len(img.shape) == 3:
            return [read(path)]
        if len(img.shape) != 4:
            raise InputError(f"NIfTI has shape {img.shape}, not 3D or 4D", path=path)
        data = np.asarray(img.dataobj)
        out = []
        for t in range(img.shape[3]):
            v = Volume.from_nibabel(nib.Nifti1Image(data[..., t], img.affine, img.header))
            out.append(v.with_array(np.ascontiguousarray(v.array)))
        return out
    if suffix not in (".nrrd", ".nhdr"):
        return [read(path)]
    data, header = read_nrrd(path)
    kinds = [str(k).lower() for k in header.get("kinds", ["domain"] * data.ndim)]
    if data.ndim == 3:
        return [read(path)]
    if data.ndim != 4 or kinds[:3] != ["domain"] * 3 or kinds[3] not in ("list", "time"):
        raise InputError(f"not a 3D volume or 4D repeats (dimension {data.ndim}, kinds "
                         f"{' '.join(kinds)})", path=path,
                         hint="vector fields: medvol.io.read_displacement_field")
    spacing, origin, direction = _domain_geometry(header, [0, 1, 2], path)
    meta = _meta_from_header(header)
    return [Volume(_native(np.ascontiguousarray(a)), spacing=spacing, origin=origin,
                   direction=direction, meta=meta) for a in data]


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    from .budget import check_volume

    img = nib.load(str(path))
    shape = img.shape
    check_volume(shape, img.get_data_dtype().itemsize, what="NIfTI volume", path=path)
    if len(shape) == 5 or (len(shape) == 4 and shape[3] != 1):
        raise InputError(f"NIfTI has shape {shape}, not a 3D scalar volume", path=path,
                         hint="medvol reads displacement fields from NRRD or ITK .h5 "
                              "(NIfTI vector components are ambiguous)")
    if len(shape) != 3 and not (len(shape) == 4 and shape[3] == 1):
        raise InputError(f"NIfTI has shape {shape}, not a 3D volume", path=path)
    vol = Volume.from_nibabel(img)
    return vol.with_array(np.ascontiguousarray(vol.array))


def check_metaimage(path: Path, components: int = 1) -> None:
    """Before SimpleITK reads a MetaImage: its ``ElementDataFile`` must resolve inside the
    header's folder (regular file) and its declared ``DimSize`` must fit the budget."""
    from ._common import inside_folder, open_regular
    from .budget import check_volume

    fields: dict[str, str] = {}
    with open_regular(path) as fh:
        for _ in range(200):
            line = fh.readline(65536).decode("latin-1", "replace")
            if not line:
                break
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                break
    dims = fields.get("DimSize", "").split()
    try:
        shape = [int(float(d)) for d in dims]
    except (ValueError, OverflowError):
        raise InputError(f"MetaImage DimSize {fields.get('DimSize')!r} is not numeric",
                         path=path) from None
    ncomp = fields.get("ElementNumberOfChannels", "1")
    try:
        ncomp_i = max(int(ncomp), 1)
    except ValueError:
        raise InputError(f"MetaImage ElementNumberOfChannels {ncomp!r} is not an integer",
                         path=path) from None
    check_volume(shape + [ncomp_i], 8, what="MetaImage", path=path)
    name = fields.get("ElementDataFile")
    if name is None:
        raise InputError("MetaImage header has no ElementDataFile", path=path)
    if name.upper() != "LOCAL":
        if name.upper().startswith("LIST") or "%" in name or len(name.split()) > 1:
            raise InputError("multi-file MetaImage data are not supported", path=path)
        target = inside_folder(path.parent, name, what="ElementDataFile", path=path)
        open_regular(target).close()


def _read_sitk_volume(path: Path) -> Volume:
    import SimpleITK as sitk

    check_metaimage(path)
    img = sitk.ReadImage(str(path))
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"not a 3D scalar volume (dimension {img.GetDimension()}, "
            f"{img.GetNumberOfComponentsPerPixel()} components)", path=path,
            hint="use medvol.io.read_displacement_field for vector fields")
    try:
        return Volume.from_sitk(img)
    except GeometryError as e:
        raise GeometryError(str(e), path=path) from None


