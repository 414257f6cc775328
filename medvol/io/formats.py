"""Compatibility module: the volume-file API now lives in :mod:`medvol.io.volumes`,
:mod:`medvol.io.segmentations`, :mod:`medvol.io.fields` and :mod:`medvol.io.nrrd`.

Kept so that ``from medvol.io.formats import …`` keeps working; new code imports from
:mod:`medvol.io` or the modules above.
"""
from __future__ import annotations

from ._common import FIELD_SUFFIXES, SAFE_META_KEYS, VOLUME_SUFFIXES, orientation_code
from .fields import (field_image, read_displacement_field, voxel_ddf_to_lps_mm,
                     write_displacement_field)
from .segmentations import read_segmentation, write_segmentation
from .volumes import read, write

__all__ = [
    "read", "write", "write_segmentation", "read_segmentation", "write_displacement_field",
    "read_displacement_field", "voxel_ddf_to_lps_mm", "field_image", "orientation_code",
    "SAFE_META_KEYS", "VOLUME_SUFFIXES", "FIELD_SUFFIXES",
]
