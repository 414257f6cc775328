"""``medvol info``: print the geometry of a volume file or DICOM folder."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ..errors import InputError

__all__ = ["info", "describe"]


def describe(vol) -> dict[str, Any]:
    """Geometry summary of a :class:`~medvol.Volume` as plain JSON-able values.

    Keys: ``shape_zyx``, ``size_ijk``, ``dtype``, ``spacing_mm`` (x, y, z), ``origin_lps_mm``,
    ``direction`` (3×3, columns = LPS unit vectors of i, j, k), ``orientation`` (e.g. ``LPS``),
    ``ijk_to_lps`` (4×4), ``value_range`` (min, max of finite values, or null), ``meta``
    (only keys in :data:`medvol.io.formats.SAFE_META_KEYS`).
    """
    import numpy as np

    from ..io.formats import SAFE_META_KEYS, orientation_code

    arr = vol.numpy()
    finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
    vrange = None if finite.size == 0 else [finite.min().item(), finite.max().item()]
    meta = {k: v for k, v in vol.meta.items()  # whitelisted keys only: never identifiers
            if k in SAFE_META_KEYS and isinstance(v, (str, int, float))}
    return {
        "shape_zyx": list(vol.shape),
        "size_ijk": list(vol.size_xyz),
        "dtype": str(arr.dtype),
        "spacing_mm": [float(s) for s in vol.spacing],
        "origin_lps_mm": [float(o) for o in vol.origin],
        "direction": vol.direction.tolist(),
        "orientation": orientation_code(vol.direction),
        "ijk_to_lps": vol.affine.tolist(),
        "value_range": vrange,
        "meta": meta,
    }


def _fmt(values, digits: int = 6) -> str:
    return "(" + ", ".join(f"{float(v):.{digits}g}" for v in values) + ")"


def _text(name: str, d: dict[str, Any]) -> str:
    lines = [f"{name}"]
    lines.append(f"  shape (z, y, x): {tuple(d['shape_zyx'])}    size (i, j, k): "
                 f"{tuple(d['size_ijk'])}    dtype: {d['dtype']}")
    lines.append(f"  spacing (x, y, z) mm: {_fmt(d['spacing_mm'])}")
    lines.append(f"  origin (LPS) mm:      {_fmt(d['origin_lps_mm'])}")
    lines.append(f"  orientation: {d['orientation']} (axes i, j, k point towards these letters)")
    lines.append("  direction (columns = i, j, k in LPS):")
    for row in d["direction"]:
        lines.append("    " + "  ".join(f"{v:+.6f}" for v in row))
    lines.append("  IJK -> LPS affine (mm):")
    for row in d["ijk_to_lps"]:
        lines.append("    " + "  ".join(f"{v:+12.6f}" for v in row))
    if "value_range" not in d:
        pass                                   # displacement fields: |u| statistics instead
    elif d["value_range"] is None:
        lines.append("  value range: (no finite values)")
    else:
        lo, hi = d["value_range"]
        lines.append(f"  value range: {lo:.6g} .. {hi:.6g}")
    if d["meta"]:
        lines.append("  meta: " + ", ".join(f"{k}={v}" for k, v in sorted(d["meta"].items())))
    return "\n".join(lines)


def info(
    path: Path = typer.Argument(..., help="A .nrrd/.nhdr, .nii/.nii.gz, .mha/.mhd file, a "
                                          "folder of DICOM files, or an ITK transform / "
                                          "displacement field (.h5/.hdf5/.tfm/.txt, vector "
                                          "NRRD)."),
    json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead "
                                                        "of text."),
) -> None:
    """Print a volume's geometry: shape, spacing, LPS origin, direction, orientation, affine.

    For a DICOM folder one block is printed per series. A displacement field (vector NRRD/MHA
    or an ITK DisplacementFieldTransform in .h5/.tfm) prints its grid and |u| statistics in mm;
    any other ITK transform file (affine, Euler, B-spline …) prints its type, parameters and,
    when it is linear, the 4×4 LPS matrix.

    Coordinates are LPS (DICOM/ITK/Slicer); NIfTI files are converted from RAS on reading.

    Example:

        medvol info ct.nrrd

        medvol info study/ --json > geometry.json

        medvol info reg_out/displacement.h5
    """
    from ..io import read, read_dicom_series

    p = Path(path)
    if not p.exists():
        raise InputError("file or folder not found", path=p, hint="check the path")
    if p.is_dir():
        vols = read_dicom_series(p)
        items = [(f"series {n}" + (f" (uid hash {v.meta['series_uid_hash']})"
                                   if "series_uid_hash" in v.meta else ""), v)
                 for n, v in enumerate(vols)]
    elif _is_transform_file(p):
        _transform_info(p, json_out)
        return
    else:
        try:
            items = [(p.name, read(p))]
        except InputError as e:
            reps = _repeats(p)
            if reps:                               # 4D repeats written by `medvol ingest`
                items = [(f"{p.name} repeat {n + 1} of {len(reps)}", v)
                         for n, v in enumerate(reps)]
            elif "vector" not in str(e) or not p.name.lower().endswith(
                    (".nrrd", ".nhdr", ".mha", ".mhd")):
                raise
            else:
                _transform_info(p, json_out)       # a displacement field (vector NRRD/MHA)
                return
    described = [(name, describe(v)) for name, v in items]
    if json_out:
        payload: Any = ({"path": str(p), **described[0][1]} if len(described) == 1
                        and not p.is_dir() else
                        {"path": str(p), "series": [d for _, d in described]})
        typer.echo(json.dumps(payload, indent=2))
    else:
        from .._text import sanitize

        typer.echo(sanitize("\n".join(_text(name, d) for name, d in described)))


def _repeats(p: Path) -> list:
    """The 3D volumes of a 4D repeats file (:func:`medvol.io.volumes.read_repeats`), or []."""
    from ..io.volumes import read_repeats

    try:
        vols = read_repeats(p)
    except InputError:
        return []
    return vols if len(vols) > 1 else []


_TRANSFORM_SUFFIXES = (".h5", ".hdf5", ".tfm", ".txt")


def _is_transform_file(p: Path) -> bool:
    """ITK transform files (``.h5``/``.hdf5``/``.tfm``/``.txt``); vector NRRD/MHA fields are
    recognised when the volume reader refuses them (see :func:`info`)."""
    return p.name.lower().endswith(_TRANSFORM_SUFFIXES)


def _transform_info(p: Path, json_out: bool) -> None:
    """Describe a displacement field or an ITK transform file (LPS, mm)."""
    import numpy as np

    from .._text import sanitize
    from ..io import read_displacement_field

    if not p.is_file():                        # FIFOs, devices: never opened
        raise InputError("not a regular file", path=p, hint="give a transform or field file")
    try:
        disp, grid = read_displacement_field(p)
    except InputError:
        disp = None
    if disp is not None:
        mag = np.linalg.norm(disp, axis=-1)
        d = {"kind": "displacement field", **describe(grid),
             "field_type": grid.meta.get("displacement_field_type"),
             "displacement_mm": {"max": float(mag.max()), "mean": float(mag.mean()),
                                 "p95": float(np.percentile(mag, 95))}}
        d.pop("value_range", None)
        if json_out:
            typer.echo(json.dumps({"path": str(p), **d}, indent=2))
            return
        lines = _text(p.name + " (displacement field, LPS mm)", d).splitlines()
        u = d["displacement_mm"]
        lines.append(f"  |u| mm: max {u['max']:.4g}, mean {u['mean']:.4g}, 95th percentile "
                     f"{u['p95']:.4g}" + (f"    ({d['field_type']} field)" if d["field_type"]
                                          else ""))
        typer.echo(sanitize("\n".join(lines)))
        return
    import SimpleITK as sitk

    try:
        tx = sitk.ReadTransform(str(p))
    except RuntimeError:
        raise InputError("not a displacement field or ITK transform file medvol can read",
                         path=p, hint="give an ITK .h5/.tfm/.txt transform or a vector NRRD") from None
    tx = tx.Downcast() if hasattr(tx, "Downcast") else tx
    d: dict[str, Any] = {"kind": "transform", "type": tx.GetName(),
                         "parameters": list(tx.GetParameters()),
                         "fixed_parameters": list(tx.GetFixedParameters())}
    if hasattr(tx, "GetMatrix") and hasattr(tx, "GetTranslation"):
        m = np.asarray(tx.GetMatrix(), float).reshape(3, 3)
        c = np.asarray(tx.GetCenter(), float) if hasattr(tx, "GetCenter") else np.zeros(3)
        t = np.asarray(tx.GetTranslation(), float)
        h = np.eye(4)
        h[:3, :3] = m
        h[:3, 3] = t + c - m @ c          # x ↦ M (x − c) + c + t
        d["matrix_lps"] = h.tolist()
    if json_out:
        typer.echo(json.dumps({"path": str(p), **d}, indent=2))
        return
    lines = [f"{p.name} (ITK transform: {d['type']}; maps fixed-image LPS points to moving-image "
             f"LPS points, mm)"]
    if "matrix_lps" in d:
        lines.append("  4×4 matrix (LPS, mm):")
        for row in d["matrix_lps"]:
            lines.append("    " + "  ".join(f"{v:+12.6f}" for v in row))
    else:
        n = len(d["parameters"])
        lines.append(f"  {n} parameters; fixed parameters: {len(d['fixed_parameters'])}")
    typer.echo(sanitize("\n".join(lines)))

