"""Pixels: decode the stored values of one DICOM file."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..._warnings import quiet
from ...errors import DicomError, InputError

log = logging.getLogger("medvol.io.dicom")

# ----------------------------------------------------------------------------- pixels
def _ts_hint(name: str) -> str:
    return ("install the matching pydicom plugin (pylibjpeg, pylibjpeg-libjpeg, "
            "pylibjpeg-openjpeg, pyjpegls, or python-gdcm), or convert the files to an "
            "uncompressed transfer syntax, e.g. `gdcmconv --raw in.dcm out.dcm` or "
            "`dcmdjpeg in.dcm out.dcm`")


def decode_pixels(path: str | os.PathLike) -> np.ndarray:
    """Decode the stored pixel values of one DICOM file (see :func:`_decode_pixels`); any
    unexpected library error on a malformed file becomes one :class:`DicomError` line."""
    try:
        return _decode_pixels(path)
    except (DicomError, InputError, MemoryError):
        raise
    except Exception as e:
        raise DicomError(f"{path}: cannot decode the pixel data ({type(e).__name__}) — the file "
                         "is corrupt; re-export or remove it") from None


def _decode_pixels(path: str | os.PathLike) -> np.ndarray:
    """Decode the stored pixel values of one DICOM file.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    numpy.ndarray, shape ``(frames, rows, cols)``, native byte order, stored values (no
    rescale applied).

    Raises
    ------
    DicomError
        Truncated file, missing PixelData, or a transfer syntax medvol cannot decode.
    """
    from pydicom.uid import UID

    from . import values as V

    p = Path(path)
    try:
        with quiet():
            ds = V.dcmread(p, force=not _has_preamble(p))
    except Exception as e:
        raise DicomError(f"{p}: cannot read the file ({type(e).__name__}: {e}) — it is "
                         "truncated or corrupt; re-export or remove it") from None
    if not any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DicomError(f"{p}: no PixelData — the image has no pixels (truncated export or a "
                         "header-only object); re-export the series or remove the file")
    ts = getattr(ds, "file_meta", None) and ds.file_meta.get("TransferSyntaxUID")
    ts = UID(str(ts)) if ts else UID("1.2.840.10008.1.2")
    from .frames import check_image_header

    rows, cols, nfr = check_image_header(ds, str(p))
    if "PixelData" in ds and not ts.is_compressed:
        bits = V.integer(ds, "BitsAllocated", str(p), default=16) or 16
        spp = V.integer(ds, "SamplesPerPixel", str(p), default=1) or 1
        need = (rows * cols * nfr * spp * bits + 7) // 8
        have = len(ds.PixelData or b"")
        if have < need:
            raise DicomError(f"{p}: pixel data are truncated ({have} of {need} bytes for "
                             f"{rows}×{cols}×{nfr}) — re-export or remove the file")
    if ts.is_compressed:
        from pydicom.pixels import get_decoder

        name = ts.name if ts.is_transfer_syntax else "unknown"
        try:
            dec = get_decoder(ts)
            ok = dec.is_available
        except NotImplementedError:
            ok = False
        if not ok:
            raise DicomError(f"{p}: pixel data use transfer syntax {ts} ({name}) which medvol "
                             f"cannot decode — {_ts_hint(name)}")
    try:
        with quiet():
            arr = ds.pixel_array
    except Exception as e:
        if ts.is_compressed:
            raise DicomError(f"{p}: could not decode {ts.name} pixel data ({type(e).__name__}: "
                             f"{e}) — the data may be truncated or corrupt; {_ts_hint(ts.name)}"
                             ) from None
        raise DicomError(f"{p}: could not decode pixel data ({type(e).__name__}: {e}) — "
                         "the file is truncated or corrupt; re-export or remove it") from None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape != (nfr, rows, cols):
        raise DicomError(f"{p}: decoded pixel array has shape {arr.shape}, expected "
                         f"({nfr}, {rows}, {cols}) — colour or malformed data cannot be a volume")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _has_preamble(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False




# ----------------------------------------------------------------------------- deflate cap
class _CappedZlib:
    """Stand-in for the ``zlib`` module inside ``pydicom.filereader``.

    pydicom inflates a Deflated Explicit VR Little Endian dataset with one unbounded
    ``zlib.decompress`` (a 1.6 MB file can expand to gigabytes before any check). This shim
    streams the inflation and stops at ``min(MEDVOL_MAX_BYTES, 200 × compressed size + 16 MiB)``
    — real deflated DICOM compresses < 20×. Everything else is the real ``zlib``.
    """

    def __init__(self):
        import zlib

        self._zlib = zlib

    def __getattr__(self, name):
        return getattr(self._zlib, name)

    def decompress(self, data, wbits=15, bufsize=16384):
        from ..budget import max_bytes

        cap = min(max_bytes(), 200 * len(data) + (16 << 20))
        d = self._zlib.decompressobj(wbits)
        out = d.decompress(data, cap + 1)
        if len(out) > cap:
            raise DicomError(f"deflated DICOM dataset inflates to more than {cap >> 20} MiB "
                             "(over 200× its compressed size) — the file is corrupt or crafted; "
                             "remove it")
        return out + d.flush() if not d.unconsumed_tail else out


def install_deflate_cap() -> None:
    """Route pydicom's dataset inflation through :class:`_CappedZlib` (idempotent)."""
    import pydicom.filereader as fr

    if not isinstance(getattr(fr, "zlib", None), _CappedZlib):
        fr.zlib = _CappedZlib()
