"""Scanning: walk the input, read headers only, group files into series."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator


from ..._warnings import quiet
from ...errors import DicomError, InputError
from .meta import uid_hash

log = logging.getLogger("medvol.io.dicom")

_DICOMDIR_SOP = "1.2.840.10008.1.3.10"


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
        except (ValueError, OverflowError, TypeError):
            sn = 10**9
        try:
            inst = int(float(str(h.get("InstanceNumber", "")) or 0))
        except (ValueError, OverflowError, TypeError):
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
    """Cheap magic check. Raises OSError when the file cannot be read (the caller decides:
    an unreadable file is never silently "not DICOM")."""
    from .._common import open_regular

    with open_regular(path) as f:
        head = f.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    # Preamble-less datasets usually start with a group 0002 or 0008 tag (either endianness).
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _read_header(path: Path):
    from pydicom.errors import InvalidDicomError

    from .values import dcmread

    with quiet():
        try:
            return dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            ds = dcmread(path, stop_before_pixels=True, force=True)
            if "SOPClassUID" not in ds and "Rows" not in ds:
                raise
            return ds


def _walk(root: Path, *, skip_unreadable: bool, follow_symlinks: bool,
          skipped: list[tuple[Path, str]]) -> list[Path]:
    """Files under ``root`` (sorted walk). Policy:

    * an unreadable folder or file is an error naming it (``skip_unreadable``: skipped, logged
      and recorded in ``skipped`` as ``"unreadable …"``);
    * a symbolic link (file or folder) whose target lies outside ``root`` is skipped with a
      warning naming it, unless ``follow_symlinks``; symlinked folders inside ``root`` are not
      descended (their files are reached through the real path); FIFOs, sockets and devices are
      skipped with a warning.
    """
    import stat

    real_root = root.resolve()
    out: list[Path] = []

    def note(p: Path, why: str, *, unreadable: bool = False) -> None:
        if unreadable and not skip_unreadable:
            raise InputError(f"{why} — medvol will not ingest a study with missing files",
                             path=p, hint="fix the permissions, or pass --skip-unreadable to "
                                          "skip it (it is then named in the manifest)")
        log.warning("%s: %s; skipped", p, why)
        skipped.append((p, why if not unreadable else f"unreadable: {why}"))

    def onerror(e: OSError) -> None:
        note(Path(e.filename or root), f"cannot read the folder ({e.strerror})",
             unreadable=True)

    visited: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror,
                                                followlinks=follow_symlinks):
        here = Path(dirpath)
        if follow_symlinks:
            rp = here.resolve()
            if rp in visited:
                dirnames[:] = []
                continue
            visited.add(rp)
        dirnames.sort()
        keep = []
        for d in dirnames:
            dp = here / d
            if dp.is_symlink() and not follow_symlinks:
                note(dp, "symbolic link to a folder (not followed: see --follow-symlinks)")
                continue
            keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            fp = here / f
            try:
                st = fp.lstat()
                if stat.S_ISLNK(st.st_mode):
                    target = fp.resolve()
                    if not follow_symlinks and real_root != target \
                            and real_root not in target.parents:
                        note(fp, "symbolic link pointing outside the input folder (not "
                                 "followed: see --follow-symlinks)")
                        continue
                    st = os.stat(fp)
            except FileNotFoundError:
                note(fp, "broken symbolic link")
                continue
            except OSError as e:
                note(fp, f"cannot read the file ({e.strerror})", unreadable=True)
                continue
            if not stat.S_ISREG(st.st_mode):
                note(fp, "not a regular file (FIFO, socket or device)")
                continue
            out.append(fp)
    return out


def scan_dicom(path: str | os.PathLike, *, progress: bool = False, errors: str = "raise",
               skip_unreadable: bool = False, follow_symlinks: bool = False) -> DicomScan:
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
    skip_unreadable : bool
        Files/folders that cannot be read (permission denied …) are an :class:`InputError`
        naming them; with True they are skipped, logged and recorded in ``skipped``.
    follow_symlinks : bool
        Follow symbolic links pointing outside ``path`` (default: skipped with a warning).

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
    skipped: list[tuple[Path, str]] = []
    if not root.is_dir():
        files = [root]
    else:
        if not os.access(root, os.R_OK | os.X_OK):
            raise InputError("cannot read the folder (permission denied)", path=root)
        files = _walk(root, skip_unreadable=skip_unreadable, follow_symlinks=follow_symlinks,
                      skipped=skipped)
        if not files:
            raise DicomError("folder is empty", path=root,
                             hint="point to the folder that holds the DICOM series")
    images: list[tuple[Path, Any]] = []

    def _bad_header(f: Path, msg: str) -> None:
        """An unreadable header: skipped with a warning (``errors="skip"``), else one error."""
        if errors != "skip":
            raise DicomError(msg, path=f) from None
        log.warning("%s: %s; skipped", f.name, msg)
        skipped.append((f, "unreadable header"))

    with _progress(progress, "Scanning DICOM headers", len(files)) as advance:
        for f in files:
            advance()
            if f.name.upper() == "DICOMDIR":
                skipped.append((f, "DICOMDIR index (not an image)"))
                continue
            try:
                is_dicom = _looks_like_dicom(f)
            except (OSError, InputError) as e:
                why = f"cannot read the file ({getattr(e, 'strerror', None) or e})"
                if not skip_unreadable:
                    raise InputError(f"{why} — medvol will not ingest a study with missing "
                                     "files", path=f, hint="fix the permissions, or pass "
                                     "--skip-unreadable to skip it") from None
                log.warning("%s: %s; skipped", f, why)
                skipped.append((f, f"unreadable: {why}"))
                continue
            if not is_dicom:
                skipped.append((f, "not DICOM"))
                continue
            try:
                ds = _read_header(f)
            except InvalidDicomError:
                skipped.append((f, "not DICOM"))
                continue
            except Exception as e:  # truncated or corrupt header
                _bad_header(f, str(e) if isinstance(e, DicomError) else
                            f"cannot read DICOM header ({type(e).__name__}: {e}) — the file is "
                            "truncated or corrupt; re-export or remove it")
                continue
            try:
                sop = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "")
                          or ds.get("SOPClassUID", ""))
                has_rows = "Rows" in ds and "Columns" in ds
            except Exception as e:  # pydicom fails converting a malformed value
                _bad_header(f, f"cannot read DICOM header ({type(e).__name__}) — the file is "
                               "corrupt; re-export or remove it")
                continue
            if sop == _DICOMDIR_SOP or "DirectoryRecordSequence" in ds:
                skipped.append((f, "DICOMDIR index (not an image)"))
                continue
            if not has_rows:
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
    try:
        groups = _group(images)
    except Exception as e:  # a header value pydicom cannot convert while grouping
        raise DicomError(f"cannot group the series ({type(e).__name__}: {e}) — a header is "
                         "corrupt", path=root) from None
    return DicomScan(root=root, groups=groups, skipped=skipped, n_files=len(files))


def _is_image_sop(sop: str) -> bool:
    from pydicom.uid import UID

    try:
        return bool(sop) and "Image Storage" in UID(sop).name
    except Exception:  # unknown/private UID
        return False


def _fallback_key(ds) -> tuple:
    try:
        iop = tuple(round(float(x), 3) for x in (ds.get("ImageOrientationPatient") or []))
    except (TypeError, ValueError, OverflowError):
        iop = ("invalid",)
    return ("nouid", str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesNumber", "")),
            str(ds.get("Modality", "")), iop, str(ds.get("Rows")), str(ds.get("Columns")))


def _is_enhanced(ds) -> bool:
    if "PerFrameFunctionalGroupsSequence" in ds:
        return True
    try:
        return "SharedFunctionalGroupsSequence" in ds and int(ds.get("NumberOfFrames", 1) or 1) > 1
    except (TypeError, ValueError, OverflowError):
        return True  # validated (and refused) when its frames are read


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


