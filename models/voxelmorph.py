"""VoxelMorph baseline: a thin wrapper over MONAI's ``VoxelMorph`` with medvol's argument order.

MONAI's ``VoxelMorph.forward(moving, fixed)`` concatenates ``(moving, fixed)``; medvol's
registration nets are called ``model(fixed, moving)``. This wrapper swaps the arguments once, here,
and returns the same dict keys as :class:`medvol.models.micdir.MICDIR` (``ddf`` in voxels, channels
``(dz, dy, dx)``, ``warped``), so training, inference and metrics treat both nets alike.

Backbone: MONAI's ``VoxelMorphUNet`` (the paper's channels (16, 32, 32, 32, 32, 32), final convs
(16, 16)), diffeomorphic with 7 scaling-and-squaring steps at full resolution, zero padding.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

__all__ = ["VoxelMorphConfig", "VoxelMorphNet"]


@dataclass
class VoxelMorphConfig:
    channels: tuple = (16, 32, 32, 32, 32, 32)
    final_conv_channels: tuple = (16, 16)
    unet_out_channels: int = 32
    int_steps: int = 7

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def validate(self) -> "VoxelMorphConfig":
        """Refuse sizes outside sane bounds (``ValueError``) before anything is allocated."""
        from .micdir import _bound

        _bound("channels", self.channels, 1, 256, n_min=2, n_max=12)
        _bound("final_conv_channels", self.final_conv_channels, 1, 256, n_min=0, n_max=4)
        _bound("unet_out_channels", self.unet_out_channels, 1, 256)
        _bound("int_steps", self.int_steps, 0, 16)
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "VoxelMorphConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown VoxelMorph config keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class VoxelMorphNet(nn.Module):
    """``model(fixed, moving) -> {"ddf", "warped", "velocity", "scg_loss": 0}``.

    ``fixed``, ``moving``: ``(B, 1, z, y, x)``; each spatial size divisible by 8.
    """

    divisor = 8

    def __init__(self, config: VoxelMorphConfig | None = None):
        super().__init__()
        import warnings

        from monai.networks.nets import VoxelMorph, VoxelMorphUNet

        cfg = config or VoxelMorphConfig()
        self.config = cfg
        backbone = VoxelMorphUNet(spatial_dims=3, in_channels=2,
                                  unet_out_channels=cfg.unet_out_channels,
                                  channels=tuple(cfg.channels),
                                  final_conv_channels=tuple(cfg.final_conv_channels))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.net = VoxelMorph(backbone=backbone, integration_steps=cfg.int_steps,
                                  half_res=False)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> dict:
        import warnings

        if fixed.shape != moving.shape or fixed.dim() != 5 or fixed.shape[1] != 1:
            raise ValueError(f"fixed and moving must both be (B, 1, z, y, x); got "
                             f"{tuple(fixed.shape)} and {tuple(moving.shape)}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warped, ddf = self.net(moving, fixed)  # MONAI order: (moving, fixed)
        return {"ddf": ddf, "warped": warped, "velocity": None,
                "scg_loss": torch.zeros((), device=ddf.device), "ddf_half": None,
                "velocity_half": None}
