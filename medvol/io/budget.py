"""The declared-size budget: how much data an input may *declare* before medvol allocates or
decompresses anything.

Every reader checks the sizes a header declares (voxels, bytes, frames, the slices a resampling
would create, the decompressed size of gzip/bzip2 data) against this budget **before**
allocating, so a 2 KB file cannot make medvol allocate gigabytes. Defaults:

==========================  ==================  ==============================================
limit                       default             override
==========================  ==================  ==============================================
voxels per volume           2**28 (268 M)       ``--max-voxels N`` / ``MEDVOL_MAX_VOXELS``
bytes per volume            2 GiB               ``MEDVOL_MAX_BYTES``
frames per DICOM object     65 536              ``MEDVOL_MAX_FRAMES``
resampled / acquired slices 16× (≥ 1024 allowed) ``MEDVOL_MAX_SLICE_FACTOR``
==========================  ==================  ==============================================

A 512×512×1000 CT is 262 M voxels, inside the default. Going over raises
:class:`~medvol.errors.LimitError` (exit code 8) naming the file and the limit.
"""
from __future__ import annotations

import math
import os
from typing import Iterable

from ..errors import InputError, LimitError

__all__ = ["DEFAULTS", "max_voxels", "max_bytes", "max_frames", "max_slice_factor",
           "check_volume", "check_frames", "check_resampled_slices", "set_max_voxels"]

DEFAULTS = {
    "MEDVOL_MAX_VOXELS": 2**28,
    "MEDVOL_MAX_BYTES": 2 * 2**30,
    "MEDVOL_MAX_FRAMES": 65536,
    "MEDVOL_MAX_SLICE_FACTOR": 16,
}


def _env(name: str) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return int(DEFAULTS[name])
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not a number",
                         hint=f"unset it or give a positive integer (default {DEFAULTS[name]})"
                         ) from None
    if not math.isfinite(value) or value < 1:
        raise InputError(f"{name}={raw!r} must be a positive integer",
                         hint=f"default {DEFAULTS[name]}")
    return int(value)


def max_voxels() -> int:
    """Voxels one volume may hold (``MEDVOL_MAX_VOXELS``, default 2**28)."""
    return _env("MEDVOL_MAX_VOXELS")


def max_bytes() -> int:
    """Bytes one volume may hold in memory (``MEDVOL_MAX_BYTES``, default 2 GiB)."""
    return _env("MEDVOL_MAX_BYTES")


def max_frames() -> int:
    """Frames one DICOM object may declare (``MEDVOL_MAX_FRAMES``, default 65 536)."""
    return _env("MEDVOL_MAX_FRAMES")


def max_slice_factor() -> int:
    """How many times more slices than acquired a resampling may create (default 16)."""
    return _env("MEDVOL_MAX_SLICE_FACTOR")


def set_max_voxels(n: int | None) -> None:
    """Set the voxel budget for this process (the CLI's ``--max-voxels``)."""
    if n is None:
        return
    if n < 1:
        raise InputError(f"--max-voxels must be at least 1, got {n}")
    os.environ["MEDVOL_MAX_VOXELS"] = str(int(n))


def check_volume(shape: Iterable[int], itemsize: int, *, what: str, path: object = None) -> int:
    """Refuse a declared array before it is allocated; returns its size in bytes.

    Raises
    ------
    InputError
        A size is negative or not an integer.
    LimitError
        More voxels than :func:`max_voxels` or more bytes than :func:`max_bytes`.
    """
    dims = []
    for n in shape:
        try:
            v = int(n)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"{what}: size {n!r} is not an integer", path=path) from None
        if v < 0 or v != n:
            raise InputError(f"{what}: size {n!r} must be a non-negative integer", path=path)
        dims.append(v)
    voxels = math.prod(dims)
    limit = max_voxels()
    if voxels > limit:
        raise LimitError(f"{what} declares {'×'.join(map(str, dims))} = {voxels:.3g} voxels, "
                         f"over the budget of {limit:.3g}", path=path,
                         hint="if the file is genuine, raise it with --max-voxels N or "
                              "MEDVOL_MAX_VOXELS=N")
    nbytes = voxels * max(int(itemsize), 1)
    blimit = max_bytes()
    if nbytes > blimit:
        raise LimitError(f"{what} declares {nbytes / 2**20:.1f} MiB of voxel data, over the "
                         f"budget of {blimit / 2**20:.0f} MiB", path=path,
                         hint="if the file is genuine, raise MEDVOL_MAX_BYTES")
    return nbytes


def check_frames(n: int, *, path: object = None) -> None:
    """Refuse an absurd NumberOfFrames before looping over or allocating per frame."""
    limit = max_frames()
    if n > limit:
        raise LimitError(f"NumberOfFrames {n} is over the budget of {limit} frames", path=path,
                         hint="if the object is genuine, raise MEDVOL_MAX_FRAMES")


def check_resampled_slices(n_in: int, n_out: int, *, what: str, path: object = None) -> None:
    """Refuse a resampling that would invent far more slices than were acquired (a series with
    an absurd gap, e.g. slices at 0, 0.02 and 2000 mm)."""
    factor = max_slice_factor()
    if n_out > max(factor * n_in, 1024):
        raise LimitError(f"{what}: resampling {n_in} slices onto a regular grid would create "
                         f"{n_out} slices (more than {factor}× the acquired ones) — the slice "
                         "positions have absurd gaps (missing slices, or slices of different "
                         "acquisitions)", path=path,
                         hint="split or fix the series, or ingest with --resample never")
