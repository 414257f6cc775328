"""Helpers shared by the volume, NRRD, segmentation and field modules of :mod:`medvol.io`:
suffix handling, the metadata whitelist and one-line error text."""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import InputError

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
    """A readable *regular* file (a FIFO or device would block or never end)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError("file not found", path=path, hint="check the path") from None
    except OSError as e:
        raise InputError(f"cannot access the file ({e.strerror})", path=path) from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError("is a folder, expected a file", path=path,
                         hint="for a DICOM folder use medvol.io.read_dicom_series")
    if not stat.S_ISREG(st.st_mode):
        raise InputError("is not a regular file (FIFO, socket or device)", path=path,
                         hint="copy the data into a regular file")
    if not os.access(path, os.R_OK):
        raise InputError("permission denied", path=path, hint="check the file's permissions")


def open_regular(path: str | os.PathLike):
    """Open ``path`` for binary reading without blocking, refusing anything but a regular file
    (the check is on the opened descriptor, so a file swapped for a FIFO cannot slip through)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise InputError("file not found", path=path, hint="check the path") from None
    except OSError as e:
        raise InputError(f"cannot open the file ({e.strerror})", path=path) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError("is not a regular file (FIFO, socket, device or folder)", path=path,
                         hint="copy the data into a regular file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def inside_folder(folder: Path, name: str, *, what: str, path: object) -> Path:
    """Resolve a file name found in a header (NRRD ``data file``, MetaImage
    ``ElementDataFile``) inside ``folder``: no absolute path, no ``..`` escape, no symlink out."""
    if not name or "\x00" in name:
        raise InputError(f"{what} is empty", path=path)
    cand = Path(name)
    if cand.is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise InputError(f"{what} {name!r} is an absolute path; medvol only reads data files "
                         "next to the header", path=path,
                         hint="put the data file beside the header and give its plain name")
    base = folder.resolve()
    target = (base / cand).resolve()
    if target != base and base not in target.parents:
        raise InputError(f"{what} {name!r} points outside the header's folder", path=path,
                         hint="put the data file beside the header and give its plain name")
    return target


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



def _native(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr)



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
