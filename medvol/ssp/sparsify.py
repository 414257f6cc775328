"""Sparsification of a transmitted-light z-stack and SparseSSP's "prefix" nearest upsampling.

One **global** slice set per stack: slices ``0, r, 2r, …`` (``z[::r]`` from index 0) are kept, as
in the released SparseSSP code; every network window then reads from that one set (the released
code re-sparsifies each inference window from its own start, so windows could disagree — not
here). Prefix interpolation repeats each kept slice ``r`` times: full-depth slice ``k`` is kept
slice ``min(⌊k/r⌋, n_kept − 1)``. A stack shallower than the network depth is padded at the end by
repeating its last (upsampled) slice; the pad is documented in the model card, it carries no data.
"""
from __future__ import annotations

import numpy as np

__all__ = ["RATIOS", "kept_slices", "prefix_index", "sparsify", "prefix_upsample", "sparse_input"]

RATIOS = (1, 2, 4, 8)


def _check_ratio(ratio) -> int:
    from ..errors import InputError

    if not isinstance(ratio, (int, np.integer)) or int(ratio) not in RATIOS:
        raise InputError(f"sparse ratio must be one of {RATIOS[1:]} (1 = dense), got {ratio!r}")
    return int(ratio)


def kept_slices(depth: int, ratio: int) -> np.ndarray:
    """z indices kept from a ``depth``-slice stack: ``0, r, 2r, … < depth``."""
    r = _check_ratio(ratio)
    if depth < 1:
        raise ValueError("depth must be ≥ 1")
    return np.arange(0, depth, r)


def prefix_index(depth: int, ratio: int, n_kept: int | None = None) -> np.ndarray:
    """For each full-depth slice ``k``, the index *into the kept set* it repeats."""
    r = _check_ratio(ratio)
    n = len(kept_slices(depth, r)) if n_kept is None else n_kept
    return np.minimum(np.arange(depth) // r, n - 1)


def sparsify(stack: np.ndarray, ratio: int, axis: int = -3) -> np.ndarray:
    """Keep every ``ratio``-th slice along ``axis`` (default z of ``(…, Z, Y, X)``) from index 0."""
    a = np.asarray(stack)
    return np.take(a, kept_slices(a.shape[axis], ratio), axis=axis)


def prefix_upsample(sparse: np.ndarray, ratio: int, depth: int, axis: int = -3) -> np.ndarray:
    """Nearest ("prefix") upsampling of a sparse stack back to ``depth`` slices along ``axis``."""
    a = np.asarray(sparse)
    return np.take(a, prefix_index(depth, ratio, a.shape[axis]), axis=axis)


def sparse_input(stack: np.ndarray, ratio: int, net_depth: int | None = None,
                 axis: int = -3) -> tuple[np.ndarray, np.ndarray]:
    """Network input from a dense stack: keep ``z[::ratio]``, prefix-upsample to the stack depth,
    then (if ``net_depth`` is larger) pad by repeating the last slice.

    Returns ``(input, kept)`` where ``kept`` are the original z indices actually used.
    """
    from ..errors import InputError

    a = np.asarray(stack)
    d = a.shape[axis]
    kept = kept_slices(d, ratio)
    up = prefix_upsample(np.take(a, kept, axis=axis), ratio, d, axis=axis)
    if net_depth is not None:
        if d > net_depth:
            raise InputError(f"stack has {d} z-slices but the network reads at most {net_depth}")
        if d < net_depth:
            idx = np.minimum(np.arange(net_depth), d - 1)
            up = np.take(up, idx, axis=axis)
    return up, kept
