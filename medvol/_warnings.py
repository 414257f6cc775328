"""Silence warnings around a third-party call without corrupting the process's filters.

``warnings.catch_warnings`` saves the global ``warnings.filters`` list on entry and puts the saved
list back on exit (Python 3.11–3.13, and 3.14 unless context-aware warnings are on, the default
only in free-threaded builds). Two threads that overlap — A enters, B enters, A exits, B exits —
leave B's saved list, which still holds A's temporary "ignore" filter, in place for good: every
later warning in the process is lost. Prefect's default task runner is a thread pool, so two
ingest tasks reading DICOM side by side did exactly that.

``quiet`` instead counts its active blocks per filter: the first block to enter adds one "ignore"
filter, the last to leave removes that same filter object, and the count is kept under a lock that
is **not** held during the call itself (reads in different threads still run side by side).
Limits, inherent to one global filter list: while any block is active, matching warnings from
every thread are hidden; and a ``catch_warnings`` block of another library that spans the end of
ours can still restore a list holding our filter.
"""
from __future__ import annotations

import contextlib
import threading
import warnings

__all__ = ["quiet"]

_LOCK = threading.Lock()
_ACTIVE: dict[str, list] = {}      # message prefix ("" = every warning) -> [count, filter, ours]


def _mutated() -> None:
    # tell the warnings machinery that the list changed (what filterwarnings itself does)
    getattr(warnings, "_filters_mutated", lambda: None)()


@contextlib.contextmanager
def quiet(message: str | None = None):
    """Ignore every warning (or only those whose text starts with ``message``) inside the block."""
    key = message or ""
    with _LOCK:
        ent = _ACTIVE.get(key)
        if ent is None:
            before = list(warnings.filters)
            warnings.filterwarnings("ignore", message=key)
            item = warnings.filters[0]
            # an identical filter the process already had is left in place on exit
            ent = _ACTIVE[key] = [0, item, item not in before]
        ent[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            ent[0] -= 1
            if ent[0] == 0:
                del _ACTIVE[key]
                if ent[2]:
                    with contextlib.suppress(ValueError):
                        warnings.filters.remove(ent[1])
                    _mutated()
