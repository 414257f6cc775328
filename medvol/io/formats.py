"""Volume files that 3D Slicer opens: NRRD, NIfTI, MetaImage, ``.seg.nrrd`` segmentations and
displacement fields (NRRD vector field or ITK ``.h5``/``.tfm`` transform).

Conventions (see ``medvol.volume``): arrays are ``(z, y, x)``; geometry is LPS. NRRD files are
written exactly as Slicer writes them (``space: left-posterior-superior``, ``space directions`` =
direction × spacing per axis, ``space origin`` = LPS centre of voxel 0). NIfTI is RAS by definition
and is converted at that boundary only (qform = sform, code 1). Every writer is atomic (temp file
beside the target, then rename) and refuses to replace an existing file unless ``overwrite=True``.

Only a whitelist of de-identified metadata (:data:`SAFE_META_KEYS`, plain ``str``/``int``/``float``
values) is stored in files, as NRRD custom fields ``medvol_<key>:=value``; patient identifiers are
never written.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._atomic import atomic_path, check_writable
from ..errors import GeometryError, InputError, MedvolError
from ..volume import Volume

__all__ = [
    "read", "write", "write_segmentation", "read_segmentation", "write_displacement_field",
    "read_displacement_field", "voxel_ddf_to_lps_mm", "orientation_code", "SAFE_META_KEYS",
    "VOLUME_SUFFIXES", "FIELD_SUFFIXES",
]

#: Metadata keys that may be written into files (never names, IDs, dates of birth, raw UIDs).
SAFE_META_KEYS = frozenset({
    "modality", "series_uid_hash", "study_uid_hash", "frame_of_reference_uid_hash",
    "manufacturer", "body_part", "units", "kind", "source", "recon_method", "kvp",
    "convolution_kernel", "slice_thickness", "tilt_deg", "max_spacing_deviation_mm",
    "n_views", "description", "label", "series_number",
})

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
_WRITE_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha", ".mhd")
FIELD_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".h5", ".hdf5", ".tfm")

_SPACES = {  # NRRD ``space`` value -> sign flips that take its vectors to LPS
    "left-posterior-superior": (1.0, 1.0, 1.0), "lps": (1.0, 1.0, 1.0),
    "right-anterior-superior": (-1.0, -1.0, 1.0), "ras": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (1.0, -1.0, 1.0), "las": (1.0, -1.0, 1.0),
}

_SEG_TYPE = np.uint8


# --------------------------------------------------------------------------- helpers
def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def _medvol_version() -> str:
    import medvol

    return str(getattr(medvol, "__version__", "unknown"))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def _require_file(path: Path) -> None:
    if not path.exists():
        raise InputError("file not found", path=path, hint="check the path")
    if path.is_dir():
        raise InputError("is a folder, expected a file", path=path,
                         hint="for a DICOM folder use medvol.io.read_dicom_series")


def _safe_text(value: Any, what: str, path: Path) -> str:
    text = str(value)
    if "\n" in text or "\r" in text:
        raise InputError(f"{what} contains a line break (not allowed in a NRRD header)",
                         path=path)
    try:
        text.encode("ascii")
    except UnicodeEncodeError:
        raise InputError(f"{what} {text!r} is not ASCII; NRRD headers written by medvol are ASCII",
                         path=path, hint="use an ASCII name") from None
    return text


def _provenance_fields(meta: Mapping[str, Any]) -> dict[str, str]:
    """Custom NRRD fields: medvol version + whitelisted simple metadata (no identifiers)."""
    out = {"medvol_version": _medvol_version()}
    for key in sorted(meta):
        value = meta[key]
        if key not in SAFE_META_KEYS or isinstance(value, bool):
            continue
        if isinstance(value, (str, int, float, np.integer, np.floating)):
            text = str(value)
            if "\n" in text or "\r" in text or not text.isascii() or len(text) > 200:
                continue
            out[f"medvol_{key}"] = text
    return out


def _parse_scalar(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _meta_from_header(header: Mapping[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, value in header.items():
        if key.startswith("medvol_") and key[len("medvol_"):] in SAFE_META_KEYS:
            meta[key[len("medvol_"):]] = _parse_scalar(str(value))
    return meta


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


def _nrrd_geometry(vol: Volume) -> dict[str, Any]:
    a = vol.affine
    return {
        "space": "left-posterior-superior",
        # one row per NRRD axis (i, j, k) = direction column × spacing (mm)
        "space directions": a[:3, :3].T.copy(),
        "space origin": a[:3, 3].copy(),
    }


_NRRD_TYPES = {  # numpy dtype -> NRRD type name as Slicer/teem writes it
    "int8": "signed char", "uint8": "unsigned char", "int16": "short",
    "uint16": "unsigned short", "int32": "int", "uint32": "unsigned int",
    "int64": "long long int", "uint64": "unsigned long long int",
    "float32": "float", "float64": "double",
}
_NRRD_STANDARD = ("dimension", "space", "space directions", "kinds", "endian", "encoding",
                  "space origin", "measurement frame")


def _num(x: float) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def _vec(v) -> str:
    v = np.asarray(v, dtype=float).reshape(-1)
    if not np.all(np.isfinite(v)):
        return "none"
    return "(" + ",".join(_num(x) for x in v) + ")"


def _write_nrrd_file(tmp: Path, data: np.ndarray, header: dict[str, Any]) -> None:
    """Write an attached-header NRRD (NRRD0004, as Slicer does) from a C-ordered array.

    ``header`` holds the standard fields of :data:`_NRRD_STANDARD` (vectors as arrays, rows =
    per-axis vectors; NaN rows become ``none``) and custom ``key:=value`` string fields.
    ``type``, ``sizes`` and ``endian`` come from ``data``.
    """
    import zlib

    data = np.ascontiguousarray(data)
    dtype_name = data.dtype.newbyteorder("=").name
    if dtype_name not in _NRRD_TYPES:
        raise InputError(f"NRRD cannot hold voxel type {data.dtype}", path=tmp)
    if data.dtype.itemsize > 1:  # the header always says little endian
        data = data.astype(data.dtype.newbyteorder("<"), copy=False)
    lines = ["NRRD0004",
             "# Complete NRRD file format specification at:",
             "# http://teem.sourceforge.net/nrrd/format.html",
             f"type: {_NRRD_TYPES[dtype_name]}",
             f"dimension: {data.ndim}"]
    if "space" in header:
        lines.append(f"space: {header['space']}")
    lines.append("sizes: " + " ".join(str(n) for n in data.shape[::-1]))
    if "space directions" in header:
        lines.append("space directions: " + " ".join(_vec(r) for r in header["space directions"]))
    if "kinds" in header:
        lines.append("kinds: " + " ".join(header["kinds"]))
    if data.dtype.itemsize > 1:
        lines.append("endian: little")
    encoding = header.get("encoding", "gzip")
    lines.append(f"encoding: {encoding}")
    if "space origin" in header:
        lines.append(f"space origin: {_vec(header['space origin'])}")
    if "measurement frame" in header:
        lines.append("measurement frame: " + " ".join(_vec(r) for r in header["measurement frame"]))
    for key, value in header.items():
        if key in _NRRD_STANDARD:
            continue
        text = str(value)
        if "\n" in text or "\r" in text or ":=" in key or not (key + text).isascii():
            raise InputError(f"NRRD field {key!r} cannot be written (line break or non-ASCII)",
                             path=tmp)
        lines.append(f"{key}:={text}")
    if encoding not in ("raw", "gzip"):
        raise InputError(f"unsupported NRRD encoding {encoding!r}", path=tmp)
    raw = memoryview(data.reshape(-1).view(np.uint8))  # C order (z, y, x) = NRRD order, no copy
    step = 1 << 22
    with open(tmp, "wb") as fh:
        fh.write(("\n".join(lines) + "\n\n").encode("ascii"))
        if encoding == "raw":
            fh.write(raw)
        else:
            comp = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31 = gzip container
            for start in range(0, len(raw), step):
                fh.write(comp.compress(raw[start:start + step]))
            fh.write(comp.flush())


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
def read(path: str | os.PathLike) -> Volume:
    """Read a 3D scalar volume from ``.nrrd``/``.nhdr``, ``.nii``/``.nii.gz`` or ``.mha``/``.mhd``.

    NRRD ``space`` may be LPS, RAS or LAS (long or short spelling); RAS/LAS are converted to LPS.
    Whitelisted ``medvol_<key>`` provenance fields come back in ``Volume.meta``.

    Raises
    ------
    InputError
        Missing, unreadable, non-3D or vector file, or an unsupported suffix.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in VOLUME_SUFFIXES:
        raise InputError(f"unsupported suffix {suffix or '(none)'!r}", path=path,
                         hint=f"medvol reads {', '.join(VOLUME_SUFFIXES)}")
    _require_file(path)
    try:
        if suffix in (".nrrd", ".nhdr"):
            return _read_nrrd_volume(path)
        if suffix in (".nii", ".nii.gz"):
            return _read_nifti(path)
        return _read_sitk_volume(path)
    except MedvolError:
        raise
    except Exception as e:  # library errors -> one line
        raise InputError(f"cannot read: {_one_line(e)}", path=path,
                         hint="is it a valid, complete file?") from None


def _space_flip(header: Mapping[str, Any], path: Path) -> np.ndarray:
    space = header.get("space")
    if space is None:
        if "space dimension" in header and int(header["space dimension"]) != 3:
            raise InputError(f"space dimension {header['space dimension']} is not 3", path=path)
        return np.ones(3)  # Slicer assumes LPS when the file says nothing
    key = str(space).strip().lower()
    if key not in _SPACES:
        raise InputError(f"NRRD space {space!r} is not an anatomical 3D space", path=path,
                         hint="medvol reads left-posterior-superior, right-anterior-superior "
                              "or left-anterior-superior (LPS/RAS/LAS)")
    return np.asarray(_SPACES[key])


def _domain_geometry(header: Mapping[str, Any], domain_axes: list[int], path: Path):
    """Spacing, origin, direction (LPS) from a NRRD header for the given NRRD axes (i, j, k)."""
    flip = _space_flip(header, path)
    sd = header.get("space directions")
    if sd is not None:
        sd = np.asarray(sd, dtype=float)
        cols = np.stack([sd[a] for a in domain_axes], axis=1)  # 3×3, columns i, j, k
        if not np.all(np.isfinite(cols)):
            raise InputError("space directions of a spatial axis is 'none'", path=path)
    else:
        sp = header.get("spacings")
        sp = np.ones(len(header["sizes"])) if sp is None else np.asarray(sp, dtype=float)
        vals = np.array([sp[a] for a in domain_axes], dtype=float)
        vals = np.where(np.isfinite(vals), vals, 1.0)
        cols = np.diag(vals)
    cols = flip[:, None] * cols
    spacing = np.linalg.norm(cols, axis=0)
    if np.any(spacing <= 0):
        raise InputError("a space direction has zero length", path=path)
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=float).reshape(-1)
    if origin.shape != (3,) or not np.all(np.isfinite(origin)):
        origin = np.zeros(3)
    return spacing, flip * origin, cols / spacing


def _native(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr)


def _read_nrrd(path: Path):
    import nrrd

    return nrrd.read(str(path), index_order="C")


def _read_nrrd_volume(path: Path) -> Volume:
    data, header = _read_nrrd(path)
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


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    img = nib.load(str(path))
    shape = img.shape
    if len(shape) == 5 or (len(shape) == 4 and shape[3] != 1):
        raise InputError(f"NIfTI has shape {shape}, not a 3D scalar volume", path=path,
                         hint="medvol reads displacement fields from NRRD or ITK .h5 "
                              "(NIfTI vector components are ambiguous)")
    if len(shape) != 3 and not (len(shape) == 4 and shape[3] == 1):
        raise InputError(f"NIfTI has shape {shape}, not a 3D volume", path=path)
    vol = Volume.from_nibabel(img)
    return vol.with_array(np.ascontiguousarray(vol.array))


def _read_sitk_volume(path: Path) -> Volume:
    import SimpleITK as sitk

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


# --------------------------------------------------------------------------- segmentation
_PALETTE = [  # Slicer-like defaults (0–1 floats)
    (0.5, 0.68, 0.5), (0.95, 0.84, 0.57), (0.69, 0.48, 0.39), (0.44, 0.72, 0.82),
    (0.85, 0.4, 0.33), (0.56, 0.93, 0.56), (0.86, 0.25, 0.63), (0.86, 0.78, 0.39),
    (0.35, 0.5, 0.86), (0.99, 0.91, 0.62),
]


def _fmt(x: float) -> str:
    return f"{float(x):.6g}"


def _reference_geometry_string(vol: Volume) -> str:
    """Slicer's ``Reference image geometry``: IJK→RAS 4×4 row-major, then the extent."""
    vals = [repr(float(v)) if v != 0 else "0" for v in vol.affine_ras.reshape(-1)]
    z, y, x = vol.shape
    return ";".join(vals + ["0", str(x - 1), "0", str(y - 1), "0", str(z - 1)]) + ";"


def write_segmentation(labels: Volume, path: str | os.PathLike, *,
                       names: Mapping[int, str] | None = None,
                       colors: Mapping[int, tuple] | None = None,
                       overwrite: bool = False) -> Path:
    """Write a label volume as a Slicer ``.seg.nrrd`` (non-overlapping, one layer).

    Parameters
    ----------
    labels : Volume
        Integer labels ``(z, y, x)`` in 0–255; 0 is background, every other value present (or
        named in ``names``) becomes one segment with ``SegmentN_LabelValue`` = that value.
    path : str or Path
        Should end in ``.seg.nrrd``.
    names : dict label -> name, optional
        Segment names (ASCII); default ``Segment_<label>`` (``NameAutoGenerated:=1``).
    colors : dict label -> (r, g, b) in 0–1, optional
        Default: a fixed palette (``ColorAutoGenerated:=1``).
    overwrite : bool
        Replace an existing file.

    Notes
    -----
    ``SegmentN_Extent`` is ``minI maxI minJ maxJ minK maxK`` of that label's voxels in file
    indices (``0 -1 0 -1 0 -1`` for an empty segment); ``Segmentation_ReferenceImageExtentOffset``
    is ``0 0 0``; ``SegmentN_ID`` is ``Segment_<label>`` (stable across runs).
    """
    path = Path(path)
    if not isinstance(labels, Volume):
        raise InputError(f"write_segmentation() needs a Volume, got {type(labels).__name__}",
                         path=path)
    if _suffix(path) != ".nrrd":
        raise InputError("a Slicer segmentation must be written as .seg.nrrd", path=path)
    check_writable(path, overwrite)
    arr = labels.numpy()
    if arr.dtype == bool:
        arr = arr.astype(_SEG_TYPE)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InputError("segmentation labels must be whole numbers", path=path,
                             hint="pass an integer label volume")
    elif arr.dtype.kind not in "iu":
        raise InputError(f"segmentation labels must be integers, got {arr.dtype}", path=path)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise InputError(f"label values must lie in 0–255 (got {arr.min()}…{arr.max()})",
                         path=path, hint="relabel to at most 255 segments")
    data = np.ascontiguousarray(arr.astype(_SEG_TYPE))
    names = dict(names or {})
    colors = dict(colors or {})
    present = [int(v) for v in np.unique(data) if v != 0]
    values = sorted(set(present) | {int(k) for k in names})
    for v in values:
        if not 1 <= v <= 255:
            raise InputError(f"segment label {v} outside 1–255", path=path)

    header: dict[str, Any] = {
        "dimension": 3,
        **_nrrd_geometry(labels),
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
        **_provenance_fields(labels.meta),
    }
    conv = "&".join([
        "Collapse labelmaps|1|Merge the labelmaps into as few shared labelmaps as possible",
        "Crop to reference image geometry|0|Crop the model to the extent of reference geometry",
        "Oversampling factor|1|Oversampling of the reference image geometry",
        f"Reference image geometry|{_reference_geometry_string(labels)}|Image geometry "
        "description string determining the geometry of the labelmap",
    ]) + "&"
    header["Segmentation_ContainedRepresentationNames"] = "Binary labelmap|"
    header["Segmentation_ConversionParameters"] = conv
    header["Segmentation_MasterRepresentation"] = "Binary labelmap"
    header["Segmentation_ReferenceImageExtentOffset"] = "0 0 0"
    for n, v in enumerate(values):
        mask = data == v
        if mask.any():
            ks, js, is_ = (np.nonzero(mask.any(axis=a))[0] for a in ((1, 2), (0, 2), (0, 1)))
            extent = f"{is_[0]} {is_[-1]} {js[0]} {js[-1]} {ks[0]} {ks[-1]}"
        else:
            extent = "0 -1 0 -1 0 -1"
        if v in colors:
            rgb = np.asarray(colors[v], dtype=float).reshape(-1)
            if rgb.shape != (3,) or np.any(rgb < 0) or np.any(rgb > 1):
                raise InputError(f"color of label {v} must be 3 floats in 0–1, got {colors[v]!r}",
                                 path=path, hint="divide 0–255 colours by 255")
        else:
            rgb = np.asarray(_PALETTE[n % len(_PALETTE)])
        name = _safe_text(names.get(v, f"Segment_{v}"), f"name of label {v}", path)
        header[f"Segment{n}_Color"] = " ".join(_fmt(c) for c in rgb)
        header[f"Segment{n}_ColorAutoGenerated"] = "0" if v in colors else "1"
        header[f"Segment{n}_Extent"] = extent
        header[f"Segment{n}_ID"] = f"Segment_{v}"
        header[f"Segment{n}_LabelValue"] = str(v)
        header[f"Segment{n}_Layer"] = "0"
        header[f"Segment{n}_Name"] = name
        header[f"Segment{n}_NameAutoGenerated"] = "0" if v in names else "1"
        header[f"Segment{n}_Tags"] = "Segmentation.Status:inprogress|"
    with atomic_path(path, overwrite) as tmp:
        _write_nrrd_file(tmp, data, header)
    return path


def read_segmentation(path: str | os.PathLike) -> tuple[Volume, list[dict[str, Any]]]:
    """Read a (non-overlapping, 3D) Slicer ``.seg.nrrd``.

    Returns
    -------
    labels : Volume
        The label array ``(z, y, x)`` with its LPS geometry.
    segments : list of dict
        One per segment, in file order: ``index``, ``id``, ``name``, ``label_value``, ``layer``,
        ``color`` (r, g, b in 0–1), ``extent`` (minI maxI minJ maxJ minK maxK, as stored),
        ``name_auto_generated``, ``color_auto_generated``, ``tags`` (dict).

    Raises
    ------
    InputError
        Missing/unreadable file, or a 4D (overlapping, multi-layer) segmentation.
    """
    path = Path(path)
    if _suffix(path) not in (".nrrd", ".nhdr"):
        raise InputError("a Slicer segmentation is a .seg.nrrd file", path=path)
    _require_file(path)
    try:
        data, header = _read_nrrd(path)
    except Exception as e:
        raise InputError(f"cannot read: {_one_line(e)}", path=path) from None
    if data.ndim != 3:
        raise InputError(f"segmentation has {data.ndim} dimensions; overlapping (multi-layer) "
                         "segmentations are not supported", path=path,
                         hint="in Slicer, collapse the segments to one layer before export")
    spacing, origin, direction = _domain_geometry(header, [0, 1, 2], path)
    fields: dict[int, dict[str, str]] = {}
    for key, value in header.items():
        m = re.match(r"^Segment([0-9]+)_(.+)$", key)
        if m:
            fields.setdefault(int(m.group(1)), {})[m.group(2)] = str(value)
    segments = []
    for n in sorted(fields):
        f = fields[n]
        tags = {}
        for item in f.get("Tags", "").split("|"):
            if item:
                k, _, v = item.partition(":")
                tags[k] = v
        try:
            seg = {
                "index": n,
                "id": f.get("ID", f"Segment_{n}"),
                "name": f.get("Name", f.get("ID", f"Segment_{n}")),
                "label_value": int(f.get("LabelValue", n + 1)),
                "layer": int(f.get("Layer", 0)),
                "color": tuple(float(c) for c in f["Color"].split()) if "Color" in f else None,
                "extent": tuple(int(e) for e in f["Extent"].split()) if "Extent" in f else None,
                "name_auto_generated": f.get("NameAutoGenerated", "0") != "0",
                "color_auto_generated": f.get("ColorAutoGenerated", "0") != "0",
                "tags": tags,
            }
        except ValueError as e:
            raise InputError(f"malformed Segment{n}_ field: {_one_line(e)}", path=path) from None
        segments.append(seg)
    meta = _meta_from_header(header)
    offset = header.get("Segmentation_ReferenceImageExtentOffset")
    if offset is not None:
        meta["reference_extent_offset"] = str(offset)
    try:
        vol = Volume(_native(data), spacing=spacing, origin=origin, direction=direction, meta=meta)
    except GeometryError as e:
        raise GeometryError(str(e), path=path) from None
    return vol, segments


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


def _field_image(u: np.ndarray, reference: Volume):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(u, dtype=np.float64), isVector=True)
    img.SetSpacing(reference.spacing)
    img.SetOrigin(reference.origin)
    img.SetDirection(tuple(float(x) for x in reference.direction.reshape(-1)))
    return img


def _write_itk_field(u: np.ndarray, reference: Volume, tmp: Path) -> None:
    import SimpleITK as sitk

    tx = sitk.DisplacementFieldTransform(_field_image(u, reference))
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
    data, header = _read_nrrd(path)
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


# --------------------------------------------------------------------------- orientation
def orientation_code(direction) -> str:
    """Three-letter anatomical code of the axes i, j, k, naming where each axis *points*.

    The convention of DICOM, Slicer and nibabel (``aff2axcodes``): the identity LPS direction is
    ``"LPS"``, a RAS-stored NIfTI ``"RAS"``. (ITK's legacy ``SpatialOrientation`` names say where
    axes come *from*, so its ``RAI`` is this ``LPS``.) For oblique grids the nearest code is the
    axis permutation that best matches the direction cosines.

    Parameters
    ----------
    direction : 3×3 array, columns = LPS unit vectors of i, j, k.
    """
    import itertools

    d = np.asarray(direction, dtype=float).reshape(3, 3)
    best, best_score = None, -1.0
    for perm in itertools.permutations(range(3)):  # perm[c] = world axis of column c
        score = sum(abs(d[perm[c], c]) for c in range(3))
        if score > best_score + 1e-12:
            best, best_score = perm, score
    letters = (("L", "R"), ("P", "A"), ("S", "I"))  # positive LPS axis first
    return "".join(letters[w][0 if d[w, c] >= 0 else 1] for c, w in enumerate(best))
