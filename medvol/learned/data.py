"""Training data: the data root (``--data DIR`` / ``MEDVOL_DATA``).

:func:`resolve_data_root` is the one place that turns a user's ``--data`` (or the environment
variable ``MEDVOL_DATA``) into a folder; library code never looks anywhere else. Layout of the
root (the same as the project's shared data folder), per training task::

    DIR/dicom/ct_head_ge_tilt/*.dcm          medvol train pdunet --task ct_x16
    DIR/mri/stroke/{T1,T2,FLAIR}.nii.gz      medvol train pdunet --task mri_x16,
                                             medvol train micdir (held-out subject)

The PD-UNet/LPD tasks and slice loaders are in :mod:`medvol.recon.pdunet_data`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..errors import InputError

DATA_ENV = "MEDVOL_DATA"

__all__ = ["DATA_ENV", "resolve_data_root"]

def resolve_data_root(data: str | os.PathLike | None, *, need: Sequence[str] = ()) -> Path:
    """The folder of training data: ``data`` if given, else the environment variable
    ``MEDVOL_DATA``.

    ``need``: sub-paths (e.g. ``"dicom/ct_head_ge_tilt"``) that must exist below the root.
    Raises :class:`InputError` naming ``--data`` and ``MEDVOL_DATA`` when no root is given, the
    root is not a folder, or a needed sub-path is missing. Library code never guesses a location.
    """
    if data is None or str(data) == "":
        env = os.environ.get(DATA_ENV, "")
        if not env:
            raise InputError("no training data folder given",
                             hint=f"pass --data DIR (or data=...) or set {DATA_ENV}=DIR")
        root, src = Path(env).expanduser(), f"${DATA_ENV}"
    else:
        root, src = Path(data).expanduser(), "--data"
    if not root.is_dir():
        raise InputError(f"training data folder {root} ({src}) is not a folder",
                         path=root, hint=f"pass --data DIR or set {DATA_ENV}")
    for sub in need:
        if not (root / sub).exists():
            raise InputError(f"training data folder {root} ({src}) lacks {sub}",
                             path=root / sub,
                             hint="see `medvol train --help` for the expected folder layout")
    return root
