"""Frames: one validated record per slice (classic) or frame (enhanced multi-frame)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import DicomError, InputError
from . import values as V
from .acquisition import acquisition_params
from .meta import safe_token
from .scan import SeriesGroup

log = logging.getLogger("medvol.io.dicom")

_IN_STACK_POS = 0x00209057
_IPP_TAG = 0x00200032


@dataclass
class _Frame:
    path: Path
    index: int | None  # frame number inside a multi-frame object (0-based), None for classic
    ipp: np.ndarray
    iop: np.ndarray
    spacing: tuple[float, float]  # DICOM order: (row spacing, column spacing)
    slope: float
    intercept: float
    rescaled: bool
    thickness: float | None
    rows: int
    cols: int

    def name(self) -> str:
        return str(self.path) if self.index is None else f"{self.path} (frame {self.index + 1})"


# ----------------------------------------------------------------------------- frames
def _floats(v, n: int, what: str, where: str) -> np.ndarray:
    """``n`` finite numbers from an already fetched value (see :func:`values.floats`)."""
    return V.floats({what: v}, what, n, where)


def _rescale(src, where: str = "") -> tuple[float, float, bool]:
    return V.rescale(src, where)


def _thickness(src, where: str) -> float | None:
    th = V.number(src, "SpacingBetweenSlices", where)
    if th is None or th == 0:
        th = V.number(src, "SliceThickness", where)
    return None if th is None else abs(th)


def check_image_header(ds, where: str) -> tuple[int, int, int]:
    """Validate the image-size tags of one header: (rows, cols, frames). Frames are checked
    against the budget and, for uncompressed data, against the file's size (a 2 KB file cannot
    hold two million frames) before anything loops over or allocates per frame."""
    from ..budget import check_frames, check_volume

    rows = V.integer(ds, "Rows", where)
    cols = V.integer(ds, "Columns", where)
    if rows is None or cols is None:
        raise DicomError(f"{where}: no Rows/Columns — not an image")
    nfr = V.integer(ds, "NumberOfFrames", where, default=1) or 1
    if nfr < 1:
        raise DicomError(f"{where}: NumberOfFrames = {nfr} must be at least 1")
    check_frames(nfr, path=where)
    spp = V.integer(ds, "SamplesPerPixel", where, default=1) or 1
    bits = V.integer(ds, "BitsAllocated", where, default=16) or 16
    check_volume((nfr, rows, cols), max(bits // 8, 1) * spp, what="DICOM pixel data",
                 path=where)
    return rows, cols, nfr


def _series_number(ds, where: str) -> None:
    V.integer(ds, "SeriesNumber", where)


def _classic_frames(group: SeriesGroup) -> list[_Frame]:
    frames = []
    for f, ds in zip(group.files, group.headers):
        where = str(f)
        try:
            frames.append(_classic_frame(f, ds, where))
        except (InputError, MemoryError):
            raise
        except Exception as e:  # pydicom conversion errors on malformed values
            raise DicomError(f"{where}: invalid header ({type(e).__name__}) — the file is "
                             "corrupt; re-export or remove it") from None
    return frames


def _classic_frame(f: Path, ds, where: str) -> _Frame:
    rows, cols, nfr = check_image_header(ds, where)
    if nfr > 1:
        raise DicomError(f"{where}: multi-frame object ({nfr} frames) without functional "
                         "groups (e.g. cine/NM/dose) is not a supported volume layout — "
                         "convert it with dcm2niix or remove it from the folder")
    if (V.integer(ds, "SamplesPerPixel", where, default=1) or 1) != 1:
        raise DicomError(f"{where}: colour image (SamplesPerPixel="
                         f"{ds.get('SamplesPerPixel')}) is not a scalar volume slice — "
                         "remove it from the folder")
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if tag not in ds or ds[tag].value in (None, ""):
            raise DicomError(f"{where}: no {tag} — a projection image or secondary "
                             "capture cannot be placed in 3D; remove it from the folder")
    _series_number(ds, where)
    slope, inter, rescaled = _rescale(ds, where)
    return _Frame(
        path=f, index=None,
        ipp=V.floats(ds, "ImagePositionPatient", 3, where),
        iop=V.floats(ds, "ImageOrientationPatient", 6, where),
        spacing=tuple(_pixel_spacing(ds, where)),
        slope=slope, intercept=inter, rescaled=rescaled,
        thickness=_thickness(ds, where), rows=rows, cols=cols)


def _pixel_spacing(src, where: str) -> np.ndarray:
    sp = V.floats(src, "PixelSpacing", 2, where)
    return sp


def _fg_item(frame_ds, shared_ds, seq: str):
    for src in (frame_ds, shared_ds):
        if src is not None and seq in src and len(src[seq].value):
            return src[seq].value[0]
    return None


def _frame_type(frame_ds, shared_ds) -> tuple:
    for src in (frame_ds, shared_ds):
        if src is None:
            continue
        for el in src:
            if el.keyword.endswith("FrameTypeSequence") and len(el.value):
                return tuple(str(x) for x in (el.value[0].get("FrameType") or ()))
    return ()


def _enhanced_stacks(group: SeriesGroup) -> list[tuple[dict, list[_Frame]]]:
    """Split one enhanced multi-frame object into stacks of frames."""
    f, ds = group.files[0], group.headers[0]
    where = str(f)
    try:
        return _enhanced_stacks_checked(f, ds, where)
    except (InputError, MemoryError):
        raise
    except Exception as e:  # pydicom conversion errors on malformed values
        raise DicomError(f"{where}: invalid header ({type(e).__name__}) — the file is corrupt; "
                         "re-export or remove it") from None


def _enhanced_stacks_checked(f: Path, ds, where: str) -> list[tuple[dict, list[_Frame]]]:
    rows, cols, nfr = check_image_header(ds, where)
    _series_number(ds, where)
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds \
        and len(ds.SharedFunctionalGroupsSequence) else None
    per = ds.get("PerFrameFunctionalGroupsSequence") or [None] * nfr
    if len(per) != nfr:
        raise DicomError(f"{where}: PerFrameFunctionalGroupsSequence has {len(per)} items for "
                         f"NumberOfFrames={nfr} — the object is inconsistent; re-export it")
    drop = set()
    for idx, item in enumerate(ds.get("DimensionIndexSequence") or []):
        if int(item.get("DimensionIndexPointer", 0) or 0) in (_IN_STACK_POS, _IPP_TAG):
            drop.add(idx)
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomError(f"{where}: colour multi-frame object is not a scalar volume — remove it")
    stacks: dict[tuple, list[_Frame]] = {}
    infos: dict[tuple, dict] = {}
    top_slope = _rescale(ds, where)
    for k in range(nfr):
        fr = per[k]
        fwhere = f"{where} (frame {k + 1})"
        pos = _fg_item(fr, shared, "PlanePositionSequence")
        ori = _fg_item(fr, shared, "PlaneOrientationSequence")
        pm = _fg_item(fr, shared, "PixelMeasuresSequence")
        if pos is None or "ImagePositionPatient" not in pos:
            raise DicomError(f"{fwhere}: no PlanePositionSequence/ImagePositionPatient — "
                             "the frame cannot be placed in 3D")
        if ori is None or "ImageOrientationPatient" not in ori:
            raise DicomError(f"{fwhere}: no PlaneOrientationSequence/ImageOrientationPatient")
        if pm is None or "PixelSpacing" not in pm:
            raise DicomError(f"{fwhere}: no PixelMeasuresSequence/PixelSpacing")
        pvt = _fg_item(fr, shared, "PixelValueTransformationSequence")
        slope, inter, rescaled = _rescale(pvt, fwhere) if pvt is not None else top_slope
        iop = V.floats(ori, "ImageOrientationPatient", 6, fwhere)
        fc = _fg_item(fr, shared, "FrameContentSequence")
        dvals = fc.get("DimensionIndexValues") if fc is not None else None
        if dvals is None:
            dims: tuple = ()
        else:
            seq = [dvals] if isinstance(dvals, int) else list(dvals)
            dims = tuple(int(v) for i, v in enumerate(seq) if i not in drop)
        ftype = _frame_type(fr, shared)
        stack_id = str(fc.get("StackID", "")) if fc is not None else ""
        tpi = fc.get("TemporalPositionIndex") if fc is not None else None
        key = (ftype, dims, stack_id, tpi, tuple(np.round(iop, 3)))
        stacks.setdefault(key, []).append(_Frame(
            path=f, index=k,
            ipp=V.floats(pos, "ImagePositionPatient", 3, fwhere),
            iop=iop, spacing=tuple(_pixel_spacing(pm, fwhere)),
            slope=slope, intercept=inter, rescaled=rescaled,
            thickness=_thickness(pm, fwhere), rows=rows, cols=cols))
        if key not in infos:
            info = {"n_frames_in_object": nfr}
            if ftype:
                info["frame_type"] = safe_token("\\".join(ftype), cap=64)
            if tpi is not None:
                info["temporal_position_index"] = int(tpi)
            if stack_id:
                info["stack_id"] = safe_token(stack_id, cap=16, allow_space=False)
            # kind, units and BIDS-style parameters of this stack (popped by the builder)
            info["acquisition"] = acquisition_params(ds, fr, shared)
            infos[key] = info
    return [(infos[k], v) for k, v in stacks.items()]


