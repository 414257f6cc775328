"""One switch for the CPU thread count of torch and of medvol's numba kernels.

``torch.set_num_threads`` alone leaves the numba CPU projectors (``kernels/_cpu2d.py``,
``_cpu3d.py``: ``prange`` loops) on every core. A trainer told ``--threads 1`` then still runs its
projector on all cores, and two such jobs on a 2-core machine oversubscribe it: measured here, a
``medvol train pdunet --threads 1`` run next to a one-thread benchmark fell from 0.5 to 2.8 s per
step, and ran at 0.8 s per step once both pinned numba to one thread as well.
"""
from __future__ import annotations

import contextlib

__all__ = ["set_threads"]


def set_threads(threads: int | None) -> None:
    """Pin torch and numba to ``threads`` CPU threads (None or 0: leave both as they are).

    The CPU projectors split work by thread count, so results are bit-identical only between
    runs with the same count. numba cannot exceed the count it was started with
    (``NUMBA_NUM_THREADS``, default: the cores), so the numba side is capped there.
    """
    if not threads:
        return
    import torch

    # numba first: launching its OpenMP threading layer resets the process's OpenMP thread
    # count, which torch reads (measured: OMP_NUM_THREADS=1, torch at 1, first numba launch ->
    # torch at 2). Setting torch afterwards makes the torch count stick.
    with contextlib.suppress(Exception):   # numba missing or its threading layer unavailable
        import numba

        numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(int(threads))
