"""One exception family for everything a user can get wrong.

Every error carries a documented process exit code (see ``EXIT_CODES``) and a message that says
*what* was wrong, *with which input*, and *what to do*. The CLI prints ``str(err)`` on one line and
exits with ``err.exit_code``; it never shows a traceback for user input.
"""
from __future__ import annotations

__all__ = [
    "MedvolError", "InputError", "INTERNAL_ERROR_EXIT", "DicomError", "GeometryError", "OutputExistsError",
    "BackendError", "WeightsError", "LimitError", "OutputError", "EXIT_CODES",
]


class MedvolError(Exception):
    """Base class. ``exit_code`` is the CLI exit status for this error."""

    exit_code = 1

    def __init__(self, message: str, *, path: object | None = None, hint: str | None = None):
        self.path = None if path is None else str(path)
        self.hint = hint
        text = message
        if self.path is not None and self.path not in message:
            text = f"{self.path}: {text}"
        if hint:
            text = f"{text} — {hint}"
        super().__init__(text)


class InputError(MedvolError):
    """An input file or argument is missing, unreadable or inconsistent."""

    exit_code = 2


class DicomError(InputError):
    """DICOM data cannot be turned into a valid volume (no files, truncated, mixed geometry…)."""

    exit_code = 3


class GeometryError(MedvolError):
    """A geometry (beam, trajectory, volume grid) is invalid or does not match the data."""

    exit_code = 4


class OutputExistsError(MedvolError):
    """The output exists and ``--overwrite`` was not given."""

    exit_code = 5


class BackendError(MedvolError):
    """A requested compute backend (CUDA, ASTRA) is not available on this machine."""

    exit_code = 6


class WeightsError(MedvolError):
    """Model weights are missing, corrupted or do not match the network."""

    exit_code = 7


class LimitError(InputError):
    """An input declares more data than the size budget allows (voxels, bytes, frames,
    decompressed size, slices invented by resampling). Checked *before* allocating; raise the
    budget with ``--max-voxels`` / ``MEDVOL_MAX_VOXELS`` (see :mod:`medvol.io.budget`)."""

    exit_code = 8


class OutputError(MedvolError):
    """An output cannot be written because of the file system: disk full (ENOSPC), read-only
    file system (EROFS), permission denied (EACCES), quota exceeded … — the user's problem,
    not a bug."""

    exit_code = 9


INTERNAL_ERROR_EXIT = 70

EXIT_CODES = {
    0: "success",
    MedvolError.exit_code: "medvol error not covered below",
    InputError.exit_code: "bad input file or argument",
    DicomError.exit_code: "DICOM data cannot be ingested",
    GeometryError.exit_code: "invalid geometry",
    OutputExistsError.exit_code: "output exists (use --overwrite)",
    BackendError.exit_code: "requested backend/device unavailable",
    WeightsError.exit_code: "model weights missing, corrupted or mismatched",
    LimitError.exit_code: "input exceeds the size budget (raise --max-voxels / MEDVOL_MAX_VOXELS)",
    OutputError.exit_code: "output cannot be written (disk full, read-only, permission denied)",
    INTERNAL_ERROR_EXIT: "unexpected internal error (a bug: rerun with MEDVOL_DEBUG=1 and report it)",
    130: "interrupted",
}
