"""PD-UNet (Ernst et al., arXiv 2112.13443) and the original Learned Primal-Dual (Adler & Öktem).

Both reconstructors are called ``model(sinogram, operator)``:

``sinogram``
    ``(B, views, n_det)`` measured (sparse) sinogram, line integrals.
``operator``
    Any object with ``operator(x)`` (forward projection ``(B, ny, nx) → (B, views, n_det)``),
    ``operator.T(y)`` (adjoint, unfiltered back-projection) and ``operator.fbp(y)`` (Hann-filtered
    back-projection in image units, differentiable):
    :func:`medvol.recon.pdunet.pdunet_operator` gives a :class:`medvol.kernels.Projector` whose
    ``fbp`` hook is the Hann FBP. LPD additionally uses ``operator.norm(n_iter=30)`` (cached).

Both return ``(B, ny, nx)`` images in the units of the training images (μ in 1/mm for CT,
max-normalised magnitude for MRI).

PD-UNet forward pass (n_primal = 4, n_dual = 5, 2 iterations)
--------------------------------------------------------------
1. ``g_n = (g − μ_g)/σ_g`` per sample (z-normalisation over views × detector).
2. ``h₀ = 0`` (5 channels); ``f₀ = FBP_hann(g) / s_img`` repeated to 4 channels, where ``s_img`` is
   the dataset's 99th-percentile image value (stored in the model as the buffer ``image_scale``).
3. For each iteration: ``h ← h + w_d ⊙ Dual([h, Z(A(mean(f)·s_img)), g_n])`` with ``Z`` the
   per-sample z-normalisation, then ``f ← f + w_p ⊙ UNet([f, FBP_hann(σ_g·mean(h) + μ_g)/s_img])``.
4. Output ``mean(f) · s_img``.

The gates ``w_d`` start at 1 and ``w_p`` at 0, so an untrained PD-UNet returns the FBP
initialisation exactly.

Dual block: 3×3 convolutions 7→w→w→5 with PReLU, padded circularly along the angle axis and by
replication along the detector axis. Primal block: UNet of ``depth`` levels, widths
``width·2^l`` (paper: depth 4, width 32 → 32-64-128-256), two conv3×3 → ReLU → BatchNorm per
level, 2×2 average-pool down, bilinear ×2 + 1×1 conv up, skip concatenation, final 1×1 conv.

Learned Primal-Dual (baseline, Adler & Öktem 2018)
--------------------------------------------------
10 iterations, 5 primal / 5 dual channels, zero initialisation, operator normalised by its norm,
dual input ``[h, A_n(f₀), g_n]``, primal input ``[f, A_nᵀ(h₀)]`` (plain adjoint, no filter),
3-layer 32-channel PReLU CNNs with residual updates, output = primal channel 0. Images are
scaled by ``image_scale`` and the data by ``image_scale·‖A‖`` so that ``A_n f = g_n``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["PDUNet", "LearnedPrimalDual", "PDUNetConfig", "LPDConfig", "UNet", "DualBlock", "pdunet_config",
           "count_parameters", "unet_flops"]


LPD_NORM_ITERS = 30   # power-method iterations of ‖A‖ (the shipped LPD weights were trained so)


def _znorm(x: torch.Tensor, eps: float = 1e-6):
    """Per-sample z-normalisation over all non-batch dims. Returns ``(x_n, mean, std)``."""
    dims = tuple(range(1, x.dim()))
    mu = x.mean(dim=dims, keepdim=True)
    sd = x.std(dim=dims, keepdim=True) + eps
    return (x - mu) / sd, mu, sd


def pad_sinogram(x: torch.Tensor, p: int = 1) -> torch.Tensor:
    """Pad ``(B, C, views, n_det)`` by ``p``: circular along views, replicate along the detector."""
    x = torch.cat([x[..., -p:, :], x, x[..., :p, :]], dim=-2)
    return F.pad(x, (p, p, 0, 0), mode="replicate")


class DualBlock(nn.Module):
    """3-layer CNN on sinogram-shaped data with circular angle padding (PD-UNet dual step)."""

    def __init__(self, n_in: int = 7, n_out: int = 5, width: int = 32):
        super().__init__()
        self.c1 = nn.Conv2d(n_in, width, 3)
        self.a1 = nn.PReLU(width)
        self.c2 = nn.Conv2d(width, width, 3)
        self.a2 = nn.PReLU(width)
        self.c3 = nn.Conv2d(width, n_out, 3)
        for c in (self.c1, self.c2, self.c3):
            nn.init.zeros_(c.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a1(self.c1(pad_sinogram(x)))
        x = self.a2(self.c2(pad_sinogram(x)))
        return self.c3(pad_sinogram(x))


class _ConvBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(n_in, n_out, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(n_out),
            nn.Conv2d(n_out, n_out, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(n_out))

    def forward(self, x):
        return self.net(x)


class _Up(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.proj = nn.Conv2d(n_in, n_out, 1)
        self.block = _ConvBlock(2 * n_out, n_out)

    def forward(self, x, skip):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.proj(x)
        dy = skip.shape[-2] - x.shape[-2]
        dx = skip.shape[-1] - x.shape[-1]
        if dy or dx:               # odd sizes: pad the upsampled map (circular in width)
            x = F.pad(x, (0, dx, 0, 0), mode="circular") if dx else x
            x = F.pad(x, (0, 0, 0, dy), mode="replicate") if dy else x
        return self.block(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    """UNet: ``depth`` levels of widths ``width·2^l``; average-pool down, bilinear + 1×1 up."""

    def __init__(self, n_in: int = 5, n_out: int = 4, width: int = 32, depth: int = 4):
        super().__init__()
        w = [width * 2 ** i for i in range(depth)]
        self.down = nn.ModuleList([_ConvBlock(n_in if i == 0 else w[i - 1], w[i])
                                   for i in range(depth)])
        self.up = nn.ModuleList([_Up(w[i + 1], w[i]) for i in reversed(range(depth - 1))])
        self.last = nn.Conv2d(w[0], n_out, 1)

    def forward(self, x):
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = F.avg_pool2d(x, 2)
        for up in self.up:
            x = up(x, skips.pop())
        return self.last(x)


def pdunet_config(width: int = 32, depth: int = 4, n_primal: int = 4, n_dual: int = 5,
                  n_iter: int = 2, dual_width: int = 32) -> dict:
    """Configuration dict of :class:`PDUNet` (the paper's defaults)."""
    return dict(width=int(width), depth=int(depth), n_primal=int(n_primal), n_dual=int(n_dual),
                n_iter=int(n_iter), dual_width=int(dual_width))


@dataclass
class PDUNetConfig:
    """Architecture of :class:`PDUNet` (defaults: the paper; the shipped CPU weights use
    ``width=16``). :meth:`validate` bounds every size."""

    width: int = 32
    depth: int = 4
    n_primal: int = 4
    n_dual: int = 5
    n_iter: int = 2
    dual_width: int = 32

    def validate(self) -> "PDUNetConfig":
        from .micdir import _bound

        _bound("width", self.width, 1, 128)
        _bound("depth", self.depth, 1, 6)
        _bound("n_primal", self.n_primal, 1, 32)
        _bound("n_dual", self.n_dual, 1, 32)
        _bound("n_iter", self.n_iter, 1, 20)
        _bound("dual_width", self.dual_width, 1, 256)
        return self


@dataclass
class LPDConfig:
    """Architecture of :class:`LearnedPrimalDual` (Adler & Öktem's defaults)."""

    n_iter: int = 10
    n_primal: int = 5
    n_dual: int = 5
    width: int = 32

    def validate(self) -> "LPDConfig":
        from .micdir import _bound

        _bound("n_iter", self.n_iter, 1, 50)
        _bound("n_primal", self.n_primal, 1, 32)
        _bound("n_dual", self.n_dual, 1, 32)
        _bound("width", self.width, 1, 256)
        return self


class PDUNet(nn.Module):
    """Primal-Dual UNet: learned primal-dual with UNet primal blocks, FBP init, 2 iterations.

    Parameters
    ----------
    width, depth : UNet base width and number of levels (paper: 32, 4).
    n_primal, n_dual : primal (image) and dual (sinogram) channels (paper: 4, 5).
    n_iter : unrolled iterations (paper: 2).
    dual_width : channels of the dual CNN (paper: 32).
    image_scale : the dataset's 99th-percentile image value (1/mm for CT); a buffer saved with
        the weights.
    """

    def __init__(self, width: int = 32, depth: int = 4, n_primal: int = 4, n_dual: int = 5,
                 n_iter: int = 2, dual_width: int = 32, image_scale: float = 1.0):
        super().__init__()
        self.config = pdunet_config(width, depth, n_primal, n_dual, n_iter, dual_width)
        self.n_primal, self.n_dual, self.n_iter = n_primal, n_dual, n_iter
        self.dual = nn.ModuleList([DualBlock(n_dual + 2, n_dual, dual_width)
                                   for _ in range(n_iter)])
        self.primal = nn.ModuleList([UNet(n_primal + 1, n_primal, width, depth)
                                     for _ in range(n_iter)])
        self.gate_dual = nn.Parameter(torch.ones(n_iter, n_dual, 1, 1))
        self.gate_primal = nn.Parameter(torch.zeros(n_iter, n_primal, 1, 1))
        self.register_buffer("image_scale", torch.tensor(float(image_scale)))

    def forward(self, sinogram: torch.Tensor, operator, x0: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Reconstruct ``(B, ny, nx)`` from ``sinogram`` ``(B, views, n_det)``.

        ``x0``: optional precomputed Hann FBP of ``sinogram`` ``(B, ny, nx)`` (saves one FBP).
        """
        g = sinogram
        if g.dim() == 2:
            return self.forward(g[None], operator, None if x0 is None else x0[None])[0]
        s = self.image_scale.to(g.dtype)
        g_n, mu, sd = _znorm(g)
        if x0 is None:
            x0 = operator.fbp(g)
        f = (x0 / s).unsqueeze(1).repeat(1, self.n_primal, 1, 1)
        h = torch.zeros(g.shape[0], self.n_dual, *g.shape[-2:], dtype=g.dtype, device=g.device)
        g_n = g_n.unsqueeze(1)
        for k in range(self.n_iter):
            Af, _, _ = _znorm(operator(f.mean(dim=1) * s))
            h = h + self.gate_dual[k] * self.dual[k](torch.cat([h, Af.unsqueeze(1), g_n], 1))
            bp = operator.fbp(h.mean(dim=1) * sd + mu) / s
            f = f + self.gate_primal[k] * self.primal[k](torch.cat([f, bp.unsqueeze(1)], 1))
        return f.mean(dim=1) * s


class _CNN3(nn.Module):
    def __init__(self, n_in: int, n_out: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(n_in, width, 3, padding=1), nn.PReLU(width),
                                 nn.Conv2d(width, width, 3, padding=1), nn.PReLU(width),
                                 nn.Conv2d(width, n_out, 3, padding=1))
        for m in self.net:
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.net(x)


class LearnedPrimalDual(nn.Module):
    """The original Learned Primal-Dual (Adler & Öktem 2018): 10 iterations, zero init.

    ``image_scale`` (99th-percentile image value) sets the image units; the operator is
    normalised by ``operator.norm(n_iter=LPD_NORM_ITERS)`` (cached by the Projector).
    """

    def __init__(self, n_iter: int = 10, n_primal: int = 5, n_dual: int = 5, width: int = 32,
                 image_scale: float = 1.0):
        super().__init__()
        self.config = dict(n_iter=int(n_iter), n_primal=int(n_primal), n_dual=int(n_dual),
                           width=int(width))
        self.n_iter, self.n_primal, self.n_dual = n_iter, n_primal, n_dual
        self.dual = nn.ModuleList([_CNN3(n_dual + 2, n_dual, width) for _ in range(n_iter)])
        self.primal = nn.ModuleList([_CNN3(n_primal + 1, n_primal, width) for _ in range(n_iter)])
        self.register_buffer("image_scale", torch.tensor(float(image_scale)))

    def forward(self, sinogram: torch.Tensor, operator, x0: torch.Tensor | None = None
                ) -> torch.Tensor:
        g = sinogram
        if g.dim() == 2:
            return self.forward(g[None], operator)[0]
        s = self.image_scale.to(g.dtype)
        nrm = float(operator.norm(n_iter=LPD_NORM_ITERS))
        g_n = (g / (s * nrm)).unsqueeze(1)
        B = g.shape[0]
        ny, nx = operator.domain_shape
        f = torch.zeros(B, self.n_primal, ny, nx, dtype=g.dtype, device=g.device)
        h = torch.zeros(B, self.n_dual, *g.shape[-2:], dtype=g.dtype, device=g.device)
        for k in range(self.n_iter):
            Af = operator(f[:, 0]) / nrm
            h = h + self.dual[k](torch.cat([h, Af.unsqueeze(1), g_n], 1))
            bp = operator.T(h[:, 0]) / nrm
            f = f + self.primal[k](torch.cat([f, bp.unsqueeze(1)], 1))
        return f[:, 0] * s


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def unet_flops(width: int = 32, depth: int = 4, size: int = 256, n_in: int = 5, n_out: int = 4
               ) -> float:
    """Multiply-accumulate count ×2 (FLOPs) of the convolutions of one :class:`UNet` pass on a
    ``size × size`` image (activations, norms and pooling excluded)."""
    w = [width * 2 ** i for i in range(depth)]
    fl = 0.0
    for i in range(depth):
        px = (size / 2 ** i) ** 2
        cin = n_in if i == 0 else w[i - 1]
        fl += 2 * 9 * px * (cin * w[i] + w[i] * w[i])
    for i in reversed(range(depth - 1)):
        px = (size / 2 ** i) ** 2
        fl += 2 * px * w[i + 1] * w[i]                       # 1×1 projection after upsampling
        fl += 2 * 9 * px * (2 * w[i] * w[i] + w[i] * w[i])
    fl += 2 * size * size * w[0] * n_out
    return fl


def _check_count() -> tuple[int, int]:
    """Parameter counts of one paper-size UNet primal block and one dual block."""
    return count_parameters(UNet(5, 4, 32, 4)), count_parameters(DualBlock(7, 5, 32))

