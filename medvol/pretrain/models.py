"""Registry entries ``voco_cnn``, ``voco_swin`` and ``mvr_cnn`` in :mod:`medvol.learned.registry`.

Imported by the registry on a lookup miss (listed in its ``_BUILTIN_MODULES``) and by every
:mod:`medvol.pretrain` function that builds a model; :func:`register` is idempotent.
"""
from __future__ import annotations

from dataclasses import dataclass

from medvol.learned import registry
from medvol.models.voco import VoCoCNNConfig, VoCoSwinConfig, build_voco_cnn, build_voco_swin

__all__ = ["register", "MVRConfig"]


@dataclass
class MVRConfig:
    """Masked-volume-reconstruction baseline: a whole BasicUNet (``features`` as ``voco_cnn``)
    with one output channel."""

    in_channels: int = 1
    features: tuple = (16, 16, 32, 64, 128, 16)

    def validate(self) -> None:
        VoCoCNNConfig(in_channels=self.in_channels, features=self.features).validate()


def _mvr(cfg: MVRConfig):
    from medvol.models.voco import basic_unet

    return basic_unet(cfg.features, cfg.in_channels, out_channels=1)


def register() -> bool:
    """Register the pre-training models (no-op when already registered)."""
    have = set(registry._REGISTRY)
    if "voco_cnn" not in have:
        registry.register_model(
            "voco_cnn", config_cls=VoCoCNNConfig, builder=build_voco_cnn, task="voco-pretrain",
            description="VoCo v1 (CVPR 2024): MONAI BasicUNet encoder + pooled levels + MLP "
                        "projector (CPU default)")
    if "voco_swin" not in have:
        registry.register_model(
            "voco_swin", config_cls=VoCoSwinConfig, builder=build_voco_swin,
            task="voco-pretrain",
            description="VoCo v1: MONAI SwinUNETR v2 encoder + pooled levels + MLP projector (GPU)")
    if "mvr_cnn" not in have:
        registry.register_model(
            "mvr_cnn", config_cls=MVRConfig, builder=_mvr, task="masked-reconstruction",
            description="masked-volume reconstruction baseline (whole BasicUNet)")
    return True


register()
