"""3D reconstruction with a 2D diffusion prior: DDS and a DiffusionMBIR-style sampler.

Both samplers share one slice prior (the VP/DDPM ε-network of :mod:`medvol.models.diffusion`,
trained by ``medvol train diffusion``) and one data-consistency solver (ADMM for
``½‖Ax − y‖² + λ‖D_z x‖₁`` with a CG x-update, :mod:`medvol.recon.admm_tv`). The prior sees the
axial slices of the volume as a batch (chunked); the slices are coupled only through ``A`` and
the TV along z inside the ADMM step. Images are in the prior's units: HU through the window
:data:`~medvol.recon.diffusion_data.HU_WINDOW` → [0, 1], i.e. ``u = μ / (2 μ_water)`` for
attenuation data (exact inside the window).

:func:`dds` — Decomposed Diffusion Sampler (Chung, Lee, Ye, ICLR 2024): ``steps`` DDIM steps
(default 100, chosen on the training volume; the paper uses 50 and 100);
at each, the Tweedie estimate x̂₀ from ε̂ (no back-propagation through the network) is the warm
start of one ADMM iteration with ``n_cg`` CG steps (split and dual persisting), then the DDIM
update with stochasticity ``eta``; the last step returns the data-consistent x̂₀.

:func:`mbir` — DiffusionMBIR-style (Chung, Ryu, McCann, Klasky, Ye, CVPR 2023) **with the VP
prior**: medvol has no VE score network, so the predictor is the ancestral (DDPM) step on a
reduced schedule, the corrector one Langevin step with the VP score ``−ε̂/√(1−ᾱ_t)`` (snr 0.16,
as score_sde), and after every step one ADMM iteration with one CG step runs on the VE-equivalent
iterate ``x_t/√ᾱ_t`` (split and dual persist), ending with the final data-consistency step
``x ← x + Aᵀ(y − Ax)/Aᵀ(A1)``. Reduced steps (default 100 PC steps = 200 network evaluations per
slice, vs. 2000 × 2 in the paper): a documented deviation.

ρ and λ refer to the normalised operator ``A/‖A‖`` (see
:func:`~medvol.recon.admm_tv.normalised_operator`), so they do not depend on pixel size or
number of views. Defaults (both samplers): ρ = 0.03, λ = 1e-3 (soft threshold λ/ρ ≈ 0.033 ≈
67 HU on z-differences), and 100 DDS steps — chosen on the training volume ``abdomen_ct`` at 8
and 4 views by ``benchmarks/diffusion3d.py --tune`` (never on the evaluation volume).
Seeded (same seed → same output on the same device), progress bar, CPU or CUDA.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["DEFAULT_WEIGHTS", "DiffusionPrior", "load_prior", "dds", "mbir", "parallel_operator",
           "unconditional_samples",
           "run_dds", "run_mbir", "diffusion_task"]

DEFAULT_WEIGHTS = "diffusion_ct"
DDS_RHO, DDS_LAM = 0.03, 1e-3      # chosen on the training volume (benchmarks/diffusion3d.py)
DDS_STEPS = 100                    # the same choice (50 or 100; 100 fits 5 min at 128² × 32)
MBIR_RHO, MBIR_LAM = 0.03, 1e-3    # the same values (as --tune sets them)


@dataclass
class DiffusionPrior:
    """The ε-network, its config and ᾱ_t; :meth:`eps` runs it on slices in chunks."""

    model: Any
    config: Any
    abar: Any            # float64 tensor (T,)
    device: Any
    chunk: int = 8

    def eps(self, x, t: int):
        """ε̂ for a stack ``x`` (..., ny, nx) in [-1, 1]-space at timestep ``t`` (no grad)."""
        import torch

        shp = x.shape
        flat = x.reshape(-1, 1, shp[-2], shp[-1]).to(self.device, torch.float32)
        out = []
        with torch.no_grad():
            for i in range(0, flat.shape[0], self.chunk):
                b = flat[i:i + self.chunk]
                tt = torch.full((b.shape[0],), int(t), dtype=torch.long, device=self.device)
                out.append(self.model(b, timesteps=tt))
        return torch.cat(out, 0).reshape(shp).to(x.dtype)


def load_prior(weights: str | None = None, *, device=None,
               chunk: int | None = None) -> DiffusionPrior:
    """Load shipped (``diffusion_ct``) or given ``.safetensors`` weights of the ε-network.

    ``chunk``: slices per network call (bounds memory). Default 8 on the CPU — measured
    fastest there (one thread, 128² slices: 2.4 s per 32 slices at 4–8, 3.8 s at 32, 3.0 s at
    16) — and 64 on CUDA."""
    import torch

    from ..learned.weights import load_weights, shipped_weights
    from ..models.diffusion import DiffusionConfig, alphas_cumprod

    dev = torch.device(device or "cpu")
    if chunk is None:
        chunk = 8 if dev.type == "cpu" else 64
    if chunk < 1:
        raise InputError(f"chunk must be at least 1, got {chunk}")
    name = weights or DEFAULT_WEIGHTS
    path = name if str(name).endswith(".safetensors") else shipped_weights(name)
    model, info = load_weights(path, arch="diffusion", device=str(dev))
    model.eval()
    cfg = DiffusionConfig(**{k: (tuple(v) if isinstance(v, list) else v)
                             for k, v in info.config.items()})
    return DiffusionPrior(model, cfg, alphas_cumprod(cfg), dev, chunk)


def _schedule(T: int, steps: int) -> list[int]:
    if not 1 <= steps <= T:
        raise InputError(f"steps must be between 1 and {T}, got {steps}")
    return [int(round(v)) for v in np.linspace(T - 1, 0, steps)]


def _setup(A, y, normalise: bool):
    import torch

    from .admm_tv import normalised_operator

    y = torch.as_tensor(y)
    if normalise:
        A, y = normalised_operator(A, y)
    ATy = A.T(y)
    return A, y, ATy


def _bar(total: int, desc: str, progress: bool):
    from .iterative import _progress

    return _progress(total, desc, progress)


def _start(A, y, prior: "DiffusionPrior", steps: int, seed: int, circular: bool,
           normalise: bool, tv_axes=("z",)):
    """Shared start of both samplers: normalised problem, seeded generator, timestep schedule,
    x_T ~ N(0, I) shaped like ``A.T(y)`` and a fresh ADMM-TV-z state."""
    import torch

    from .admm_tv import admm_init

    A, y, ATy = _setup(A, y, normalise)
    g = torch.Generator().manual_seed(int(seed))
    ts = _schedule(len(prior.abar), steps)
    x = torch.randn(ATy.shape, generator=g, dtype=torch.float32).to(ATy)
    st = admm_init(torch.zeros_like(ATy), axes=tuple(tv_axes), circular=circular)
    return A, y, ATy, g, ts, x, st


def dds(A, y, prior: DiffusionPrior, *, steps: int = DDS_STEPS, eta: float = 0.85, n_cg: int = 5,
        rho: float = DDS_RHO, lam: float = DDS_LAM, seed: int = 0, circular: bool = False,
        final_dc: bool = False, normalise: bool = True, progress: bool = False,
        tv_axes=("z",)):
    """Decomposed Diffusion Sampler: returns the volume in [0, 1] prior units, shaped like
    ``A.T(y)`` (axis −3 is z; the last two axes are the prior's slices).

    Parameters
    ----------
    A, y : operator (slices as a batch or a 3D projector) and data in prior units.
    prior : :class:`DiffusionPrior`.
    steps : DDIM steps (network evaluations per slice).
    eta : DDIM stochasticity (0 deterministic DDIM; DDS uses 0.85).
    n_cg : CG steps of the one ADMM iteration per step.
    rho, lam : ADMM penalty and TV-z weight (normalised operator).
    seed : seeds the initial noise and the DDIM noise (torch generator on the CPU).
    final_dc : also apply the normalised-Landweber step at the end (off in DDS).
    tv_axes : axes of the TV term in the ADMM step: ``("z",)`` as in the paper (the prior
        regularises the slices), ``("z", "y", "x")`` adds in-plane TV (a medvol option for a
        weak prior).
    """
    import torch

    from .admm_tv import admm_iteration, final_data_consistency

    if not 0.0 <= eta <= 1.0 or n_cg < 1:
        raise InputError(f"need 0 <= eta <= 1 and n_cg >= 1, got eta={eta}, n_cg={n_cg}")
    A, y, ATy, g, ts, x, st = _start(A, y, prior, steps, seed, circular, normalise, tv_axes)
    abar = prior.abar
    with _bar(len(ts), "DDS", progress) as advance:
        for i, t in enumerate(ts):
            a = float(abar[t])
            e = prior.eps(x, t)
            x0 = ((x - math.sqrt(1 - a) * e) / math.sqrt(a)).clamp(-1.0, 1.0)
            u0 = (x0 + 1.0) * 0.5
            admm_iteration(A, y, st, lam=lam, rho=rho, n_cg=n_cg, x_start=u0, ATy=ATy)
            x0 = st.x * 2.0 - 1.0
            if i + 1 < len(ts):
                ap = float(abar[ts[i + 1]])
                z = torch.randn(x.shape, generator=g, dtype=torch.float32).to(x)
                x = (math.sqrt(ap) * x0
                     + math.sqrt(1 - ap) * (eta * z + math.sqrt(1 - eta ** 2) * e))
            advance()
    u = st.x
    if final_dc:
        u = final_data_consistency(A, y, u)
    return u


def mbir(A, y, prior: DiffusionPrior, *, steps: int = 100, snr: float = 0.16, n_cg: int = 1,
         rho: float = MBIR_RHO, lam: float = MBIR_LAM, seed: int = 0, circular: bool = False,
         final_dc: bool = True, normalise: bool = True, progress: bool = False):
    """DiffusionMBIR-style predictor–corrector sampling with the VP prior (see the module
    docstring for the deviations): ``steps`` PC steps, two network evaluations each, one ADMM
    iteration of ``n_cg`` CG steps after every step, final data-consistency step. Returns the
    volume in [0, 1] prior units shaped like ``A.T(y)``."""
    import torch

    from .admm_tv import admm_iteration, final_data_consistency

    A, y, ATy, g, ts, x, st = _start(A, y, prior, steps, seed, circular, normalise)
    abar = prior.abar

    def noise():
        return torch.randn(x.shape, generator=g, dtype=torch.float32).to(x)

    x0 = None
    with _bar(len(ts), "DiffusionMBIR", progress) as advance:
        for i, t in enumerate(ts):
            a = float(abar[t])
            e = prior.eps(x, t)
            x0 = ((x - math.sqrt(1 - a) * e) / math.sqrt(a)).clamp(-1.0, 1.0)
            if i + 1 == len(ts):
                x = x0                              # t = 0: the posterior mean
                ap = 1.0
            else:
                tp = ts[i + 1]
                ap = float(abar[tp])
                beta = 1.0 - a / ap                 # the skipped steps' combined β
                mean = (math.sqrt(ap) * beta / (1 - a)) * x0 \
                    + (math.sqrt(1 - beta) * (1 - ap) / (1 - a)) * x
                var = (1 - ap) / (1 - a) * beta
                x = mean + math.sqrt(max(var, 0.0)) * noise()          # predictor
                # corrector: one Langevin step with the VP score at t_prev
                e2 = prior.eps(x, tp)
                score = -e2 / math.sqrt(1 - ap)
                z = noise()
                sn = float(score.norm())
                step = 2.0 * (1.0 - beta) * (snr * float(z.norm()) / sn) ** 2 if sn > 0 else 0.0
                x = x + step * score + math.sqrt(2 * step) * z
            # data consistency on the VE-equivalent iterate x/√ᾱ (DiffusionMBIR's x_i)
            u = (x / math.sqrt(ap) + 1.0) * 0.5
            admm_iteration(A, y, st, lam=lam, rho=rho, n_cg=n_cg, x_start=u, ATy=ATy)
            x = math.sqrt(ap) * (st.x * 2.0 - 1.0)
            advance()
    u = st.x
    if final_dc:
        u = final_data_consistency(A, y, u)
    return u


def unconditional_samples(prior: DiffusionPrior, n: int = 8, size: int = 64, *, steps: int = 50,
                          eta: float = 0.0, seed: int = 0):
    """``n`` unconditional ``size``² samples in [0, 1] (DDIM, ``steps`` steps) — a sanity
    figure of what the prior has learned."""
    import torch

    g = torch.Generator().manual_seed(int(seed))
    abar = prior.abar
    ts = _schedule(len(abar), steps)
    x = torch.randn(n, size, size, generator=g)
    x0 = x
    for i, t in enumerate(ts):
        a = float(abar[t])
        e = prior.eps(x, t)
        x0 = ((x - math.sqrt(1 - a) * e) / math.sqrt(a)).clamp(-1.0, 1.0)
        if i + 1 < len(ts):
            ap = float(abar[ts[i + 1]])
            z = torch.randn(x.shape, generator=g)
            x = math.sqrt(ap) * x0 + math.sqrt(1 - ap) * (eta * z + math.sqrt(1 - eta ** 2) * e)
    return (x0 + 1.0) * 0.5


def parallel_operator(shape_zyx, spacing_zyx, n_views: int, *, backend: str = "torch",
                      device=None, chunk: int = 16):
    """Parallel-beam operator for a volume ``(nz, ny, nx)``: ``backend="astra"`` builds one
    :class:`~medvol.geometry.ParallelBeam3D` projector (ASTRA CUDA 3D; needs a GPU), otherwise
    the 2D ``ParallelBeam2D`` projector applied to the slices as a batch in chunks of
    ``chunk`` slices (medvol's numba kernels on CPU, torch kernels on CUDA). Views uniform in
    [0, π), detector of the image diagonal (:func:`medvol.simulate.default_parallel_geometry`)."""
    from ..kernels import Projector
    from ..simulate import default_parallel_geometry

    nz, ny, nx = (int(s) for s in shape_zyx)
    sz, sy, sx = (float(s) for s in spacing_zyx)
    if backend == "astra":
        g = default_parallel_geometry((nz, ny, nx), (sz, sy, sx), n_views=n_views)
        return Projector(g, (nz, ny, nx), (sz, sy, sx), backend="astra", device=device)
    g = default_parallel_geometry((ny, nx), (sy, sx), n_views=n_views)
    return fast_slice_operator(Projector(g, (ny, nx), (sy, sx), backend=backend, device=device),
                               chunk)


def fast_slice_operator(A, chunk: int = 16, max_bytes: int = 256 << 20):
    """The fastest exact form of a 2D slice operator on the CPU: its explicit matrix
    (:class:`~medvol.recon.admm_tv.MatrixSliceOperator`) when that fits in ``max_bytes``,
    else the projector in chunks of ``chunk`` slices. Other operators pass through."""
    import math

    from ..kernels import Projector
    from .admm_tv import MatrixSliceOperator, SliceChunked

    if not isinstance(A, Projector) or A.ndim != 2:
        return A
    on_cpu = A.device is None or A.device.type == "cpu"
    if on_cpu and 4 * math.prod(A.domain_shape) * math.prod(A.range_shape) <= max_bytes:
        return MatrixSliceOperator(A)
    return SliceChunked(A, chunk)


# ------------------------------------------------------------------ recon registry entries
def _mu_scale() -> float:
    from ..simulate import MU_WATER_70KEV

    return 2.0 * MU_WATER_70KEV          # u = μ / (2 μ_water) ⇔ HU window [-1000, 1000]


def _run(sampler, A, y, *, weights, progress, n_iter=None, **_):
    import torch

    y = torch.as_tensor(y)
    s = _mu_scale()
    dev = y.device if y.device.type != "cpu" else None
    prior = load_prior(weights, device=dev)
    A = fast_slice_operator(A)
    kw = {"steps": int(n_iter)} if n_iter else {}
    u = sampler(A, y / s, prior, progress=progress, **kw)
    return u * s


def run_dds(A, y, **kw):
    """Registry entry ``dds`` (``n_iter`` = DDIM steps, default :data:`DDS_STEPS`); μ in, μ out."""
    return _run(dds, A, y, **kw)


def run_mbir(A, y, **kw):
    """Registry entry ``mbir`` (``n_iter`` = PC steps, default 100); μ in, μ out."""
    return _run(mbir, A, y, **kw)


def diffusion_task(geometry: str, views: int, full_views: int) -> tuple[int, float]:
    """The prior's grid for simulated acquisitions: 96 × 96 pixels of
    :data:`~medvol.recon.diffusion_data.PIXEL_MM` mm (288 mm field of view)."""
    from .diffusion_data import PIXEL_MM

    return 96, PIXEL_MM
