"""Random training patches that never leave their split.

``crop_origin`` draws the corner of a ``patch × patch`` crop whose rows lie in ``[r0, r1)`` and
columns in ``[c0, c1)`` (a split region), so a training crop never straddles a split border;
``augment`` applies the same random 90° rotation and flips to input and target.
"""
from __future__ import annotations

import numpy as np

__all__ = ["crop_origin", "augment"]


def crop_origin(rng: np.random.Generator, rows: tuple, cols: tuple, patch: int) -> tuple[int, int]:
    """``(i, j)`` with ``r0 ≤ i``, ``i + patch ≤ r1`` and likewise for columns (row drawn first)."""
    r0, r1 = rows
    c0, c1 = cols
    if r1 - r0 < patch or c1 - c0 < patch:
        raise ValueError(f"region {rows}×{cols} is smaller than the patch {patch}")
    i = int(rng.integers(r0, r1 - patch + 1))
    j = int(rng.integers(c0, c1 - patch + 1))
    return i, j


def augment(rng: np.random.Generator, *arrays):
    """Same random in-plane rotation (k·90°) and y/x flips for every array (last two axes)."""
    k = int(rng.integers(4))
    fy, fx = bool(rng.integers(2)), bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(-2, -1))
        if fy:
            a = a[..., ::-1, :]
        if fx:
            a = a[..., ::-1]
        out.append(np.ascontiguousarray(a))
    return out
