"""2D slice diffusion prior: a small VP/DDPM ε-network (MONAI ``DiffusionModelUNet``).

Used by :mod:`medvol.recon.diffusion` (DDS and DiffusionMBIR-style sampling). The network sees
one axial CT slice in [0, 1] (a fixed HU window, see :data:`medvol.recon.diffusion_data.HU_WINDOW`)
scaled to [-1, 1], plus the DDPM timestep, and predicts the noise ε of the VP forward process
``x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε`` with a linear β schedule (1e-4 → 0.02, 1000 steps, as DDPM and
DDS). The network itself is MONAI's; this module only bounds its configuration and holds the
noise schedule (plain tensors, so samplers do not need a scheduler object).
"""
from __future__ import annotations

from dataclasses import dataclass

from medvol.errors import InputError

__all__ = ["DiffusionConfig", "build_diffusion_unet", "alphas_cumprod"]


@dataclass
class DiffusionConfig:
    """Size of the ε-network and its VP noise schedule.

    ``channels`` are the widths of the UNet levels (one down-sampling between levels),
    ``num_res_blocks`` residual blocks per level, ``attention`` switches self-attention on at the
    deepest level (off by default: CPU cost at 128² and no gain at this size). The schedule is
    ``n_train_timesteps`` linear β from ``beta_start`` to ``beta_end``.
    """

    channels: tuple = (16, 32, 64)
    num_res_blocks: int = 1
    attention: bool = False
    norm_num_groups: int = 8
    n_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def validate(self) -> None:
        ch = tuple(int(c) for c in self.channels)
        if not 1 <= len(ch) <= 5:
            raise InputError(f"diffusion channels must have 1 to 5 levels, got {len(ch)}")
        g = int(self.norm_num_groups)
        if not 1 <= g <= 64:
            raise InputError(f"diffusion norm_num_groups must be in [1, 64], got {g}")
        for c in ch:
            if not 8 <= c <= 512 or c % g:
                raise InputError(f"diffusion channel width {c} must be in [8, 512] and a "
                                 f"multiple of norm_num_groups={g}")
        if not 1 <= int(self.num_res_blocks) <= 4:
            raise InputError(f"diffusion num_res_blocks must be in [1, 4], got {self.num_res_blocks}")
        if not 10 <= int(self.n_train_timesteps) <= 4000:
            raise InputError("diffusion n_train_timesteps must be in [10, 4000]")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise InputError("diffusion betas must satisfy 0 < beta_start < beta_end < 1")


def build_diffusion_unet(cfg: DiffusionConfig):
    """The MONAI ``DiffusionModelUNet`` (2D, 1 channel in/out) for ``cfg``."""
    from monai.networks.nets import DiffusionModelUNet

    cfg.validate()
    ch = tuple(int(c) for c in cfg.channels)
    att = tuple(bool(cfg.attention) and i == len(ch) - 1 for i in range(len(ch)))
    return DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=ch,
                              attention_levels=att, num_res_blocks=int(cfg.num_res_blocks),
                              norm_num_groups=int(cfg.norm_num_groups),
                              num_head_channels=ch[-1])


def alphas_cumprod(cfg: DiffusionConfig):
    """ᾱ_t for t = 0 … T−1 (float64 torch tensor) of the linear β schedule (the same values
    as MONAI's ``DDPMScheduler(schedule="linear_beta")``, checked in the tests)."""
    import torch

    betas = torch.linspace(cfg.beta_start, cfg.beta_end, int(cfg.n_train_timesteps),
                           dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)
