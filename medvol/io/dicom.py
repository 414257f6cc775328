"""DICOM ingest: scan a folder, group series, validate geometry, decode, and build Volumes.

Policy (each decision is recorded in ``Volume.meta["ingest"]`` and logged on the
``medvol.io.dicom`` logger; patient identifiers are never logged or stored):

* **Scan**: the folder tree is walked recursively; files with or without ``.dcm`` are accepted,
  non-DICOM files are skipped quietly, DICOMDIR files are ignored (they index images, they are
  not images), and objects without Rows/Columns (SR, RT plans, …) are skipped. Only headers are
  read at this stage (``stop_before_pixels=True``).
* **Grouping**: by SeriesInstanceUID; without it, by (StudyInstanceUID, SeriesNumber, Modality,
  rounded ImageOrientationPatient, Rows, Columns), recorded as a decision. Each enhanced
  (multi-frame) object is its own group and is split into one Volume per stack: frames are
  grouped by frame type, DimensionIndexValues (except the in-stack position), StackID,
  TemporalPositionIndex and orientation (e.g. magnitude + field map, echoes, time points).
* **Mixed geometry inside one series** (different Rows/Columns, ImageOrientationPatient or
  PixelSpacing) is refused with :class:`~medvol.errors.DicomError` naming a file and both values.
* **Sorting**: by the projection of ImagePositionPatient on the slice normal (row × column
  cosine) — never InstanceNumber or file names.
* **Duplicates**: two slices at the same position (within 0.01 mm along the normal) are an
  error naming both files, unless they are exact duplicates (same in-plane position, same
  rescale, identical pixels), in which case one is dropped with a warning.
* **Gantry tilt / uneven spacing** (shear detected from IPP vs IOP, never from tag
  (0018,1120); gaps differing by > max(0.01 mm, 1 %)): with ``resample="auto"`` the stack is
  resampled onto an orthogonal grid whose slice step is the smallest gap along the normal;
  ``"never"`` raises, ``"always"`` resamples even regular stacks.
* **Values**: Rescale slope/intercept are applied (per frame for enhanced objects). Integer
  results that fit stay ``int16`` (CT HU); otherwise ``float32``. Without a rescale, stored
  values and dtype are kept. Resampled data are ``float32``.
* **Metadata**: only whitelisted technical fields (see :func:`medvol.io._dicom_meta.safe_meta`);
  SeriesDescription is not copied (free text).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import DicomError, InputError
from ..volume import Volume
from . import _dicom_geometry as geo
from ._dicom_meta import safe_meta, safe_token, uid_hash

__all__ = ["read_dicom_series", "scan_dicom", "load_series", "SeriesGroup", "DicomScan",
           "decode_pixels"]

log = logging.getLogger("medvol.io.dicom")

_DICOMDIR_SOP = "1.2.840.10008.1.3.10"
_IN_STACK_POS = 0x00209057
_IPP_TAG = 0x00200032
_RESAMPLE_CHOICES = ("auto", "never", "always")


# ----------------------------------------------------------------------------- data classes
@dataclass
class SeriesGroup:
    """Header-only description of one series (or one enhanced multi-frame object).

    Attributes
    ----------
    key : str
        Short, non-identifying key (hash) of the grouping.
    files : list of Path
        Files of this group.
    headers : list of pydicom.Dataset
        Their headers (no pixel data). Never print them: they hold patient identifiers.
    enhanced : bool
        True for an enhanced multi-frame object (one file, possibly several stacks).
    decisions : list of str
        Grouping decisions (e.g. fallback key used because SeriesInstanceUID was missing).
    """

    key: str
    files: list[Path]
    headers: list[Any] = field(repr=False)
    enhanced: bool = False
    decisions: list[str] = field(default_factory=list)

    @property
    def sort_key(self) -> tuple:
        """Order that does not depend on file names (series number, UID hash, instance)."""
        h = self.headers[0]
        try:
            sn = int(float(str(h.get("SeriesNumber", "")) or "nan"))
        except ValueError:
            sn = 10**9
        try:
            inst = int(float(str(h.get("InstanceNumber", "")) or 0))
        except ValueError:
            inst = 0
        return (sn, uid_hash(h.get("SeriesInstanceUID")) or self.key, inst,
                uid_hash(h.get("SOPInstanceUID")))


@dataclass
class DicomScan:
    """Result of :func:`scan_dicom`: series groups plus what was skipped and why."""

    root: Path
    groups: list[SeriesGroup]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    n_files: int = 0

    def __iter__(self) -> Iterator[SeriesGroup]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)


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


# ----------------------------------------------------------------------------- progress
@contextlib.contextmanager
def _progress(enabled: bool, description: str, total: int) -> Iterator[Callable[[], None]]:
    if not enabled or total <= 0:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as prog:
        task = prog.add_task(description, total=total)
        yield lambda: prog.advance(task)


# ----------------------------------------------------------------------------- scanning
def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    # Preamble-less datasets usually start with a group 0002 or 0008 tag (either endianness).
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _read_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if "SOPClassUID" not in ds and "Rows" not in ds:
                raise
            return ds


def scan_dicom(path: str | os.PathLike, *, progress: bool = False,
               errors: str = "raise") -> DicomScan:
    """Find DICOM image files under ``path`` and group them into series (headers only).

    Parameters
    ----------
    path : str or Path
        A folder (searched recursively) or a single DICOM file.
    progress : bool
        Show a rich progress bar on a terminal.
    errors : {"raise", "skip"}
        What to do with a DICOM file whose header cannot be read (truncated/corrupt): raise
        :class:`DicomError`, or skip it and record it in :attr:`DicomScan.skipped`.

    Returns
    -------
    DicomScan
        ``groups`` sorted by SeriesNumber then UID hash (independent of file names).

    Raises
    ------
    InputError
        ``path`` does not exist.
    DicomError
        The folder is empty or holds no DICOM image, or a DICOM file is unreadable.
    """
    from pydicom.errors import InvalidDicomError

    root = Path(path)
    if not root.exists():
        raise InputError("path does not exist", path=root,
                         hint="pass the folder that holds the DICOM files")
    if root.is_file():
        files = [root]
    else:
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            files.extend(Path(dirpath) / f for f in sorted(filenames))
        if not files:
            raise DicomError("folder is empty", path=root,
                             hint="point to the folder that holds the DICOM series")
    skipped: list[tuple[Path, str]] = []
    images: list[tuple[Path, Any]] = []
    with _progress(progress, "Scanning DICOM headers", len(files)) as advance:
        for f in files:
            advance()
            if f.name.upper() == "DICOMDIR":
                skipped.append((f, "DICOMDIR index (not an image)"))
                continue
            if not _looks_like_dicom(f):
                skipped.append((f, "not DICOM"))
                continue
            try:
                ds = _read_header(f)
            except InvalidDicomError:
                skipped.append((f, "not DICOM"))
                continue
            except Exception as e:  # truncated or corrupt header
                msg = (f"cannot read DICOM header ({type(e).__name__}: {e}) — the file is "
                       "truncated or corrupt; re-export or remove it")
                if errors == "skip":
                    log.warning("%s: %s; skipped", f.name, msg)
                    skipped.append((f, "unreadable header"))
                    continue
                raise DicomError(msg, path=f) from None
            sop = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "")
                      or ds.get("SOPClassUID", ""))
            if sop == _DICOMDIR_SOP or "DirectoryRecordSequence" in ds:
                skipped.append((f, "DICOMDIR index (not an image)"))
                continue
            if "Rows" not in ds or "Columns" not in ds:
                if _is_image_sop(sop):
                    # pydicom stops silently at EOF: an image object without Rows/Columns is
                    # almost always a file cut short during copy/export.
                    msg = ("image object without Rows/Columns — the file is truncated or "
                           "corrupt; re-export or remove it")
                    if errors == "skip":
                        log.warning("%s: %s; skipped", f.name, msg)
                        skipped.append((f, "truncated image header"))
                        continue
                    raise DicomError(msg, path=f)
                skipped.append((f, "DICOM object without an image (no Rows/Columns)"))
                continue
            images.append((f, ds))
    if not images:
        raise DicomError(f"no DICOM image files found among {len(files)} file(s)", path=root,
                         hint="check the folder; DICOMDIR, reports and non-DICOM files are "
                              "ignored")
    groups = _group(images)
    return DicomScan(root=root, groups=groups, skipped=skipped, n_files=len(files))


def _is_image_sop(sop: str) -> bool:
    from pydicom.uid import UID

    try:
        return bool(sop) and "Image Storage" in UID(sop).name
    except Exception:  # unknown/private UID
        return False


def _fallback_key(ds) -> tuple:
    iop = tuple(round(float(x), 3) for x in (ds.get("ImageOrientationPatient") or []))
    return ("nouid", str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesNumber", "")),
            str(ds.get("Modality", "")), iop, int(ds.Rows), int(ds.Columns))


def _is_enhanced(ds) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or (
        "SharedFunctionalGroupsSequence" in ds and int(ds.get("NumberOfFrames", 1) or 1) > 1)


def _group(images: list[tuple[Path, Any]]) -> list[SeriesGroup]:
    buckets: dict[tuple, SeriesGroup] = {}
    for f, ds in images:
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        decisions = []
        if uid:
            key = ("uid", uid)
        else:
            key = _fallback_key(ds)
            decisions.append("SeriesInstanceUID missing: grouped by (StudyInstanceUID, "
                             "SeriesNumber, Modality, ImageOrientationPatient, Rows, Columns)")
        enhanced = _is_enhanced(ds)
        if enhanced:
            key = key + ("instance", str(ds.get("SOPInstanceUID", f)))
        khash = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
        g = buckets.get(key)
        if g is None:
            g = buckets[key] = SeriesGroup(key=khash, files=[], headers=[], enhanced=enhanced,
                                           decisions=decisions)
        g.files.append(f)
        g.headers.append(ds)
    return sorted(buckets.values(), key=lambda g: g.sort_key)


# ----------------------------------------------------------------------------- frames
def _floats(v, n: int, what: str, where: str) -> np.ndarray:
    try:
        a = np.array([float(x) for x in v], dtype=float)
    except (TypeError, ValueError):
        raise DicomError(f"{where}: {what} is not numeric ({v!r})") from None
    if a.shape != (n,) or not np.all(np.isfinite(a)):
        raise DicomError(f"{where}: {what} must hold {n} finite numbers, got {v!r}")
    return a


def _rescale(src) -> tuple[float, float, bool]:
    if src is not None and ("RescaleSlope" in src or "RescaleIntercept" in src):
        slope = float(src.get("RescaleSlope", 1) or 1)
        inter = float(src.get("RescaleIntercept", 0) or 0)
        return slope, inter, True
    return 1.0, 0.0, False


def _classic_frames(group: SeriesGroup) -> list[_Frame]:
    frames = []
    for f, ds in zip(group.files, group.headers):
        where = str(f)
        nfr = int(ds.get("NumberOfFrames", 1) or 1)
        if nfr > 1:
            raise DicomError(f"{where}: multi-frame object ({nfr} frames) without functional "
                             "groups (e.g. cine/NM/dose) is not a supported volume layout — "
                             "convert it with dcm2niix or remove it from the folder")
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise DicomError(f"{where}: colour image (SamplesPerPixel="
                             f"{ds.get('SamplesPerPixel')}) is not a scalar volume slice — "
                             "remove it from the folder")
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if tag not in ds or ds[tag].value in (None, ""):
                raise DicomError(f"{where}: no {tag} — a projection image or secondary "
                                 "capture cannot be placed in 3D; remove it from the folder")
        slope, inter, rescaled = _rescale(ds)
        th = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
        frames.append(_Frame(
            path=f, index=None,
            ipp=_floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", where),
            iop=_floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", where),
            spacing=tuple(_floats(ds.PixelSpacing, 2, "PixelSpacing", where)),
            slope=slope, intercept=inter, rescaled=rescaled,
            thickness=float(th) if th not in (None, "") else None,
            rows=int(ds.Rows), cols=int(ds.Columns)))
    return frames


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
    nfr = int(ds.get("NumberOfFrames", 1) or 1)
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
    top_slope = _rescale(ds)
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
        slope, inter, rescaled = _rescale(pvt) if pvt is not None else top_slope
        th = pm.get("SpacingBetweenSlices") or pm.get("SliceThickness")
        iop = _floats(ori.ImageOrientationPatient, 6, "ImageOrientationPatient", fwhere)
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
            ipp=_floats(pos.ImagePositionPatient, 3, "ImagePositionPatient", fwhere),
            iop=iop, spacing=tuple(_floats(pm.PixelSpacing, 2, "PixelSpacing", fwhere)),
            slope=slope, intercept=inter, rescaled=rescaled,
            thickness=float(th) if th not in (None, "") else None,
            rows=int(ds.Rows), cols=int(ds.Columns)))
        if key not in infos:
            info = {"n_frames_in_object": nfr}
            if ftype:
                info["frame_type"] = safe_token("\\".join(ftype), cap=64)
            if tpi is not None:
                info["temporal_position_index"] = int(tpi)
            if stack_id:
                info["stack_id"] = safe_token(stack_id, cap=16, allow_space=False)
            infos[key] = info
    return [(infos[k], v) for k, v in stacks.items()]


# ----------------------------------------------------------------------------- pixels
def _ts_hint(name: str) -> str:
    return ("install the matching pydicom plugin (pylibjpeg, pylibjpeg-libjpeg, "
            "pylibjpeg-openjpeg, pyjpegls, or python-gdcm), or convert the files to an "
            "uncompressed transfer syntax, e.g. `gdcmconv --raw in.dcm out.dcm` or "
            "`dcmdjpeg in.dcm out.dcm`")


def decode_pixels(path: str | os.PathLike) -> np.ndarray:
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
    import pydicom
    from pydicom.uid import UID

    p = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(p, force=not _has_preamble(p))
    except Exception as e:
        raise DicomError(f"{p}: cannot read the file ({type(e).__name__}: {e}) — it is "
                         "truncated or corrupt; re-export or remove it") from None
    if not any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DicomError(f"{p}: no PixelData — the image has no pixels (truncated export or a "
                         "header-only object); re-export the series or remove the file")
    ts = getattr(ds, "file_meta", None) and ds.file_meta.get("TransferSyntaxUID")
    ts = UID(str(ts)) if ts else UID("1.2.840.10008.1.2")
    rows, cols = int(ds.Rows), int(ds.Columns)
    nfr = int(ds.get("NumberOfFrames", 1) or 1)
    if "PixelData" in ds and not ts.is_compressed:
        bits = int(ds.get("BitsAllocated", 16) or 16)
        need = (rows * cols * nfr * int(ds.get("SamplesPerPixel", 1) or 1) * bits + 7) // 8
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
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


# ----------------------------------------------------------------------------- building
def _check_consistent(frames: Sequence[_Frame]) -> None:
    ref = frames[0]
    for fr in frames[1:]:
        if (fr.rows, fr.cols) != (ref.rows, ref.cols):
            raise DicomError(
                f"{fr.name()}: mixed geometry in one series — Rows×Columns {fr.rows}×{fr.cols} "
                f"vs {ref.rows}×{ref.cols} in {ref.name()}; split the series into separate "
                "folders or remove the odd file")
        if np.max(np.abs(fr.iop - ref.iop)) > 1e-4:
            raise DicomError(
                f"{fr.name()}: mixed geometry in one series — ImageOrientationPatient "
                f"{np.round(fr.iop, 5).tolist()} vs {np.round(ref.iop, 5).tolist()} in "
                f"{ref.name()} (several stacks or a localizer in one series); split the series")
        if np.max(np.abs(np.subtract(fr.spacing, ref.spacing))) > 1e-4 * max(ref.spacing):
            raise DicomError(
                f"{fr.name()}: mixed geometry in one series — PixelSpacing {list(fr.spacing)} "
                f"vs {list(ref.spacing)} in {ref.name()}; split the series")


def _values_dtype(raw: np.ndarray, frames: Sequence[_Frame]) -> np.ndarray:
    """Apply per-frame rescale; keep int16 where exact, else float32."""
    if not any(f.rescaled and (f.slope != 1.0 or f.intercept != 0.0) for f in frames):
        return raw
    slopes = np.array([f.slope for f in frames])
    inters = np.array([f.intercept for f in frames])
    if np.all(slopes == np.round(slopes)) and np.all(inters == np.round(inters)) \
            and np.issubdtype(raw.dtype, np.integer):
        vals = raw.astype(np.int32) * slopes.astype(np.int32)[:, None, None] \
            + inters.astype(np.int32)[:, None, None]
        if vals.min() >= np.iinfo(np.int16).min and vals.max() <= np.iinfo(np.int16).max:
            return vals.astype(np.int16)
        return vals.astype(np.float32)
    return (raw.astype(np.float32) * slopes.astype(np.float32)[:, None, None]
            + inters.astype(np.float32)[:, None, None])


def _decode_frames(frames: Sequence[_Frame], advance: Callable[[], None]) -> np.ndarray:
    cache: dict[Path, np.ndarray] = {}
    out = None
    for n, fr in enumerate(frames):
        arr = cache.get(fr.path)
        if arr is None:
            arr = decode_pixels(fr.path)
            if arr.shape[0] > 1:
                cache[fr.path] = arr
            advance()
        img = arr[fr.index or 0]
        if out is None:
            out = np.empty((len(frames),) + img.shape, dtype=img.dtype)
        elif img.dtype != out.dtype:
            out = out.astype(np.result_type(out.dtype, img.dtype))
        out[n] = img
    return out


def _build_volumes(frames: list[_Frame], header, *, resample: str, fill_value: float | None,
                   advance: Callable[[], None], decisions: list[str],
                   extra: dict | None = None, group_key: str | None = None) -> Volume:
    _check_consistent(frames)
    ref = frames[0]
    try:
        r, c, n = geo.orientation(ref.iop)
    except ValueError as e:
        raise DicomError(f"{ref.name()}: {e} — the header is corrupt") from None
    si, sj = float(ref.spacing[1]), float(ref.spacing[0])
    if si <= 0 or sj <= 0:
        raise DicomError(f"{ref.name()}: PixelSpacing {list(ref.spacing)} must be positive")
    w = np.array([f.ipp @ n for f in frames])
    order = np.argsort(w, kind="stable")
    frames = [frames[i] for i in order]
    w = w[order]
    raw = _decode_frames(frames, advance)
    values = _values_dtype(raw, frames)
    warn: list[str] = []
    msgs: list[str] = []

    # duplicates (same position along the normal)
    keep = np.ones(len(frames), dtype=bool)
    for a in range(len(frames) - 1):
        b = a + 1
        if w[b] - w[a] >= geo.DUPLICATE_TOL_MM:
            continue
        fa = next(i for i in range(b - 1, -1, -1) if keep[i])
        same = (np.allclose(frames[fa].ipp, frames[b].ipp, atol=geo.DUPLICATE_TOL_MM)
                and np.array_equal(values[fa], values[b]))
        if not same:
            raise DicomError(
                f"{frames[fa].name()} and {frames[b].name()}: two slices at the same position "
                f"({w[b]:.3f} mm along the slice normal) with different pixel data — the series "
                "mixes acquisitions (echoes, phases, repeats); split them into separate folders "
                "or remove one")
        keep[b] = False
        warn.append(f"exact duplicate slice dropped: {frames[b].path.name}"
                    f"{'' if frames[b].index is None else f' frame {frames[b].index + 1}'} "
                    f"repeats {frames[fa].path.name}")
    if not keep.all():
        frames = [f for f, k in zip(frames, keep) if k]
        values = values[keep]
        w = w[keep]
    positions = np.stack([f.ipp for f in frames])
    an = geo.analyse_stack(positions, r, c, n, (si, sj))
    meta = safe_meta(header, series_key_hash=group_key)
    if ref.rescaled and meta["modality"] == "CT" and meta.get("rescale_type", "HU") == "HU":
        meta["units"] = "HU"
    meta["tilt_deg"] = round(an.tilt_deg, 4)
    meta["max_spacing_deviation_mm"] = round(an.gap_max_deviation_mm, 4)
    ingest: dict[str, Any] = {
        "n_slices_in": int(len(order)),
        "sort": "ImagePositionPatient projected on the slice normal (row x column cosine)",
        "slice_normal_lps": n.round(6).tolist(),
        "tilt_deg": round(an.tilt_deg, 4),
        "max_inplane_shift_mm": round(an.max_shift_mm, 4),
        "gaps_mm": np.round(an.gaps, 4).tolist(),
        "ipp_steps_mm": np.round(an.ipp_steps, 4).tolist(),
        "gap_histogram_mm": an.gap_histogram(),
        "gap_max_deviation_mm": round(an.gap_max_deviation_mm, 4),
        "uniform": an.uniform,
        "sheared": an.sheared,
        "resample_policy": resample,
    }
    if extra:
        ingest.update(extra)
    if len(frames) >= 2:
        raw_aff = np.eye(4)
        raw_aff[:3, 0], raw_aff[:3, 1] = r * si, c * sj
        raw_aff[:3, 2] = (positions[-1] - positions[0]) / (len(frames) - 1)
        raw_aff[:3, 3] = positions[0]
        ingest["raw_affine_lps"] = raw_aff.round(6).tolist()

    need = an.sheared or not an.uniform
    if need and resample == "never":
        what = []
        if an.sheared:
            what.append(f"gantry tilt / shear of {an.tilt_deg:.2f}° (slices shifted in-plane "
                        f"by up to {an.max_shift_mm:.2f} mm)")
        if not an.uniform:
            what.append(f"non-uniform slice spacing ({an.gaps.min():.3f}–{an.gaps.max():.3f} mm)")
        raise DicomError(f"{ref.path.parent}: series {meta['label']} has " + " and ".join(what)
                         + " — it cannot be stored on a regular grid without resampling; use "
                         "resample='auto' (CLI: --resample auto) to resample it")
    do_resample = resample == "always" or need
    units_hu = meta.get("units") == "HU"
    if len(frames) == 1:
        th = ref.thickness
        if th is None or th <= 0:
            raise DicomError(f"{ref.name()}: single-slice series without SliceThickness or "
                             "SpacingBetweenSlices — the slice spacing cannot be derived; add "
                             "the other slices of the series")
        warn.append(f"single-slice series: slice spacing taken from SliceThickness/"
                    f"SpacingBetweenSlices = {th:g} mm")
        spacing_k = th
    elif do_resample:
        spacing_k = float(an.gaps.min())
    else:
        spacing_k = float((an.w[-1] - an.w[0]) / (len(frames) - 1))

    origin = positions[0]
    if do_resample and len(frames) >= 2:
        if fill_value is None:
            fill = -1024.0 if units_hu else float(np.min(values))
        else:
            fill = float(fill_value)
        array, (i0, j0) = geo.resample_stack(values, an, (si, sj), spacing_k, fill)
        origin = positions[0] + i0 * si * r + j0 * sj * c
        ingest["fill_value"] = fill
        if an.sheared:
            m = (f"Gantry tilt {an.tilt_deg:.1f}° (from ImagePositionPatient/"
                 f"ImageOrientationPatient) corrected by resampling onto an orthogonal grid")
            msgs.append(m)
        if not an.uniform and an.gaps.max() > 2.5 * float(np.median(an.gaps)):
            warn.append(f"largest slice gap {an.gaps.max():.2f} mm is "
                        f"{an.gaps.max() / np.median(an.gaps):.1f}x the median gap "
                        f"({np.median(an.gaps):.2f} mm): slices may be missing and values in "
                        "that gap are interpolated")
        if not an.uniform:
            msgs.append(f"Non-uniform slice spacing ({an.gaps.min():.2f}–{an.gaps.max():.2f} mm "
                        f"along the slice normal) equalised to {spacing_k:.2f} mm")
        if not need:
            msgs.append(f"Resampled on request (resample='always') to {spacing_k:.3f} mm slices")
        msgs.append(f"Resampled {len(frames)} slices to {array.shape[0]} slices of "
                    f"{array.shape[1]}×{array.shape[2]} (spacing {si:.4g}×{sj:.4g}×"
                    f"{spacing_k:.4g} mm; linear interpolation; outside the acquired region "
                    f"filled with {fill:g})")
    else:
        array = values
    ingest.update({
        "resampled": bool(do_resample and len(frames) >= 2),
        "target_slice_spacing_mm": round(spacing_k, 6),
        "n_slices_out": int(array.shape[0]),
        "warnings": warn,
        "messages": msgs,
        "decisions": list(decisions),
    })
    meta["ingest"] = ingest
    level = logging.WARNING if (an.sheared or not an.uniform) else logging.INFO
    for m in msgs:
        log.log(level, "%s: %s", meta["label"], m)
    for m in warn:
        log.warning("%s: %s", meta["label"], m)
    return Volume(array, spacing=(si, sj, spacing_k), origin=origin,
                  direction=np.stack([r, c, n], axis=1), meta=meta)


def load_series(group: SeriesGroup, *, resample: str = "auto", fill_value: float | None = None,
                progress: bool = False) -> list[Volume]:
    """Decode one :class:`SeriesGroup` into Volumes (one per stack; classic series give one).

    Parameters
    ----------
    group : SeriesGroup
        From :func:`scan_dicom`.
    resample : {"auto", "never", "always"}
        Gantry-tilted or unevenly spaced stacks: resample onto an orthogonal, uniform grid
        (``"auto"``), refuse with :class:`DicomError` (``"never"``), or resample every stack
        (``"always"``).
    fill_value : float, optional
        Value outside the acquired region after resampling; default −1024 for CT in HU,
        else the data minimum.
    progress : bool
        Show a progress bar while decoding.

    Returns
    -------
    list of Volume
        Arrays ``(z, y, x)`` = (slices, rows, columns); geometry in LPS; ``meta["ingest"]`` holds
        the decisions (tilt, gaps, resampling, warnings).
    """
    if resample not in _RESAMPLE_CHOICES:
        raise InputError(f"resample must be one of {_RESAMPLE_CHOICES}, got {resample!r}")
    header = group.headers[0]
    if group.enhanced:
        stacks = _enhanced_stacks(group)
    else:
        stacks = [({}, _classic_frames(group))]
    n_decode = len(group.files)
    vols = []
    with _progress(progress, "Reading pixels", n_decode) as advance:
        for info, frames in stacks:
            vols.append(_build_volumes(frames, header, resample=resample, fill_value=fill_value,
                                       advance=advance, decisions=group.decisions, extra=info,
                                       group_key=group.key))
    if len(vols) > 1:
        for k, v in enumerate(vols):
            v.meta["ingest"]["stack_index"] = k + 1
    return vols


def _unique_labels(vols: list[Volume]) -> list[Volume]:
    from dataclasses import replace

    counts: dict[str, int] = {}
    for v in vols:
        counts[v.meta["label"]] = counts.get(v.meta["label"], 0) + 1
    seen: dict[str, int] = {}
    out = []
    for v in vols:
        lab = v.meta["label"]
        if counts[lab] > 1:
            seen[lab] = seen.get(lab, 0) + 1
            out.append(replace(v, meta={**v.meta, "label": f"{lab}_v{seen[lab]:02d}"}))
        else:
            out.append(v)
    return out


def read_dicom_series(path: str | os.PathLike, *, resample: str = "auto",
                      fill_value: float | None = None, progress: bool = False,
                      errors: str = "raise") -> list[Volume]:
    """Read every DICOM image series under ``path`` into Volumes.

    Parameters
    ----------
    path : str or Path
        Folder (searched recursively; any file names, DICOMDIR ignored) or a single file.
    resample : {"auto", "never", "always"}
        Policy for gantry-tilted or unevenly spaced stacks (see :func:`load_series`).
    fill_value : float, optional
        Value outside the acquired region after resampling (default −1024 for CT, else min).
    progress : bool
        Show rich progress bars on a terminal.
    errors : {"raise", "skip"}
        ``"skip"`` logs and skips series (and unreadable files) that cannot be ingested instead
        of raising; the default raises on the first problem.

    Returns
    -------
    list of Volume
        One per series (enhanced multi-frame objects: one per stack), ordered by SeriesNumber.
        ``meta["label"]`` (e.g. ``s003_CT_1a2b3c4d``) is unique and safe as a folder name.

    Raises
    ------
    InputError, DicomError
        One-line messages naming the file and what to do.

    Examples
    --------
    >>> vols = read_dicom_series("study/")                     # doctest: +SKIP
    >>> vols[0].meta["ingest"]["tilt_deg"]                      # doctest: +SKIP
    18.5
    """
    if resample not in _RESAMPLE_CHOICES:
        raise InputError(f"resample must be one of {_RESAMPLE_CHOICES}, got {resample!r}")
    if errors not in ("raise", "skip"):
        raise InputError(f"errors must be 'raise' or 'skip', got {errors!r}")
    scan = scan_dicom(path, progress=progress, errors=errors)
    vols: list[Volume] = []
    for g in scan:
        try:
            vols.extend(load_series(g, resample=resample, fill_value=fill_value,
                                    progress=progress))
        except DicomError as e:
            if errors == "raise":
                raise
            log.warning("series skipped: %s", e)
    if not vols:
        raise DicomError("no series could be ingested", path=path,
                         hint="see the warnings above, or run with errors='raise'")
    return _unique_labels(vols)
