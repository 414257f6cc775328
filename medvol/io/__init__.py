"""Reading and writing volumes: DICOM ingest, NRRD / NIfTI / MHA, Slicer segmentations and
displacement fields. Every writer is atomic and refuses to overwrite unless asked."""
from __future__ import annotations

__all__ = ["read_dicom_series", "read", "write", "write_segmentation", "read_segmentation",
           "write_displacement_field", "read_displacement_field"]
from .projections import Projections, load_projections, read_angles  # noqa: E402,F401  (numpy only)


def read_dicom_series(path, **kwargs):
    """Scan ``path`` for DICOM and return one :class:`~medvol.Volume` per series.

    See :func:`medvol.io.dicom.read_dicom_series` for the options."""
    from .dicom import read_dicom_series as _f

    return _f(path, **kwargs)


def read(path, **kwargs):
    """Read a volume from NRRD, NIfTI or MHA (see :func:`medvol.io.formats.read`)."""
    from .formats import read as _f

    return _f(path, **kwargs)


def write(vol, path, **kwargs):
    """Write a volume; format from the suffix (see :func:`medvol.io.formats.write`)."""
    from .formats import write as _f

    return _f(vol, path, **kwargs)


def write_segmentation(labels, path, **kwargs):
    from .formats import write_segmentation as _f

    return _f(labels, path, **kwargs)


def read_segmentation(path, **kwargs):
    from .formats import read_segmentation as _f

    return _f(path, **kwargs)


def write_displacement_field(field, path, **kwargs):
    from .formats import write_displacement_field as _f

    return _f(field, path, **kwargs)


def read_displacement_field(path, **kwargs):
    from .formats import read_displacement_field as _f

    return _f(path, **kwargs)
