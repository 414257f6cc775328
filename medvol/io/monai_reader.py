"""A MONAI ``ImageReader`` backed by medvol's DICOM reader.

``monai.transforms.LoadImage(reader=MedvolDicomReader())`` then gets what
:func:`medvol.io.read_dicom_series` builds — gantry tilt and uneven slice gaps corrected by
resampling, slices sorted along the normal, rescale applied, enhanced multi-frame objects split
— instead of the raw stack MONAI's own DICOM readers return for such series::

    from monai.transforms import LoadImage
    from medvol.io.monai_reader import MedvolDicomReader

    img = LoadImage(reader=MedvolDicomReader(), image_only=True)("study/")   # MetaTensor

The array follows MONAI's convention: spatial axes ``(x, y, z)`` = medvol's ``(i, j, k)``
(the transpose of :attr:`medvol.Volume.array`), no channel axis; ``affine`` is the IJK→RAS
matrix (MONAI's default space, ``space = "RAS"``) or IJK→LPS with ``affine_lps_to_ras=False``.

This module imports MONAI at import time; ``import medvol`` / ``medvol.io`` never import it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from monai.data.image_reader import ImageReader

from ..volume import Volume

__all__ = ["MedvolDicomReader"]

_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", "")


class MedvolDicomReader(ImageReader):
    """Read a DICOM folder (or file) with medvol for MONAI's ``LoadImage``.

    Parameters
    ----------
    series : str, optional
        Pick the volume whose medvol label contains this text (e.g. ``"fieldmap_hz"``, a
        series number ``"s801"``); default: the largest volume of the folder.
    resample : ``"auto"`` | ``"never"`` | ``"always"`` — see :func:`medvol.io.dicom.load_series`.
    affine_lps_to_ras : return the affine in RAS (MONAI's default) rather than LPS.
    """

    def __init__(self, series: str | None = None, resample: str = "auto",
                 affine_lps_to_ras: bool = True):
        super().__init__()
        self.series = series
        self.resample = resample
        self.affine_lps_to_ras = affine_lps_to_ras

    def verify_suffix(self, filename: Sequence[os.PathLike] | os.PathLike) -> bool:
        """A folder, or files ending in .dcm / .dicom / .ima or without a suffix."""
        names = filename if isinstance(filename, (list, tuple)) else [filename]
        for f in names:
            p = Path(f)
            if not (p.is_dir() or p.suffix.lower() in _DICOM_SUFFIXES):
                return False
        return True

    def read(self, data: Sequence[os.PathLike] | os.PathLike, **kwargs) -> Volume | list[Volume]:
        """One :class:`~medvol.Volume` per path (a list for several paths)."""
        from ..errors import InputError
        from .dicom import read_dicom_series

        paths = data if isinstance(data, (list, tuple)) else [data]
        out = []
        for p in paths:
            vols = read_dicom_series(p, resample=self.resample)
            if self.series is not None:
                vols = [v for v in vols if self.series in str(v.meta.get("label", ""))]
                if not vols:
                    raise InputError(f"no volume whose label contains {self.series!r}", path=p,
                                     hint="see `medvol info FOLDER` for the labels")
            out.append(max(vols, key=lambda v: v.array.size))
        return out if len(out) > 1 else out[0]

    def get_data(self, img: Volume | list[Volume]) -> tuple[np.ndarray, dict[str, Any]]:
        """``(array (x, y, z) [stacked on a first axis for several], meta)`` with MONAI's
        ``affine``, ``original_affine``, ``spatial_shape``, ``space``, ``original_channel_dim``
        and medvol's de-identified ``label``, ``modality``, ``units``, ``tilt_deg``."""
        vols = img if isinstance(img, (list, tuple)) else [img]
        arrays, meta = [], {}
        for v in vols:
            arrays.append(np.ascontiguousarray(v.numpy().transpose(2, 1, 0)))
            if not meta:
                aff = v.affine_ras if self.affine_lps_to_ras else v.affine
                meta = {"affine": aff, "original_affine": aff.copy(),
                        "spatial_shape": np.asarray(v.size_xyz),
                        "space": "RAS" if self.affine_lps_to_ras else "LPS",
                        "original_channel_dim": float("nan")}
                for k in ("label", "modality", "units", "tilt_deg", "image_kind"):
                    if k in v.meta:
                        meta[f"medvol_{k}"] = v.meta[k]
        data = arrays[0] if len(arrays) == 1 else np.stack(arrays)
        if len(arrays) > 1:
            meta["original_channel_dim"] = 0
        return data, meta
