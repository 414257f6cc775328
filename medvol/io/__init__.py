"""Reading and writing volumes: DICOM ingest, NRRD / NIfTI / MHA, Slicer segmentations and
displacement fields. Every writer is atomic and refuses to overwrite unless asked; every reader
checks the declared size against :mod:`medvol.io.budget` before allocating.

Modules: :mod:`~medvol.io.dicom` (DICOM package), :mod:`~medvol.io.volumes`,
:mod:`~medvol.io.nrrd`, :mod:`~medvol.io.segmentations`, :mod:`~medvol.io.fields`,
:mod:`~medvol.io.budget`, :mod:`~medvol.io.ingest` (the ingest job).
"""
from __future__ import annotations

from .dicom import read_dicom_series
from .fields import read_displacement_field, voxel_ddf_to_lps_mm, write_displacement_field
from .ingest import IngestResult, ingest_study
from .segmentations import read_segmentation, write_segmentation
from .volumes import read, write

__all__ = ["read_dicom_series", "read", "write", "write_segmentation", "read_segmentation",
           "write_displacement_field", "read_displacement_field", "voxel_ddf_to_lps_mm",
           "ingest_study", "IngestResult", "Projections", "load_projections", "read_angles"]
from .projections import Projections, load_projections, read_angles  # noqa: E402  (numpy only)
