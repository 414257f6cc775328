"""Grids for reconstruction jobs: axial slice selection, in-plane block averaging, resampling.

These act on :class:`~medvol.Volume` objects and keep their geometry exact (origin, spacing,
direction follow every operation), so a reconstruction lands on the reference's grid.
"""
from __future__ import annotations

import numpy as np

from ..errors import GeometryError, InputError
from ..volume import Volume

__all__ = ["parse_range", "select_slices", "downsample_inplane", "resample_inplane",
           "resample_like", "is_ct"]


def parse_range(text: str, what: str = "range") -> tuple[int | None, ...]:
    """``"K"`` → ``(K,)``; ``"START:STOP[:STEP]"`` → a tuple for :class:`slice` (empty parts
    None). ``what`` names the parameter in the error message."""
    parts = [p.strip() for p in str(text).split(":")]
    try:
        vals = tuple(int(p) if p else None for p in parts)
    except ValueError:
        raise InputError(f"{what} {text!r} is not START:STOP[:STEP]") from None
    if len(vals) > 3 or (len(vals) == 3 and vals[2] is not None and vals[2] < 1):
        raise InputError(f"{what} {text!r}: give START:STOP[:STEP] with a positive STEP")
    return vals


def select_slices(vol: Volume, slices: str | slice | int | None) -> Volume:
    """Axial slices by a Python-style ``slice``, one index, or the text ``START:STOP[:STEP]``
    / ``K`` (negatives count from the end); the step must be positive and the selection not
    empty."""
    if slices is None or slices == "":
        return vol
    n = vol.shape[0]
    if isinstance(slices, str):
        vals = parse_range(slices, "slices")
        sel = vals[0] if len(vals) == 1 else slice(*vals)
    else:
        sel = slices
    if not isinstance(sel, slice):
        k = sel
        if k is None or not -n <= int(k) < n:
            raise InputError(f"slices {slices!r} selects no slice of a volume with {n} slices")
        k = int(k) % n
        return vol[k:k + 1]
    if sel.step is not None and sel.step < 1:
        raise InputError(f"slices {slices!r}: the step must be positive")
    if len(range(*sel.indices(n))) == 0:
        raise InputError(f"slices {slices!r} selects no slice of a volume with {n} slices")
    return vol[sel]


def downsample_inplane(vol: Volume, factor: int) -> Volume:
    """Average ``factor × factor`` in-plane blocks of every slice; geometry follows exactly."""
    if factor < 1:
        raise InputError(f"downsample must be at least 1, got {factor}")
    if factor == 1:
        return vol
    a = vol.numpy().astype(np.float32)
    nz, ny, nx = a.shape
    ny2, nx2 = ny // factor, nx // factor
    if ny2 < 8 or nx2 < 8:
        raise GeometryError(f"downsampling {ny}x{nx} by {factor} leaves too few pixels")
    a = a[:, : ny2 * factor, : nx2 * factor].reshape(nz, ny2, factor, nx2, factor).mean(axis=(2, 4))
    half = (factor - 1) / 2.0
    origin = vol.index_to_world([half, half, 0.0])
    spacing = (vol.spacing[0] * factor, vol.spacing[1] * factor, vol.spacing[2])
    return Volume(a, spacing=spacing, origin=origin, direction=vol.direction, meta=vol.meta)


def resample_inplane(vol: Volume, n: int, pixel: float, fill: float | None = None) -> Volume:
    """Resample every slice onto an ``n × n`` grid of ``pixel`` mm, centred on the slice centre
    (same direction and slice positions; linear interpolation; ``fill`` outside)."""
    import SimpleITK as sitk

    nz, ny, nx = vol.shape
    centre = vol.index_to_world([(nx - 1) / 2.0, (ny - 1) / 2.0, 0.0])
    spacing = np.array([pixel, pixel, vol.spacing[2]])
    origin = centre - vol.direction @ (spacing * np.array([(n - 1) / 2.0, (n - 1) / 2.0, 0.0]))
    a = vol.numpy().astype(np.float32)
    fill = float(a.min()) if fill is None else float(fill)
    img = sitk.GetImageFromArray(a)
    img.SetSpacing(vol.spacing); img.SetOrigin(vol.origin)
    img.SetDirection(tuple(vol.direction.reshape(-1)))
    ref = sitk.Image(int(n), int(n), int(nz), sitk.sitkFloat32)
    ref.SetSpacing(tuple(spacing)); ref.SetOrigin(tuple(origin))
    ref.SetDirection(tuple(vol.direction.reshape(-1)))
    out = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, fill, sitk.sitkFloat32)
    return Volume(sitk.GetArrayFromImage(out), spacing=spacing, origin=origin,
                  direction=vol.direction, meta=vol.meta)


def resample_like(vol: Volume, like: Volume, fill: float = 0.0) -> Volume:
    """``vol`` resampled (SimpleITK, linear, in world coordinates) onto the grid of ``like``;
    ``fill`` where ``like`` reaches outside ``vol``. Returns ``vol`` itself when the grids agree."""
    if vol.same_grid(like):
        return vol
    import SimpleITK as sitk

    src = vol.with_array(vol.numpy().astype(np.float32)).to_sitk()
    out = sitk.Resample(src, like.to_sitk(), sitk.Transform(), sitk.sitkLinear, float(fill),
                        sitk.sitkFloat32)
    return like.with_array(sitk.GetArrayFromImage(out), **{k: v for k, v in vol.meta.items()
                                                          if k == "recon_method"})


def is_ct(vol: Volume) -> bool:
    """CT in HU: the modality says so, or the minimum is HU-valued air (< −500)."""
    if str(vol.meta.get("modality", vol.meta.get("Modality", ""))).upper() == "CT":
        return True
    return float(np.nanmin(vol.numpy())) < -500
