"""VoCo backbones: a MONAI encoder, its pooled multi-level embedding and the MLP projector.

VoCo (Wu, Zhuang, Chen, CVPR 2024) compares crops of a volume by the *embedding* of a 3D
encoder: every encoder level is global-average-pooled, the pooled vectors are concatenated and an
MLP projector maps them to the space where cosine similarities are taken (v1 recipe, repository
``Luffy03/VoCo``: projector ``Linear → BatchNorm1d(affine=False, track_running_stats=False) →
ReLU`` twice, then ``Linear``). Two backbones, both built *from MONAI's own networks* so that the
pre-trained encoder loads into the MONAI segmentation network by state-dict name:

``VoCoCNN`` (registry name ``voco_cnn``, the 2-core CPU default)
    the encoder half of :class:`monai.networks.nets.BasicUNet` — its modules ``conv_0``,
    ``down_1`` … ``down_4`` (taken from a BasicUNet instance, names and shapes unchanged);
    embedding = pooled outputs of the five levels, ``f0 + f1 + f2 + f3 + f4`` channels.
``VoCoSwin`` (registry name ``voco_swin``, the GPU config of the paper/v1)
    the encoder of :class:`monai.networks.nets.SwinUNETR` (``use_v2=True``): ``swinViT`` plus the
    residual ``UnetrBasicBlock`` encoders ``encoder1`` (input), ``encoder2``/``3``/``4`` (hidden
    states 0, 1, 2) and ``encoder10`` (hidden state 4); embedding ``24 · feature_size`` channels
    (1152 at feature_size 48, as in v1). MONAI ≥ 1.5: no ``img_size``; inputs divisible by 32;
    needs ``einops``.

Loading the pre-trained encoder (weights keys are ``encoder.<monai name>``)::

    from safetensors.torch import load_file
    from monai.networks.nets import BasicUNet
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=3, features=(16, 16, 32, 64, 128, 16))
    net.load_state_dict({k[8:]: v for k, v in load_file("voco.safetensors").items()
                         if k.startswith("encoder.")}, strict=False)

(``SwinUNETR(in_channels=1, out_channels=…, feature_size=48, use_v2=True)`` the same way for
``voco_swin`` files.) Registry entries live in :mod:`medvol.pretrain.models` (this package does not
import the learned stack).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

__all__ = ["VoCoCNNConfig", "VoCoSwinConfig", "VoCoCNN", "VoCoSwin", "Projector",
           "CNN_ENCODER_KEYS", "SWIN_ENCODER_KEYS", "build_voco_cnn", "build_voco_swin",
           "basic_unet"]

CNN_ENCODER_KEYS = ("conv_0", "down_1", "down_2", "down_3", "down_4")
SWIN_ENCODER_KEYS = ("swinViT", "encoder1", "encoder2", "encoder3", "encoder4", "encoder10")
_MAX_WIDTH = 1024
_MAX_PROJ = 8192


def _check_widths(name: str, values, lo: int, hi: int) -> None:
    for v in values:
        if not lo <= int(v) <= hi:
            raise ValueError(f"{name} entries must be in [{lo}, {hi}], got {v}")


@dataclass
class VoCoCNNConfig:
    """BasicUNet encoder + projector. ``features`` are BasicUNet's six widths (the sixth is the
    decoder's last width, kept so the same tuple builds the downstream segmentation net)."""

    in_channels: int = 1
    features: tuple = (16, 16, 32, 64, 128, 16)
    proj_hidden: int = 256
    proj_out: int = 256

    def validate(self) -> None:
        if not 1 <= self.in_channels <= 8:
            raise ValueError(f"in_channels must be in [1, 8], got {self.in_channels}")
        if len(self.features) != 6:
            raise ValueError(f"features must have 6 widths (BasicUNet), got {len(self.features)}")
        _check_widths("features", self.features, 1, _MAX_WIDTH)
        _check_widths("proj_hidden/proj_out", (self.proj_hidden, self.proj_out), 1, _MAX_PROJ)

    @property
    def embed_dim(self) -> int:
        return int(sum(self.features[:5]))


@dataclass
class VoCoSwinConfig:
    """SwinUNETR (v2) encoder + projector; defaults are VoCo v1's (feature_size 48, window 7,
    projector 2048). ``window_size`` 4 suits 32³ CPU smoke runs."""

    in_channels: int = 1
    feature_size: int = 48
    window_size: int = 7
    depths: tuple = (2, 2, 2, 2)
    num_heads: tuple = (3, 6, 12, 24)
    proj_hidden: int = 2048
    proj_out: int = 2048

    def validate(self) -> None:
        if not 1 <= self.in_channels <= 8:
            raise ValueError(f"in_channels must be in [1, 8], got {self.in_channels}")
        if not 12 <= self.feature_size <= 192 or self.feature_size % 12:
            raise ValueError(f"feature_size must be a multiple of 12 in [12, 192], got "
                             f"{self.feature_size}")
        if not 2 <= self.window_size <= 12:
            raise ValueError(f"window_size must be in [2, 12], got {self.window_size}")
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ValueError("depths and num_heads must have 4 entries")
        _check_widths("depths", self.depths, 1, 8)
        _check_widths("num_heads", self.num_heads, 1, 48)
        _check_widths("proj_hidden/proj_out", (self.proj_hidden, self.proj_out), 1, _MAX_PROJ)

    @property
    def embed_dim(self) -> int:
        return 24 * int(self.feature_size)


class Projector(nn.Sequential):
    """VoCo v1 projector: ``Linear → BN(affine=False, no running stats) → ReLU`` ×2, ``Linear``."""

    def __init__(self, dim_in: int, hidden: int, out: int):
        super().__init__(
            nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden, affine=False,
                                                     track_running_stats=False), nn.ReLU(True),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden, affine=False,
                                                     track_running_stats=False), nn.ReLU(True),
            nn.Linear(hidden, out))


def basic_unet(features=(16, 16, 32, 64, 128, 16), in_channels: int = 1, out_channels: int = 3):
    """The MONAI :class:`~monai.networks.nets.BasicUNet` (3D) whose encoder ``voco_cnn`` shares."""
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                     features=tuple(int(f) for f in features))


class VoCoCNN(nn.Module):
    """``encoder`` (BasicUNet ``conv_0`` … ``down_4``) + ``projector``.

    ``embed(x)``: ``(N, C, D, H, W) → (N, f0+…+f4)`` pooled levels; ``forward`` projects it.
    Any spatial size ≥ 16 per axis works (four 2× max-poolings).
    """

    def __init__(self, cfg: VoCoCNNConfig):
        super().__init__()
        unet = basic_unet(cfg.features, cfg.in_channels)
        self.encoder = nn.ModuleDict({k: getattr(unet, k) for k in CNN_ENCODER_KEYS})
        self.projector = Projector(cfg.embed_dim, cfg.proj_hidden, cfg.proj_out)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for k in CNN_ENCODER_KEYS:
            x = self.encoder[k](x)
            pooled.append(x.mean(dim=(2, 3, 4)))
        return torch.cat(pooled, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.embed(x))


class VoCoSwin(nn.Module):
    """``encoder`` (SwinUNETR v2 ``swinViT`` + ``encoder1/2/3/4/10``) + ``projector``; input sizes
    must be divisible by 32 (checked by :func:`medvol.pretrain.voco.check_shape`)."""

    def __init__(self, cfg: VoCoSwinConfig):
        super().__init__()
        from monai.networks.nets import SwinUNETR

        net = SwinUNETR(in_channels=cfg.in_channels, out_channels=2,
                        feature_size=cfg.feature_size, window_size=cfg.window_size,
                        depths=tuple(cfg.depths), num_heads=tuple(cfg.num_heads), use_v2=True)
        self.encoder = nn.ModuleDict({k: getattr(net, k) for k in SWIN_ENCODER_KEYS})
        self.projector = Projector(cfg.embed_dim, cfg.proj_hidden, cfg.proj_out)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        e = self.encoder
        hs = e["swinViT"](x, True)
        maps = [e["encoder1"](x), e["encoder2"](hs[0]), e["encoder3"](hs[1]),
                e["encoder4"](hs[2]), e["encoder10"](hs[4])]
        return torch.cat([m.mean(dim=(2, 3, 4)) for m in maps], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.embed(x))


def build_voco_cnn(cfg: VoCoCNNConfig) -> VoCoCNN:
    return VoCoCNN(cfg)


def build_voco_swin(cfg: VoCoSwinConfig) -> VoCoSwin:
    return VoCoSwin(cfg)
