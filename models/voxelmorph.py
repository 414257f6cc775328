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
        from monai.networks.nets import VoxelMorph, VoxelMorphUNet

        from medvol._warnings import quiet

        cfg = config or VoxelMorphConfig()
        self.config = cfg
        backbone = VoxelMorphUNet(spatial_dims=3, in_channels=2,
                                  unet_out_channels=cfg.unet_out_channels,
                                  channels=tuple(cfg.channels),
                                  final_conv_channels=tuple(cfg.final_conv_channels))
        # MONAI's Warp warns at construction that it uses torch's native grid_sample (intended
        # here; forward does not call those layers): medvol's thread-safe quiet(), scoped to
        # this constructor, not a process-wide filter
        with quiet("monai.networks.blocks.Warp: Using PyTorch native"):
            self.net = VoxelMorph(backbone=backbone, integration_steps=cfg.int_steps,
                                  half_res=False)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> dict:
        """MONAI ``VoxelMorph.forward(moving, fixed)`` (``half_res=False``) with its two stateful
        layers replaced by :func:`medvol.models.micdir.integrate_svf` / ``warp``, which compute
        the same bits as ``net.dvf2ddf`` / ``net.warp`` (forward and gradients;
        ``tests/registration/test_micdir.py``) without storing a grid on the layer, so one model may serve several
        threads, and 1.1–1.4× faster (``benchmarks/warp.py``)."""
        from .micdir import integrate_svf, warp

        if fixed.shape != moving.shape or fixed.dim() != 5 or fixed.shape[1] != 1:
            raise ValueError(f"fixed and moving must both be (B, 1, z, y, x); got "
                             f"{tuple(fixed.shape)} and {tuple(moving.shape)}")
        v = self.net.backbone(torch.cat([moving, fixed], dim=1))    # MONAI order: (moving, fixed)
        if v.shape[1] != 3 or v.shape[2:] != moving.shape[2:]:      # MONAI's checks, kept
            raise ValueError(f"the backbone must return a (B, 3, *{tuple(moving.shape[2:])}) "
                             f"field; got {tuple(v.shape)}")
        ddf = integrate_svf(v, int(self.net.integration_steps)) if self.net.diffeomorphic else v
        warped = warp(moving, ddf)
        return {"ddf": ddf, "warped": warped, "velocity": None,
                "scg_loss": torch.zeros((), device=ddf.device), "ddf_half": None,
                "velocity_half": None}
