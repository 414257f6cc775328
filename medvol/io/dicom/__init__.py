"""DICOM ingest: scan a folder, group series, validate geometry, decode, and build Volumes.

Policy (each decision is recorded in ``Volume.meta["ingest"]`` and logged on the
``medvol.io.dicom`` logger; patient identifiers are never logged or stored):

* **Scan**: the folder tree is walked recursively; files with or without ``.dcm`` are accepted,
  non-DICOM files are skipped quietly, DICOMDIR files are ignored (they index images, they are
  not images), and objects without Rows/Columns (SR, RT plans, …) are skipped. Only headers are
  read at this stage (``stop_before_pixels=True``).
* **Unreadable files and folders** (permission denied, I/O error) are an
  :class:`~medvol.errors.InputError` naming them — never counted as "not DICOM" and never
  interpolated over; ``skip_unreadable=True`` skips them and records them in
  ``DicomScan.skipped`` (the ingest manifest names them).
* **Symbolic links**: a linked file whose target lies outside the input folder, and every linked
  folder, is skipped with a warning naming it (``follow_symlinks=True`` follows them; loops are
  cut); FIFOs, sockets and devices are skipped with a warning (reading them would block).
* **Header values** are validated before use (:mod:`medvol.io.dicom.values`): finite, in range,
  positive where physical; a bad one is one :class:`~medvol.errors.DicomError` naming file and
  tag. Declared sizes (frames, Rows × Columns × frames, the resampled grid) are checked against
  :mod:`medvol.io.budget` before anything is decoded; deflated datasets inflate with a cap.
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


from .build import load_series, read_dicom_series
from .pixels import decode_pixels, install_deflate_cap
from .scan import DicomScan, SeriesGroup, scan_dicom

__all__ = ["read_dicom_series", "scan_dicom", "load_series", "SeriesGroup", "DicomScan",
           "decode_pixels"]

install_deflate_cap()
