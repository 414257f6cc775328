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
    if d["value_range"] is None:
        lines.append("  value range: (no finite values)")
    else:
        lo, hi = d["value_range"]
        lines.append(f"  value range: {lo:.6g} .. {hi:.6g}")
    if d["meta"]:
        lines.append("  meta: " + ", ".join(f"{k}={v}" for k, v in sorted(d["meta"].items())))
    return "\n".join(lines)


def info(
    path: Path = typer.Argument(..., help="A .nrrd/.nhdr, .nii/.nii.gz, .mha/.mhd file or a "
                                          "folder of DICOM files."),
    json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead "
                                                        "of text."),
) -> None:
    """Print a volume's geometry: shape, spacing, LPS origin, direction, orientation, affine.

    For a DICOM folder one block is printed per series.

    Coordinates are LPS (DICOM/ITK/Slicer); NIfTI files are converted from RAS on reading.

    Example:

        medvol info ct.nrrd

        medvol info study/ --json > geometry.json
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
    else:
        items = [(p.name, read(p))]
    described = [(name, describe(v)) for name, v in items]
    if json_out:
        payload: Any = ({"path": str(p), **described[0][1]} if not p.is_dir() else
                        {"path": str(p), "series": [d for _, d in described]})
        typer.echo(json.dumps(payload, indent=2))
    else:
        from .._text import sanitize

        typer.echo(sanitize("\n".join(_text(name, d) for name, d in described)))
