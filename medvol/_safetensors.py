"""One safetensors reader for every learned model: tensors + metadata, or a WeightsError."""
from __future__ import annotations

from pathlib import Path

from .errors import WeightsError


def read_safetensors(path, *, retrain_hint: str) -> tuple[dict, dict]:
    """Return ``(metadata, tensors)`` of a safetensors file (torch tensors on the CPU).

    Raises :class:`WeightsError` when the file is missing (``retrain_hint`` says how to get it
    back) or unreadable (corrupted, truncated, not safetensors). No pickle is ever loaded.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise WeightsError("weights file not found", path=p, hint=retrain_hint)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several unrelated types for a broken file
        first = str(e).splitlines()[0][:160] if str(e) else ""
        raise WeightsError(f"cannot read weights (corrupted or not safetensors: "
                           f"{type(e).__name__}: {first})", path=p,
                           hint="restore the file or retrain") from None
    return meta, tensors
