"""Compatibility alias: the one checked safetensors reader is :func:`medvol.learned.weights.read_safetensors`."""
from __future__ import annotations

from .learned.weights import read_safetensors

__all__ = ["read_safetensors"]
