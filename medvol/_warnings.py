"""Silence warnings around a third-party call without corrupting the process's filters.

``warnings.catch_warnings`` (Python < 3.14) saves the global ``warnings.filters`` list on entry
and puts the saved list back on exit. Two threads that overlap — thread A enters, B enters, A
exits, B exits — leave B's saved list, which still holds A's temporary "ignore" filter, in place
for good: every later warning in the process is lost. Prefect's default task runner is a thread
pool, so two ingest tasks reading DICOM side by side do exactly that. ``quiet`` takes one
process-wide re-entrant lock around the whole block, so medvol's own quiet blocks never overlap
and always restore what was there. Warnings raised by other threads while a block runs are still
hidden for its duration (inherent to a global filter list); the blocks are short (one header or
one pixel decode).
"""
from __future__ import annotations

import contextlib
import threading
import warnings

__all__ = ["quiet"]

_LOCK = threading.RLock()


@contextlib.contextmanager
def quiet(message: str | None = None):
    """Ignore every warning (or only those whose text starts with ``message``) inside the block."""
    with _LOCK, warnings.catch_warnings():
        if message is None:
            warnings.simplefilter("ignore")
        else:
            warnings.filterwarnings("ignore", message=message)
        yield
