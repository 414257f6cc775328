"""Registry entries ``sparsessp`` and ``fnet3d`` in :mod:`medvol.learned.registry`.

Imported by the registry on a lookup miss (listed in its ``_BUILTIN_MODULES``) and by every
medvol.ssp function that builds or loads a model; :func:`register` is idempotent.
"""
from __future__ import annotations

from medvol.learned import registry
from medvol.models.sparsessp import FNetConfig, SparseSSPConfig, build_fnet, build_sparsessp

__all__ = ["register"]


def register() -> bool:
    """Register ``sparsessp`` and ``fnet3d`` (no-op when already registered)."""
    have = set(registry._REGISTRY)
    if "sparsessp" not in have:
        registry.register_model(
            "sparsessp", config_cls=SparseSSPConfig, builder=build_sparsessp,
            task="fluorescence from sparse transmitted-light z-slices",
            description="SparseSSP hybrid 3D-encoder/2D-decoder (ECCV 2024), medvol CPU widths")
    if "fnet3d" not in have:
        registry.register_model(
            "fnet3d", config_cls=FNetConfig, builder=build_fnet,
            task="fluorescence from dense transmitted-light z-stacks",
            description="fnet-style dense 3D U-Net baseline (Ounkomol et al. 2018)")
    return True


register()
