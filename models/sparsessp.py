"""SparseSSP hybrid-dimension network ("3e2d") and an fnet-style 3D U-Net baseline.

SparseSSP (Zheng et al., ECCV 2024) predicts fluorescence from a *sparse* transmitted-light
z-stack: only every r-th slice is acquired, the kept slices are nearest-upsampled back to the
network depth (``medvol.ssp.sparsify``), a **3D encoder** reads the stack, the depth of the
bottleneck and of every skip is **folded into channels** (``B×C×D×H×W → B×(C·D)×H×W``, C-major),
each folded tensor passes a 2D "gate" convolution, a **2D decoder** does the expensive
full-resolution work, and the **head** emits ``D_out·C_out`` channels that are unfolded into
``D_out`` slices (one-to-many voxel mapping; ``D_out = 1`` gives a 2D output, e.g. a maximum
projection target).

Written from the method description (no code copied). Deviations from the paper, all for a
2-core CPU and stated here once:

* plain convolutions instead of RepMode's MoDE expert banks (one target set per model, so the
  per-task gating has nothing to choose between);
* 3×3(×3) kernels instead of 5×5(×5) (``kernel`` in the config);
* widths: paper 32/64/128/256 (``SparseSSPConfig.paper()``); the CPU default is 16/32/64/128 with a
  256-channel bottleneck; the gates map each fold to the level's width (paper: twice it).

:class:`FNet3D` is the dense baseline of label-free prediction (Ounkomol et al., 2018): a 3D U-Net,
two conv+BN+ReLU per level, Conv k2 s2 down, ConvTranspose k2 s2 up, concatenated skips. It is
written here rather than taken from ``monai.networks.nets.UNet/BasicUNet`` because fnet's level
structure (channel-preserving k2s2 down convolution, no residual units, no max-pooling) differs
from both; the conv+norm+act blocks are MONAI's ``Convolution``. For a 2D target (``depth_out=1``)
its head ends with a learned per-channel weighted projection over z (a grouped Conv3d with kernel
``(D, 1, 1)``), because the dense U-Net otherwise returns a 3D stack.

Registry entries ``sparsessp`` and ``fnet3d`` live in :mod:`medvol.ssp.models` (this package does
not import the learned stack, so ``medvol.models`` and ``medvol.learned`` form no import cycle).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

__all__ = ["SparseSSPConfig", "FNetConfig", "SparseSSP", "FNet3D", "fold_depth", "unfold_depth",
           "build_sparsessp", "build_fnet"]

_MAX_WIDTH = 1024
_MAX_LEVELS = 6
_MAX_DEPTH = 256


def fold_depth(x: torch.Tensor) -> torch.Tensor:
    """``B×C×D×H×W → B×(C·D)×H×W`` (C-major: channel ``c·D + d`` is channel c at depth d)."""
    b, c, d, h, w = x.shape
    return x.reshape(b, c * d, h, w)


def unfold_depth(x: torch.Tensor, depth: int) -> torch.Tensor:
    """Exact inverse of :func:`fold_depth`: ``B×(C·D)×H×W → B×C×D×H×W``."""
    b, cd, h, w = x.shape
    if cd % depth:
        raise ValueError(f"{cd} channels cannot unfold into depth {depth}")
    return x.reshape(b, cd // depth, depth, h, w)


def _check_common(cfg, name: str) -> None:
    w = tuple(cfg.widths)
    if not 1 <= len(w) <= _MAX_LEVELS:
        raise ValueError(f"{name}: widths must have 1..{_MAX_LEVELS} levels, got {len(w)}")
    if any((not isinstance(v, int)) or v < 1 or v > _MAX_WIDTH for v in w):
        raise ValueError(f"{name}: widths must be integers in 1..{_MAX_WIDTH}, got {list(w)}")
    for k in ("in_channels", "out_channels"):
        v = getattr(cfg, k)
        if not isinstance(v, int) or not 1 <= v <= 64:
            raise ValueError(f"{name}: {k} must be an integer in 1..64, got {v!r}")
    if not isinstance(cfg.depth_in, int) or not 1 <= cfg.depth_in <= _MAX_DEPTH:
        raise ValueError(f"{name}: depth_in must be an integer in 1..{_MAX_DEPTH}")
    if cfg.depth_in % (2 ** len(w)):
        raise ValueError(f"{name}: depth_in {cfg.depth_in} must be divisible by 2**levels "
                         f"= {2 ** len(w)}")
    if not isinstance(cfg.depth_out, int) or not 1 <= cfg.depth_out <= _MAX_DEPTH:
        raise ValueError(f"{name}: depth_out must be an integer in 1..{_MAX_DEPTH}")
    if cfg.kernel not in (1, 3, 5):
        raise ValueError(f"{name}: kernel must be 1, 3 or 5, got {cfg.kernel!r}")
    if cfg.norm not in ("batch", "instance"):
        raise ValueError(f"{name}: norm must be 'batch' or 'instance'")


@dataclass
class _EncoderConfig:
    """Fields shared by :class:`SparseSSPConfig` and :class:`FNetConfig` (same 3D encoder)."""

    in_channels: int = 1
    out_channels: int = 3
    depth_in: int = 16
    depth_out: int = 1
    widths: tuple = (16, 32, 64, 128)
    bottleneck: int | None = None
    kernel: int = 3
    norm: str = "batch"

    @classmethod
    def paper(cls, **kw):
        """The paper's widths 32/64/128/256, bottleneck 512 (5×5 kernels there; 3×3 here)."""
        return cls(widths=(32, 64, 128, 256), bottleneck=512, **kw)

    def _check_encoder(self) -> None:
        name = type(self).__name__
        _check_common(self, name)
        b = self.bottleneck if self.bottleneck is not None else 2 * self.widths[-1]
        if not isinstance(b, int) or not 1 <= b <= 2 * _MAX_WIDTH:
            raise ValueError(f"{name}: bottleneck must be in 1..{2 * _MAX_WIDTH}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class SparseSSPConfig(_EncoderConfig):
    """Configuration of :class:`SparseSSP`.

    ``depth_in``: depth the encoder reads (the nearest-upsampled sparse stack, padded); must be a
    multiple of ``2**len(widths)``. ``depth_out``: slices the head emits (1 for a 2D target).
    ``bottleneck``: bottleneck width (default ``2·widths[-1]``).
    """

    def validate(self) -> "SparseSSPConfig":
        """Bound every size so a hostile config is refused before any allocation."""
        self._check_encoder()
        # folded channel counts (C·D) bound the gate convolutions
        d = self.depth_in
        for w in self.widths:
            if w * d > 16384:
                raise ValueError(f"SparseSSPConfig: fold width {w}·{d} exceeds 16384")
            d //= 2
        if self.out_channels * self.depth_out > 4096:
            raise ValueError("SparseSSPConfig: out_channels·depth_out exceeds 4096")
        return self


@dataclass
class FNetConfig(_EncoderConfig):
    """Configuration of :class:`FNet3D` (fnet: depth 4, base 32, ×2 per level)."""

    def validate(self) -> "FNetConfig":
        self._check_encoder()
        if self.depth_out not in (1, self.depth_in):
            raise ValueError("FNetConfig: depth_out must be 1 (projected 2D output) or depth_in")
        return self


def _block(dims: int, cin: int, cout: int, k: int, norm: str, *, strides: int = 1,
           transposed: bool = False, act: bool = True):
    from monai.networks.blocks import Convolution

    return Convolution(dims, cin, cout, kernel_size=k if not (strides > 1) else strides,
                       strides=strides, act="RELU" if act else None,
                       norm=(norm.upper(), {"affine": True}) if norm == "instance" else norm.upper(),
                       is_transposed=transposed, padding=None if strides == 1 else 0,
                       output_padding=0 if transposed else None, bias=True)


def _double(dims, cin, cout, k, norm):
    return nn.Sequential(_block(dims, cin, cout, k, norm), _block(dims, cout, cout, k, norm))


class _Encoder3D(nn.Module):
    """fnet/SparseSSP 3D encoder: per level two conv+BN+ReLU (the skip) then Conv k2 s2 down."""

    def __init__(self, cin, widths, bottleneck, k, norm):
        super().__init__()
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        c = cin
        for w in widths:
            self.levels.append(_double(3, c, w, k, norm))
            self.downs.append(_block(3, w, w, 2, norm, strides=2))
            c = w
        self.bottom = _double(3, c, bottleneck, k, norm)

    def forward(self, x):
        skips = []
        for lev, down in zip(self.levels, self.downs):
            x = lev(x)
            skips.append(x)
            x = down(x)
        return skips, self.bottom(x)


def _decoder(dims: int, widths, bott: int, k: int, norm: str):
    """Up-sampling (transposed conv ×2) and double-conv blocks, deepest level first."""
    ups, decs = nn.ModuleList(), nn.ModuleList()
    c = bott
    for w in reversed(widths):
        ups.append(_block(dims, c, w, 2, norm, strides=2, transposed=True))
        decs.append(_double(dims, 2 * w, w, k, norm))
        c = w
    return ups, decs


def _check_input(x, cfg, divisor: int, name: str) -> None:
    if x.ndim != 5 or x.shape[1] != cfg.in_channels or x.shape[2] != cfg.depth_in:
        raise ValueError(f"{name} expects B×{cfg.in_channels}×{cfg.depth_in}×H×W, "
                         f"got {tuple(x.shape)}")
    if x.shape[-1] % divisor or x.shape[-2] % divisor:
        raise ValueError(f"H, W must be divisible by {divisor}, got {tuple(x.shape[-2:])}")


class SparseSSP(nn.Module):
    """``model(x: B×C_in×D_in×H×W) -> B×C_out×D_out×H×W`` (H, W divisible by ``2**levels``)."""

    def __init__(self, config: SparseSSPConfig | None = None):
        super().__init__()
        cfg = (config or SparseSSPConfig()).validate()
        self.config = cfg
        widths = tuple(cfg.widths)
        bott = cfg.bottleneck or 2 * widths[-1]
        k, norm = cfg.kernel, cfg.norm
        self.divisor = 2 ** len(widths)
        self.encoder = _Encoder3D(cfg.in_channels, widths, bott, k, norm)
        depths = [cfg.depth_in // 2 ** i for i in range(len(widths) + 1)]
        self.skip_gates = nn.ModuleList(
            _block(2, w * d, w, k, norm) for w, d in zip(widths, depths[:-1]))
        self.bottom_gate = _block(2, bott * depths[-1], bott, k, norm)
        self.ups, self.decs = _decoder(2, widths, bott, k, norm)
        self.head = nn.Conv2d(widths[0], cfg.out_channels * cfg.depth_out, k, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        _check_input(x, cfg, self.divisor, "SparseSSP")
        skips, y = self.encoder(x)
        y = self.bottom_gate(fold_depth(y))
        for up, dec, gate, s in zip(self.ups, self.decs, reversed(self.skip_gates),
                                    reversed(skips)):
            y = dec(torch.cat([up(y), gate(fold_depth(s))], dim=1))
        return unfold_depth(self.head(y), cfg.depth_out)


class FNet3D(nn.Module):
    """fnet-style dense 3D U-Net: ``B×C_in×D×H×W -> B×C_out×D_out×H×W`` (D_out ∈ {1, D})."""

    def __init__(self, config: FNetConfig | None = None):
        super().__init__()
        cfg = (config or FNetConfig()).validate()
        self.config = cfg
        widths = tuple(cfg.widths)
        bott = cfg.bottleneck or 2 * widths[-1]
        k, norm = cfg.kernel, cfg.norm
        self.divisor = 2 ** len(widths)
        self.encoder = _Encoder3D(cfg.in_channels, widths, bott, k, norm)
        self.ups, self.decs = _decoder(3, widths, bott, k, norm)
        self.head = nn.Conv3d(widths[0], cfg.out_channels, k, padding=k // 2)
        self.project = None
        if cfg.depth_out == 1 and cfg.depth_in > 1:
            self.project = nn.Conv3d(cfg.out_channels, cfg.out_channels, (cfg.depth_in, 1, 1),
                                     groups=cfg.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        _check_input(x, cfg, self.divisor, "FNet3D")
        skips, y = self.encoder(x)
        for up, dec, s in zip(self.ups, self.decs, reversed(skips)):
            y = dec(torch.cat([up(y), s], dim=1))
        y = self.head(y)
        return self.project(y) if self.project is not None else y


def _as_config(cls, config):
    if config is None:
        return cls().validate()
    if isinstance(config, cls):
        return config.validate()
    if isinstance(config, dict):
        return cls.from_dict(config).validate()
    raise TypeError(f"config must be a dict or {cls.__name__}")


def build_sparsessp(config=None) -> SparseSSP:
    """Build :class:`SparseSSP` from a dict / :class:`SparseSSPConfig` (validated first)."""
    return SparseSSP(_as_config(SparseSSPConfig, config))


def build_fnet(config=None) -> FNet3D:
    """Build :class:`FNet3D` from a dict / :class:`FNetConfig` (validated first)."""
    return FNet3D(_as_config(FNetConfig, config))
