"""MICDIR: multi-scale inverse-consistent deformable registration (UNetMSS + SCG latent).

Chatterjee et al., "MICDIR: Multi-scale Inverse-consistent Deformable Image Registration using
UNetMSS with Self-Constructing Graph Latent", arXiv 2203.04317 (2022). Written from the paper and
the engineering notes in ``shared/reference/micdir.md`` (architecture of the released code).

Conventions
-----------
* Tensors are ``(B, C, z, y, x)``; the network is called ``model(fixed, moving)`` (MONAI's
  ``VoxelMorph`` takes ``(moving, fixed)`` — see :mod:`medvol.models.voxelmorph`).
* A DDF (dense displacement field) is ``(B, 3, z, y, x)`` in **voxels**, channel ``k`` = the
  displacement along tensor spatial axis ``k`` — i.e. ``(dz, dy, dx)``. The warped moving image is
  ``moving(p + u(p))`` sampled at each fixed-grid voxel ``p`` (resampling direction, like ITK);
  :func:`medvol.io.formats.voxel_ddf_to_lps_mm` turns it into the LPS-mm field Slicer loads.
* Warping is trilinear, ``align_corners=True``, **zero padding** (as the released code and as
  MONAI's ``Warp(padding_mode="zeros")``).

Faithful quirks of the released code are on by default, each behind a named option of
:class:`MICDIRConfig` (``std_from_logvar="exp"``, ``adjacency_act="leaky_relu"``,
``velocity_act=True``, ``raw_reshape=True``); set them to the "fixed" values for a cleaner variant.

This module imports only torch (no medvol I/O) so it runs anywhere torch does.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "MICDIRConfig", "MICDIR", "SCGBlock", "GCNLayer", "warp", "integrate_svf", "resize_field",
    "integrate_half_res", "global_ncc", "grad_l2", "identity_grid",
]


# --------------------------------------------------------------------------- spatial primitives
def identity_grid(shape: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Voxel coordinates ``(3, *shape)`` in array order (z, y, x)."""
    axes = [torch.arange(int(n), device=device, dtype=dtype) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)


def warp(image: torch.Tensor, ddf: torch.Tensor, *, mode: str = "bilinear",
         padding_mode: str = "zeros") -> torch.Tensor:
    """Resample ``image`` at ``p + ddf(p)`` (voxel units, array-order channels).

    Parameters
    ----------
    image : ``(B, C, z, y, x)``
    ddf : ``(B, 3, z', y', x')`` displacement in voxels of ``image``; ``(z', y', x')`` may differ
        only if the caller means it (the output takes the DDF's grid). Channel order ``(dz, dy, dx)``.
    mode : ``"bilinear"`` (trilinear) or ``"nearest"`` (label maps).
    padding_mode : ``"zeros"`` (MICDIR), ``"border"`` or ``"reflection"``.

    Returns
    -------
    ``(B, C, z', y', x')``

    Notes
    -----
    The arithmetic of MONAI's ``monai.networks.blocks.Warp`` (native ``grid_sample`` path),
    written out: sampling point ``(p + u) · 2 / (n − 1) − 1`` per axis (by Python numbers, in
    MONAI's order of operations), ``(x, y, z)`` last, ``align_corners=True``. When image and DDF
    share a grid the result is **bit-identical** to ``Warp`` — outputs and gradients on CPU,
    outputs on CUDA, whose ``grid_sample`` backward accumulates atomically and is not
    repeatable anyway (``tests/registration/test_micdir.py``). Hand-written for two stated reasons:

    * speed — MONAI 1.6.1's ``Warp`` rebuilds its reference grid on every call (its cache check
      compares ``ref_grid.shape[1:]`` with ``ddf.shape[2:]``, which never match), stacks it per
      batch item and normalises each axis by indexed assignment; the same numbers in four
      element-wise operations are 1.1–1.4× faster (``benchmarks/warp.py``, 2 threads: forward
      + backward 1.68 vs 2.36 ms on the 16×24×24 refinement grid, 9.8 vs 13.1 ms on 32×48×48;
      the scaling-and-squaring loop and instance optimisation call it dozens of times a pair);
    * thread safety — ``Warp`` stores the grid on the layer and reads it back, so a layer shared
      by threads raced (a size-mismatch error with four threads warping different shapes);
      this function holds no state.

    An image on a *different* grid than the DDF is normalised by the image's own size (the
    output takes the DDF's grid), which ``Warp`` does not allow.
    """
    spatial = ddf.shape[2:]
    if ddf.shape[1] != len(spatial):
        raise ValueError(f"ddf must have {len(spatial)} channels, got {ddf.shape[1]}")
    if image.dtype != ddf.dtype:
        image = image.to(ddf.dtype)
    g = identity_grid(spatial, ddf.device, ddf.dtype).movedim(0, -1) + ddf.movedim(1, -1)
    # per axis, by a Python number, in MONAI's order of operations (x * 2 / (n - 1) - 1): the
    # same bits on CPU and CUDA (a tensor divisor rounds differently on CUDA), no host copy
    sizes = image.shape[2:]
    grid = torch.stack([g[..., k] * 2 / max(int(sizes[k]) - 1, 1) - 1
                        for k in range(len(spatial) - 1, -1, -1)], dim=-1)  # (B, *spatial, x y z)
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def integrate_svf(velocity: torch.Tensor, steps: int = 7, *,
                  padding_mode: str = "zeros") -> torch.Tensor:
    """Scaling and squaring: the DDF of ``exp(v)`` for a stationary velocity field.

    ``u₀ = v / 2**steps``; ``u ← u + u∘(Id + u)``, ``steps`` times. ``steps=0`` returns ``v``.
    MONAI's ``DVF2DDF`` recursion on :func:`warp` (bit-identical to ``DVF2DDF(num_steps=steps,
    mode="bilinear", padding_mode=...)``, faster for the reasons given there).
    """
    if steps <= 0:
        return velocity
    u = velocity / (2 ** int(steps))
    for _ in range(int(steps)):
        u = u + warp(u, u, padding_mode=padding_mode)
    return u


def resize_field(ddf: torch.Tensor, size: Sequence[int], scale_values: bool = True) -> torch.Tensor:
    """Trilinearly resize a DDF to ``size``; with ``scale_values`` the voxel displacements are
    rescaled per axis to the new grid (``(n_new - 1) / (n_old - 1)``, consistent with
    ``align_corners=True``)."""
    old = ddf.shape[2:]
    out = F.interpolate(ddf, size=tuple(int(s) for s in size), mode="trilinear", align_corners=True)
    if scale_values:
        f = torch.tensor([(int(n) - 1) / max(int(o) - 1, 1) for n, o in zip(size, old)],
                         dtype=out.dtype, device=out.device)
        out = out * f.view(1, -1, 1, 1, 1)
    return out


def integrate_half_res(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """MICDIR's integration: resize ``v`` to half size (values × ½), integrate, resize back (× 2)."""
    full = velocity.shape[2:]
    half = [max(int(n) // 2, 2) for n in full]
    u = integrate_svf(resize_field(velocity, half), steps)
    return resize_field(u, full)


# --------------------------------------------------------------------------- losses
def global_ncc(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Global normalised cross-correlation (Pearson r over the whole volume), batch mean.

    ``(B, C, ...)`` inputs; ``global_ncc(x, x) == 1``. MICDIR's similarity (not windowed).
    Hand-written because MONAI has no global NCC: ``LocalNormalizedCrossCorrelationLoss`` is the
    windowed (local) NCC, a different similarity, which the test-time refinement
    (:mod:`medvol.registration.refine`) does use.
    """
    a = a.flatten(1).float()
    b = b.flatten(1).float()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    r = (a * b).sum(1) / torch.sqrt((a * a).sum(1) * (b * b).sum(1) + eps)
    return r.mean()


def grad_l2(ddf: torch.Tensor) -> torch.Tensor:
    """VoxelMorph ``Grad('l2')``: mean squared forward difference per axis, averaged over axes."""
    nd = ddf.dim() - 2
    terms = [(ddf.diff(dim=2 + k) ** 2).mean() for k in range(nd)]
    return sum(terms) / nd


# --------------------------------------------------------------------------- network blocks
def _conv(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=bias),
                         nn.LeakyReLU(0.2))


class GCNLayer(nn.Module):
    """``X ← Dropout(LeakyReLU(BN(Linear(Â X))))`` on node features ``(B, N, F)``."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.1):
        super().__init__()
        self.linear = nn.Linear(cin, cout)
        self.bn = nn.BatchNorm1d(cout)
        self.act = nn.LeakyReLU(0.2)
        self.drop = nn.Dropout(dropout)
        nn.init.orthogonal_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        h = self.linear(adj @ x)                         # (B, N, cout)
        h = self.bn(h.transpose(1, 2)).transpose(1, 2)   # BN over features
        return self.drop(self.act(h))


class SCGBlock(nn.Module):
    """Self-constructing graph (Liu et al. 2020) as used by MICDIR's latent.

    Returns ``(mu, logvar, adj_norm, z_hat, scg_loss)`` with ``adj_norm`` ``(B, N, N)`` =
    ``D^-½ (A + I) D^-½``, ``N = prod(nodes)``.
    """

    def __init__(self, cin: int = 32, hidden: int = 9, nodes: Sequence[int] = (4, 4, 4),
                 dropout: float = 0.2, *, std_from_logvar: str = "exp",
                 adjacency_act: str = "leaky_relu", raw_reshape: bool = True):
        super().__init__()
        if std_from_logvar not in ("exp", "exp_half"):
            raise ValueError("std_from_logvar must be 'exp' (released code) or 'exp_half'")
        if adjacency_act not in ("leaky_relu", "relu"):
            raise ValueError("adjacency_act must be 'leaky_relu' (released code) or 'relu'")
        self.nodes = tuple(int(n) for n in nodes)
        self.hidden = hidden
        self.mu = nn.Sequential(nn.Conv3d(cin, hidden, 3, padding=1), nn.Dropout(dropout))
        self.logvar = nn.Sequential(nn.Conv3d(cin, hidden, 1), nn.Dropout(dropout))
        self.std_from_logvar = std_from_logvar
        self.adjacency_act = adjacency_act
        self.raw_reshape = raw_reshape

    def to_nodes(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, C, *nodes)`` → ``(B, N, C)`` (raw reshape as released, or channel-last permute)."""
        b, c = t.shape[:2]
        if self.raw_reshape:
            return t.reshape(b, -1, c)
        return t.flatten(2).transpose(1, 2)

    def from_nodes(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        if self.raw_reshape:
            return x.reshape(b, c, *self.nodes)
        return x.transpose(1, 2).reshape(b, c, *self.nodes)

    def forward(self, gx: torch.Tensor, *, sample: bool | None = None,
                generator: torch.Generator | None = None):
        """``sample``: draw ``z = μ + σ·ε`` (default: in training mode only; ``z = μ`` in eval
        mode); ``generator``: the source of ``ε`` (default: torch's global one)."""
        mu = self.to_nodes(self.mu(gx))          # (B, N, h)
        logvar = self.to_nodes(self.logvar(gx))  # (B, N, h)
        n = mu.shape[1]
        if self.training if sample is None else sample:
            std = torch.exp(logvar) if self.std_from_logvar == "exp" else torch.exp(0.5 * logvar)
            eps = torch.randn(std.shape, generator=generator, dtype=std.dtype,
                              device=std.device) if generator is not None else torch.randn_like(std)
            z = mu + std * eps
        else:
            z = mu
        a = z @ z.transpose(1, 2)
        a = F.leaky_relu(a, 0.2) if self.adjacency_act == "leaky_relu" else F.relu(a)
        diag = torch.diagonal(a, dim1=1, dim2=2)                  # (B, N), ≥ 0
        gamma = torch.sqrt(1.0 + 1.0 / (diag.mean(1) + 1e-7))     # (B,)
        small = diag < 1
        diag_loss = gamma.mean() * torch.where(small, torch.log(diag.clamp_min(0) + 1e-7),
                                               torch.zeros_like(diag)).sum() / (a.shape[0] * n * n)
        if self.std_from_logvar == "exp":
            var_term = 1 + 2 * logvar - mu ** 2 - torch.exp(logvar) ** 2
        else:
            var_term = 1 + logvar - mu ** 2 - torch.exp(logvar)
        kl = -(0.5 / n) * var_term.sum(dim=(1, 2)).mean()
        scg_loss = kl - diag_loss
        a = a + gamma.view(-1, 1, 1) * torch.diag_embed(diag)
        adj = normalize_adjacency(a)
        z_hat = gamma.mean() * mu * (1 - logvar)
        return mu, logvar, adj, z_hat, scg_loss


def normalize_adjacency(a: torch.Tensor) -> torch.Tensor:
    """``D^-½ (A + I) D^-½`` with degree = column sum of ``A + I`` plus 1e-5; ``(B, N, N)``."""
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    a = a + eye
    d = torch.rsqrt(a.sum(1) + 1e-5)  # (B, N)
    return d.unsqueeze(2) * a * d.unsqueeze(1)


# --------------------------------------------------------------------------- MICDIR
def _bound(name: str, value, lo: int, hi: int, *, n_min: int | None = None,
           n_max: int | None = None) -> None:
    """``ValueError`` unless ``value`` (an int, or a sequence of ints of length in
    ``[n_min, n_max]``) lies in ``[lo, hi]`` — the size checks of the config classes."""
    vals = value if isinstance(value, (tuple, list)) else (value,)
    if isinstance(value, (tuple, list)) and n_min is not None and not n_min <= len(vals) <= n_max:
        raise ValueError(f"{name} must have {n_min}..{n_max} entries, got {len(vals)}")
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"{name} must be integers in [{lo}, {hi}], got {value!r}")


@dataclass
class MICDIRConfig:
    """Architecture options (all recorded in the weights' metadata).

    ``enc_channels``/``enc_strides`` give one Conv3d + LeakyReLU stage each; the product of strides
    sets the latent size (128³ with strides 1,2,2,2,2,2 in the paper; medvol's 64×80×64 grid uses
    1,2,2,2,2 so the latent is 4×5×4, adaptively pooled to ``nodes`` for the graph).

    ``latent_samples`` (inference only): ``0`` takes the SCG latent ``z = μ`` in eval mode, as
    the released code does; ``K > 0`` runs the graph part (SCG adjacency, both GCN layers) on
    ``K`` draws ``z = μ + σ·ε`` from a fixed-seed generator and averages its output — the
    expectation over the noise the net was trained with, deterministic. Why: training drives
    ``μ`` to ≈ 0 and ``σ`` to ≈ 1 (the KL term), so with ``z = μ`` the adjacency diagonal is
    ≈ 0, the SCG's ``γ = √(1 + 1/mean diag)`` grows ≈ 45× and the residual ``ẑ = γ·μ·(1 −
    log σ²)`` with it, and the adjacency collapses to the identity: the decoder sees a latent
    unlike any it was trained on. Measured on the 10 hippocampus validation pairs (net at 3 000
    steps): Dice 0.682 with ``z = μ`` (BatchNorm re-estimated on that path), 0.756 with
    ``K = 1, 4, 16`` or 64 (training BatchNorm statistics). The graph is 64 nodes: ``K = 8``
    costs well under 1 % of a forward pass.

    ``int_resolution``: ``"half"`` integrates the velocity at half resolution (the released
    code); ``"full"`` integrates it on the full grid, as VoxelMorph does. The shipped
    hippocampus weights (trained with ``"half"``) run with ``"full"``: on the 10 validation pairs
    net Dice 0.816 vs 0.793 (folding 0.055 % vs 0.001 %, SD log|J| 0.97 vs 0.56) — the half-size
    resampling low-passes the velocity and blurs detail the ~3-voxel-thick hippocampus needs.
    Every other shipped weights file keeps ``"half"``.
    """

    enc_channels: tuple = (16, 32, 32, 32, 32)
    enc_strides: tuple = (1, 2, 2, 2, 2)
    dec_channels: int = 32
    head_channels: tuple = (16, 16)
    hidden: int = 9
    gcn_hidden: int = 16
    nodes: tuple = (4, 4, 4)
    scg_dropout: float = 0.2
    gcn_dropout: float = 0.1
    int_steps: int = 7
    half_res_head: bool = True
    std_from_logvar: str = "exp"
    adjacency_act: str = "leaky_relu"
    velocity_act: bool = True
    raw_reshape: bool = True
    latent_samples: int = 0
    int_resolution: str = "half"

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def validate(self) -> "MICDIRConfig":
        """Refuse sizes outside sane bounds (``ValueError``) before anything is allocated."""
        n = len(self.enc_channels)
        _bound("enc_channels", self.enc_channels, 1, 256, n_min=1, n_max=8)
        _bound("enc_strides", self.enc_strides, 1, 4, n_min=n, n_max=n)
        _bound("dec_channels", self.dec_channels, 1, 256)
        _bound("head_channels", self.head_channels, 1, 256, n_min=0, n_max=4)
        _bound("hidden", self.hidden, 1, 256)
        _bound("gcn_hidden", self.gcn_hidden, 1, 256)
        _bound("nodes", self.nodes, 1, 16, n_min=3, n_max=3)
        _bound("int_steps", self.int_steps, 0, 16)
        _bound("latent_samples", self.latent_samples, 0, 64)
        for k in ("scg_dropout", "gcn_dropout"):
            if not 0.0 <= float(getattr(self, k)) < 1.0:
                raise ValueError(f"{k} must be in [0, 1), got {getattr(self, k)}")
        if self.std_from_logvar not in ("exp", "exp_half"):
            raise ValueError("std_from_logvar must be 'exp' or 'exp_half'")
        if self.adjacency_act not in ("leaky_relu", "relu"):
            raise ValueError("adjacency_act must be 'leaky_relu' or 'relu'")
        if self.int_resolution not in ("half", "full"):
            raise ValueError("int_resolution must be 'half' (released code) or 'full'")
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "MICDIRConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown MICDIR config keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _head(cin: int, chans: Sequence[int], velocity_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = cin
    for h in chans:
        layers += [nn.Conv3d(c, h, 3, padding=1), nn.LeakyReLU(0.2)]
        c = h
    layers.append(nn.Conv3d(c, 3, 3, padding=1))
    if velocity_act:
        layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class MICDIR(nn.Module):
    """MICDIR registration network, ``model(fixed, moving) -> dict``.

    Parameters
    ----------
    config : :class:`MICDIRConfig` (or ``None`` for the defaults).

    Forward
    -------
    fixed, moving : ``(B, 1, z, y, x)``, intensities in [0, 1]; each spatial size divisible by the
        product of the encoder strides.

    Returns a dict: ``ddf`` ``(B, 3, z, y, x)`` voxels (dz, dy, dx) — the integrated full-resolution
    field (the one used at inference); ``velocity``; ``warped`` (moving resampled onto fixed);
    ``ddf_half``/``velocity_half`` from the auxiliary half-resolution head (``None`` if disabled);
    ``scg_loss`` (scalar).
    """

    def __init__(self, config: MICDIRConfig | None = None):
        super().__init__()
        cfg = config or MICDIRConfig()
        if len(cfg.enc_channels) != len(cfg.enc_strides) or len(cfg.enc_channels) < 3:
            raise ValueError("enc_channels and enc_strides need the same length (≥ 3)")
        self.config = cfg
        enc = []
        c = 2
        for ch, s in zip(cfg.enc_channels, cfg.enc_strides):
            enc.append(_conv(c, ch, stride=s))
            c = ch
        self.encoder = nn.ModuleList(enc)
        self.scg = SCGBlock(c, cfg.hidden, cfg.nodes, cfg.scg_dropout,
                            std_from_logvar=cfg.std_from_logvar, adjacency_act=cfg.adjacency_act,
                            raw_reshape=cfg.raw_reshape)
        self.gcn1 = GCNLayer(c, cfg.gcn_hidden, cfg.gcn_dropout)
        self.gcn2 = GCNLayer(cfg.gcn_hidden, cfg.hidden, cfg.gcn_dropout)
        dec = []
        cin = cfg.hidden
        skips = list(cfg.enc_channels[:-1])[::-1]  # skip features from deep to shallow
        for sc in skips:
            dec.append(_conv(cin + sc, cfg.dec_channels))
            cin = cfg.dec_channels
        self.decoder = nn.ModuleList(dec)
        self.head = _head(cfg.dec_channels + 1, cfg.head_channels, cfg.velocity_act)
        self.half_head = (_head(cfg.dec_channels, cfg.head_channels, cfg.velocity_act)
                          if cfg.half_res_head else None)
        self._half_index = len(dec) - 2  # the decoder stage at half resolution

    @property
    def divisor(self) -> int:
        p = 1
        for s in self.config.enc_strides:
            p *= int(s)
        return p

    def _graph(self, gx: torch.Tensor):
        """SCG + two GCN layers on the pooled latent; ``(node features, scg_loss)``. In eval mode
        with ``latent_samples = K > 0``: the mean over ``K`` seeded latent draws (see
        :class:`MICDIRConfig`)."""
        k = int(self.config.latent_samples)
        h0 = self.scg.to_nodes(gx)

        def graph(**draw):
            _, _, adj, z_hat, loss = self.scg(gx, **draw)
            return adj @ self.gcn2(self.gcn1(h0, adj), adj) + z_hat, loss

        if self.training or k == 0:
            return graph()
        gen = torch.Generator(device=gx.device).manual_seed(0)
        draws = [graph(sample=True, generator=gen) for _ in range(k)]
        return sum(h for h, _ in draws) / k, draws[-1][1]

    def integrate(self, velocity: torch.Tensor) -> torch.Tensor:
        """The displacement of ``velocity`` (scaling and squaring, ``int_steps``): at half
        resolution (:func:`integrate_half_res`, the released code) or, with ``int_resolution =
        "full"``, on the velocity's own grid (:func:`integrate_svf`, as VoxelMorph's MONAI
        ``DVF2DDF``). Used by :meth:`forward` and by instance optimisation."""
        if self.config.int_resolution == "full":
            return integrate_svf(velocity, self.config.int_steps)
        return integrate_half_res(velocity, self.config.int_steps)

    def velocity(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """The full-resolution velocity field alone (what :meth:`forward` returns as
        ``velocity``), without integrating, warping or the auxiliary half-resolution head: the
        start of instance optimisation, which integrates the velocity itself."""
        return self._decode(fixed, moving)[0]

    def _decode(self, fixed: torch.Tensor, moving: torch.Tensor):
        """``(velocity, half-resolution decoder features, scg_loss)``."""
        if fixed.shape != moving.shape or fixed.dim() != 5 or fixed.shape[1] != 1:
            raise ValueError(f"fixed and moving must both be (B, 1, z, y, x); got "
                             f"{tuple(fixed.shape)} and {tuple(moving.shape)}")
        if any(int(n) % self.divisor for n in fixed.shape[2:]):
            raise ValueError(f"spatial size {tuple(fixed.shape[2:])} must be divisible by {self.divisor}")
        cfg = self.config
        x = torch.cat([fixed, moving], dim=1)
        feats = []
        for stage in self.encoder:
            x = stage(x)
            feats.append(x)
        latent = feats[-1]
        gx = F.adaptive_avg_pool3d(latent, cfg.nodes)
        h, scg_loss = self._graph(gx)
        g = self.scg.from_nodes(h)
        g = F.interpolate(g, size=latent.shape[2:], mode="trilinear", align_corners=False)
        y = g
        half_feat = None
        for i, (stage, skip) in enumerate(zip(self.decoder, feats[:-1][::-1])):
            y = F.interpolate(y, size=skip.shape[2:], mode="trilinear", align_corners=False)
            y = stage(torch.cat([y, skip], dim=1))
            if i == self._half_index:
                half_feat = y
        return self.head(torch.cat([y, fixed], dim=1)), half_feat, scg_loss

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> dict:
        velocity, half_feat, scg_loss = self._decode(fixed, moving)
        ddf = self.integrate(velocity)
        out = {"velocity": velocity, "ddf": ddf, "warped": warp(moving, ddf),
               "scg_loss": scg_loss, "velocity_half": None, "ddf_half": None}
        if self.half_head is not None and half_feat is not None:
            v_half = self.half_head(half_feat)
            out["velocity_half"] = v_half
            out["ddf_half"] = integrate_half_res(v_half, self.config.int_steps)
        return out


def micdir_loss(model_out_xy: dict, model_out_yx: dict, x: torch.Tensor, y: torch.Tensor, *,
                w_ncc: float = 1.2, w_smooth: float = 1.0, w_graph: float = 1.0,
                w_ncc_half: float = 0.5, w_smooth_half: float = 0.5, w_cycle: float = 0.0,
                similarity=None) -> tuple[torch.Tensor, dict]:
    """The released bidirectional MICDIR objective (see module docstring of the reference).

    ``model_out_xy = model(x, y)`` (moving y onto fixed x) and ``model_out_yx = model(y, x)``.
    ``similarity(a, b)`` defaults to :func:`global_ncc` (higher = better). ``w_cycle > 0`` adds the
    explicit inverse-consistency penalty ``‖u_xy + u_yx∘(Id + u_xy)‖²`` (a medvol addition, off by
    default). Returns ``(loss, parts)``.
    """
    sim = similarity or global_ncc
    parts = {}
    f = lambda t: float(t.detach())  # noqa: E731
    s_full = sim(x, model_out_xy["warped"]) + sim(y, model_out_yx["warped"])
    g_full = grad_l2(model_out_xy["ddf"]) + grad_l2(model_out_yx["ddf"])
    scg = model_out_xy["scg_loss"] + model_out_yx["scg_loss"]
    loss = -w_ncc * s_full + w_smooth * g_full + w_graph * scg
    parts.update(sim=f(s_full) / 2, smooth=f(g_full) / 2, scg=f(scg) / 2)
    if model_out_xy.get("ddf_half") is not None:
        half = [max(int(n) // 2, 2) for n in x.shape[2:]]
        xh = F.interpolate(x, size=half, mode="trilinear", align_corners=True)
        yh = F.interpolate(y, size=half, mode="trilinear", align_corners=True)
        s_half = (sim(xh, warp(yh, model_out_xy["ddf_half"]))
                  + sim(yh, warp(xh, model_out_yx["ddf_half"])))
        g_half = grad_l2(model_out_xy["ddf_half"]) + grad_l2(model_out_yx["ddf_half"])
        loss = loss - w_ncc_half * s_half + w_smooth_half * g_half
        parts.update(sim_half=f(s_half) / 2, smooth_half=f(g_half) / 2)
    if w_cycle > 0:
        u, v = model_out_xy["ddf"], model_out_yx["ddf"]
        cyc = ((u + warp(v, u, padding_mode="border")) ** 2).mean() \
            + ((v + warp(u, v, padding_mode="border")) ** 2).mean()
        loss = loss + w_cycle * cyc
        parts["cycle"] = f(cyc) / 2
    parts["loss"] = f(loss)
    return loss, parts
