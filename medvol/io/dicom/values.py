"""Header values, validated: every number medvol takes from a DICOM header is finite and in
range, or one :class:`~medvol.errors.DicomError` line names the file and the tag.

pydicom parses DS/IS values lazily and may raise ``ValueError``/``OverflowError`` (or return
``inf``/``nan``) on access; these helpers catch all of that.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ...errors import DicomError

__all__ = ["number", "integer", "floats", "rescale", "RANGES"]

#: (low, high) accepted for each tag (inclusive); physical sizes in mm
RANGES = {
    "PixelSpacing": (1e-4, 1e4),
    "SliceThickness": (0.0, 1e4),
    "SpacingBetweenSlices": (-1e4, 1e4),
    "ImagePositionPatient": (-1e6, 1e6),
    "ImageOrientationPatient": (-1.0001, 1.0001),
    "RescaleSlope": (-1e6, 1e6),
    "RescaleIntercept": (-1e7, 1e7),
    "NumberOfFrames": (1, 2**31 - 1),
    "SeriesNumber": (-(2**31), 2**31 - 1),
    "InstanceNumber": (-(2**31), 2**31 - 1),
    "Rows": (1, 65535),
    "Columns": (1, 65535),
    "SamplesPerPixel": (1, 4),
    "BitsAllocated": (1, 64),
}


def _get(src: Any, keyword: str, where: str):
    try:
        el = src.get(keyword) if src is not None else None
    except Exception as e:  # pydicom raises while converting a malformed value
        raise DicomError(f"{where}: {keyword} cannot be parsed ({type(e).__name__}) — the "
                         "header is corrupt; re-export or remove the file") from None
    return el


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def number(src: Any, keyword: str, where: str, *, default: float | None = None,
           positive: bool = False) -> float | None:
    """A finite float within :data:`RANGES` (``default`` when absent or empty)."""
    v = _get(src, keyword, where)
    if v is None or (isinstance(v, (str, bytes)) and not str(v).strip()):
        return default
    if isinstance(v, (list, tuple)) or hasattr(v, "__len__") and not isinstance(v, (str, bytes)):
        try:
            v = v[0] if len(v) else None
        except Exception:
            v = None
        if v is None:
            return default
    try:
        x = float(v)
    except (TypeError, ValueError, OverflowError):
        raise DicomError(f"{where}: {keyword} is not a number ({_show(v)}) — the header is "
                         "corrupt; re-export or remove the file") from None
    lo, hi = RANGES.get(keyword, (-math.inf, math.inf))
    if not math.isfinite(x) or x < lo or x > hi or (positive and x <= 0):
        rng = f"> 0 and ≤ {hi:g}" if positive else f"in [{lo:g}, {hi:g}]"
        raise DicomError(f"{where}: {keyword} = {_show(v)} is not a finite value {rng} — the "
                         "header is corrupt; re-export or remove the file")
    return x


def integer(src: Any, keyword: str, where: str, *, default: int | None = None) -> int | None:
    """An integer within :data:`RANGES` (``default`` when absent or empty)."""
    x = number(src, keyword, where, default=None)
    if x is None:
        return default
    if x != int(x):
        raise DicomError(f"{where}: {keyword} = {x!r} is not an integer — the header is "
                         "corrupt; re-export or remove the file")
    return int(x)


def floats(src: Any, keyword: str, n: int, where: str) -> np.ndarray:
    """Exactly ``n`` finite numbers within :data:`RANGES`."""
    v = _get(src, keyword, where)
    try:
        a = np.array([float(x) for x in v], dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise DicomError(f"{where}: {keyword} is not numeric ({_show(v)}) — the header is "
                         "corrupt; re-export or remove the file") from None
    lo, hi = RANGES.get(keyword, (-math.inf, math.inf))
    if a.shape != (n,) or not np.all(np.isfinite(a)) or np.any(a < lo) or np.any(a > hi):
        raise DicomError(f"{where}: {keyword} must hold {n} finite numbers in [{lo:g}, {hi:g}],"
                         f" got {_show(v)} — the header is corrupt; re-export or remove the file")
    return a


def rescale(src: Any, where: str) -> tuple[float, float, bool]:
    """(slope, intercept, present): finite, slope ≠ 0, within :data:`RANGES`."""
    if src is None:
        return 1.0, 0.0, False
    has = False
    try:
        has = "RescaleSlope" in src or "RescaleIntercept" in src
    except Exception:
        has = False
    if not has:
        return 1.0, 0.0, False
    slope = number(src, "RescaleSlope", where, default=1.0)
    inter = number(src, "RescaleIntercept", where, default=0.0)
    if slope == 0:
        raise DicomError(f"{where}: RescaleSlope is 0 — every value would be the intercept; "
                         "the header is corrupt; re-export or remove the file")
    return float(slope), float(inter), True


class _CappedReader:
    """A binary file whose ``read(n)`` never asks for more than the file still holds.

    pydicom reads an element value with ``fp.read(length)``; a corrupt length of 0xFFFFFFFF
    makes CPython allocate a 4 GiB buffer before finding the file short (a MemoryError under an
    address-space limit). Capping ``n`` at the remaining size gives the same bytes."""

    def __init__(self, path):
        from .._common import open_regular

        self._fh = open_regular(path)
        self._size = os.fstat(self._fh.fileno()).st_size
        self.name = str(path)

    def read(self, n: int = -1) -> bytes:
        if n is not None and n > 0:
            n = max(0, min(n, self._size - self._fh.tell()))
            if n == 0:
                return b""
        return self._fh.read(n)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


def dcmread(path, **kwargs):
    """``pydicom.dcmread`` through :class:`_CappedReader` (regular files only)."""
    import pydicom

    with _CappedReader(path) as fh:
        return pydicom.dcmread(fh, **kwargs)
