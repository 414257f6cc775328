"""Instance optimisation: fine-tune a learned net's stationary velocity field on the pair itself.

The strongest Learn2Reg entries start from a network's prediction and then optimise the field
on the pair (e.g. Siebert, Hansen & Heinrich 2021; Mok & Chung's "instance optimisation").
:func:`refine_pair` does that for both of medvol's nets with the same budget:

1. the net predicts its stationary velocity field ``v₀`` (MICDIR: ``out["velocity"]``;
   VoxelMorph: MONAI's backbone output, the field its ``DVF2DDF`` would integrate);
2. ``steps - full_steps`` Adam steps at half resolution (images and velocity resized ×½), then
   the coarse correction is added to ``v₀`` and ``full_steps`` Adam steps at full resolution
   (``full_steps`` defaults to ``steps - steps // 2``; a half-resolution step costs about a
   tenth of a full one with the inverse-consistency term, so ``full_steps=0`` is the fast
   budget);
3. each step integrates ``v`` with the net's own integrator (MICDIR: ``MICDIR.integrate``,
   scaling and squaring at half resolution as released, or at full resolution with
   ``int_resolution = "full"``; VoxelMorph: the recursion of MONAI's ``DVF2DDF``, 7 steps,
   bit-identical, on :func:`medvol.models.micdir.integrate_svf`) and minimises
   ``similarity(fixed, moving∘φ) + w_smooth·‖∇u‖² + w_ic·‖u + u⁻∘φ‖²`` with ``u⁻ = exp(−v)``
   (inverse consistency of the forward and the backward map). Similarity: MONAI's
   ``LocalNormalizedCrossCorrelationLoss`` (kernel 5; computed bit-identically by
   :func:`lncc_loss`) intramodal; intermodal MONAI
   ``GlobalMutualInformationLoss`` (``"mi"``) or the MIND-SSC descriptor distance (``"mind"``,
   :func:`mind_ssc`; Heinrich et al. 2013, the usual Learn2Reg choice for multimodal pairs).

``DEFAULT_REFINE`` (40, half of them at full resolution) is the default of ``medvol register
--refine`` for the learned methods; :func:`default_refine` gives a task's own default where one
was chosen on that task's validation pairs (``TASK_REFINE``; IXI, which has no validation
subject: pairs of training subjects), :func:`default_refine_settings` its Adam step and term
weights (``TASK_SETTINGS``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["DEFAULT_REFINE", "TASK_REFINE", "TASK_SETTINGS", "RefineSettings", "default_grid_mm",
           "default_refine", "default_refine_settings", "default_similarity", "full_res_steps",
           "lncc_loss", "mind_ssc", "predict_velocity", "refine_pair", "refine_arrays"]

DEFAULT_REFINE = 40
# (steps, full-resolution steps) chosen on a task's VALIDATION pairs (never its test pairs):
# hippocampus, 10 val pairs, the 4 400-step nets — the most accurate budget within a fifth of
# demons' time: refine 2 at half resolution (MICDIR 0.794 at 0.27 s vs 0.793 net only; refine 8
# half-res 0.781, refine 40 0.770: LNCC pulls the label-trained fields off the labels); with
# MICDIR integrating at full resolution (2026-12-04) the net alone ranks first for both nets
# (MICDIR 0.816 / refine 2 0.811, VoxelMorph 0.803 / 0.797): kept at 2 so that refinement stays
# on by default (issue 15), `--refine 0` gives the net alone. Re-chosen 2026-12-04 after warp /
# scaling and squaring stopped going through MONAI's Warp layer (bit-identical, refinement steps
# 1.2x faster), by a rule fixed before the sweep (the most accurate budget with refinement on within a
# fifth of demons' time on the 10 validation pairs, same run; docs/registration_issue15.md):
# demons 0.890 s (budget 0.178 s); net 0.8158 at 0.139 s; 1 half-res step lr 0.01 no IC 0.8159
# at 0.163 s (chosen; lr 0.1: 0.8142); 2 steps lr 0.1 with IC (the former default) 0.8114 at
# 0.218 s; 2 steps lr 0.01 0.8155 at 0.188 s; 1 full-res step lr 0.03 0.8160 at 0.250 s. LNCC
# refinement does not improve this label-trained net: the chosen step leaves its field almost
# unchanged
# ixi, 6 ordered pairs of TRAINING subjects (IXI has no validation subject; the pairs are not
# those the test table uses), micdir_ixi: half-resolution steps on the 2.5 mm model grid (5 mm)
# stay at 0.56 whatever their number or step size, the gain is at full resolution; the most
# accurate budget within a fifth of the IXI-tuned demons' time there (DEMONS_TASK["ixi"]: 0.638 at
# 56.7 s, 1 thread): 20 full-resolution steps with the TASK_SETTINGS below, 0.636 at 8.4 s
# (30 steps lr 0.2 0.637 at 11.2 s, within 0.002 but slower; 30 / 40 steps lr 0.3 0.639 / 0.640
# at 12.0 / 15.5 s, over the bar; 8 steps 0.624 at 2.35 s — the default until the demons
# baseline was re-tuned; the general refine 40: 0.634 at 7.89 s)
TASK_REFINE = {"hippocampus": (1, 0), "ixi": (20, 20)}
# Adam step and inverse-consistency weight of a task's own budget (used only when the run's
# (steps, full-res steps) equal TASK_REFINE[task]; any other budget keeps the RefineSettings
# defaults it was measured with), chosen on the same pairs: for a stationary velocity field
# exp(-v) is the inverse of exp(v) up to discretisation, so the IC term left Dice unchanged
# (10 full steps: 0.6120 without vs 0.6121 with) at 54 % of the time; lr 0.3 over 0.1: 0.628
# vs 0.612 at 10 steps; folding stayed 0.0000-0.0001 % (ixi); hippocampus: see TASK_REFINE
TASK_SETTINGS = {"ixi": {"lr": 0.3, "w_ic": 0.0}, "hippocampus": {"lr": 0.01, "w_ic": 0.0}}


def default_refine(task: str | None, steps: int | None = None,
                   full_steps: int | None = None) -> tuple[int, int]:
    """``(steps, full-resolution steps)`` of a learned registration: the caller's values where
    given, else the task's validated default (``TASK_REFINE``), else ``DEFAULT_REFINE`` with
    half of the steps at full resolution (:func:`full_res_steps`)."""
    if steps is None:
        steps, task_full = TASK_REFINE.get(task or "", (DEFAULT_REFINE, None))
        full_steps = task_full if full_steps is None else full_steps
    return int(steps), full_res_steps(steps, full_steps)


def default_refine_settings(task: str | None, steps: int | None = None,
                            full_steps: int | None = None, settings=None) -> "RefineSettings":
    """The caller's ``settings``; else the task's validated ones (``TASK_SETTINGS``) when
    ``(steps, full_steps)`` is the task's own budget (``TASK_REFINE``; ``None``/``None`` means
    that budget); else :class:`RefineSettings` defaults. The settings belong to the budget they
    were chosen with (and to the task's shipped weights and similarity): ``--task ixi --refine
    40`` runs with the defaults its table was measured with."""
    if settings is not None:
        return settings
    if task in TASK_SETTINGS and default_refine(task, steps, full_steps) == default_refine(task):
        return RefineSettings(**TASK_SETTINGS[task])
    return RefineSettings()


# inference/refinement grid spacing (mm) per task, chosen on the task's VALIDATION pairs:
# synth (label-map MICDIR, model grid 3.2 mm), 4 intermodal validation deformations of the
# stroke subject, refine 40: Dice 0.732 (MIND) / 0.685 (MI) on a 2.0 mm grid (the images'
# spacing) vs 0.659 / 0.654 on the 3.2 mm model grid
TASK_GRID_MM = {"synth": 2.0}


def default_grid_mm(task: str | None, grid_mm: float | None = None) -> float | None:
    """The grid spacing a learned registration runs on: the caller's ``grid_mm`` (0 = the
    weights' own model grid), else the task's validated default (``TASK_GRID_MM``), else
    ``None`` (the model grid)."""
    if grid_mm is None:
        return TASK_GRID_MM.get(task or "")
    return float(grid_mm) if float(grid_mm) > 0 else None


# refinement similarity per modality (``register_learned``'s default); intermodal MIND-SSC
# (dilation 1): on the 4 intermodal validation deformations (synth MICDIR, refine 40) Dice 0.732
# vs 0.685 with MI (MONAI GlobalMutualInformationLoss) on the 2 mm grid, 0.659 vs 0.654 on the
# 3.2 mm model grid
MODALITY_SIMILARITY = {"intra": "lncc", "inter": "mind"}


def default_similarity(modality: str) -> str:
    """The refinement similarity of a modality (``MODALITY_SIMILARITY``; intermodal otherwise)."""
    return MODALITY_SIMILARITY.get(modality, MODALITY_SIMILARITY["inter"])


def full_res_steps(steps: int, full_steps: int | None = None) -> int:
    """How many of ``steps`` refinement steps run at full resolution (``None``: the second half,
    ``steps - steps // 2``; otherwise ``full_steps`` clipped to ``[0, steps]``)."""
    steps = int(steps)
    return steps - steps // 2 if full_steps is None else min(max(int(full_steps), 0), steps)


@dataclass
class RefineSettings:
    """Settings of :func:`refine_pair` (recorded in manifests / benchmark tables)."""

    lr: float = 0.1            # Adam step on the velocity (voxels)
    w_smooth: float = 1.0      # weight of the mean squared displacement gradient
    w_ic: float = 0.1          # weight of the inverse-consistency penalty
    lncc_kernel: int = 5
    mind_dilation: int = 1     # MIND-SSC neighbour offset (voxels of the refinement grid)

    def to_dict(self) -> dict:
        return asdict(self)


def _integrator(model):
    """``v -> ddf``: MICDIR's own integrator; for VoxelMorph the recursion of MONAI's
    ``DVF2DDF`` (the net's ``integration_steps``, bilinear, zero padding) on
    :func:`medvol.models.micdir.integrate_svf`, bit-identical to ``model.net.dvf2ddf`` and
    faster, so both nets' refinement steps cost the same per voxel."""
    from ..models.micdir import MICDIR, integrate_svf

    if isinstance(model, MICDIR):
        return model.integrate
    steps = int(model.net.integration_steps)
    return lambda v: integrate_svf(v, steps)


def predict_velocity(model, fixed, moving):
    """The net's stationary velocity field for ``(fixed, moving)`` ``(1, 1, z, y, x)`` tensors,
    and its integrator ``v -> ddf``."""
    import torch

    from ..models.micdir import MICDIR

    with torch.no_grad():
        if isinstance(model, MICDIR):
            v = model.velocity(fixed, moving)
        else:
            v = model.net.backbone(torch.cat([moving, fixed], dim=1))
    return v.detach(), _integrator(model)


# the 12 pairs of 6-neighbourhood offsets that are sqrt(2) apart (orthogonal unit vectors)
_SIX = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
_SSC_PAIRS = [(a, b) for i, a in enumerate(_SIX) for b in _SIX[i + 1:]
              if sum(x * y for x, y in zip(a, b)) == 0]


def mind_ssc(img, radius: int = 1, dilation: int = 2):
    """MIND-SSC descriptor (Heinrich et al., MICCAI 2013) of ``(B, 1, z, y, x)`` images:
    ``(B, 12, z, y, x)`` in (0, 1].

    For each of the 12 pairs ``(p, q)`` of six-neighbourhood offsets ``sqrt(2)`` apart (scaled
    by ``dilation`` voxels), the patch distance ``D = box_{2r+1} * (I(x + p) − I(x + q))²``;
    the descriptor is ``exp(−(D − min_c D) / V)`` with ``V`` the mean over the 12 channels
    (clamped to [10⁻³, 10³] × its image mean). Comparing two images' descriptors (mean squared
    difference) is a modality-independent similarity. Hand-written: neither MONAI nor
    SimpleITK provides MIND; it is a dozen shifted differences and box filters in torch, so it
    runs (and back-propagates) wherever the refinement does.
    """
    import torch
    import torch.nn.functional as F

    d = int(dilation)
    pad = F.pad(img, (d,) * 6, mode="replicate")
    z, y, x = img.shape[2:]

    def shift(o):
        return pad[:, :, d + o[0] * d:d + o[0] * d + z, d + o[1] * d:d + o[1] * d + y,
                   d + o[2] * d:d + o[2] * d + x]

    diff = torch.cat([(shift(a) - shift(b)) ** 2 for a, b in _SSC_PAIRS], dim=1)
    k = 2 * int(radius) + 1
    dist = F.avg_pool3d(F.pad(diff, (int(radius),) * 6, mode="replicate"), k, stride=1)
    dist = dist - dist.min(dim=1, keepdim=True).values
    var = dist.mean(dim=1, keepdim=True)
    m = float(var.mean().detach())
    var = var.clamp(min=m * 1e-3 + 1e-12, max=m * 1e3 + 1e-12)
    return torch.exp(-dist / var)


def lncc_loss(pred, target, kernel: int = 5):
    """MONAI ``LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=kernel)`` (box
    window, ``smooth_nr`` 0, ``smooth_dr`` 1e-5, mean reduction): minus the mean over voxels of
    the squared local correlation ``cross² / (var_t · var_p)`` of ``(B, C, z, y, x)`` tensors,
    window sums by zero-padded separable box filters. The same operations in MONAI's order,
    bit-identical to it, gradients included (``tests/registration/test_refine.py``).

    Hand-written for a stated reason: it is the only part of MICDIR's refinement that needed
    MONAI, and importing MONAI takes 2.5 s on the 2-core CPU, more than ten hippocampus
    registrations (≈ 0.2 s each); a single-pair ``medvol register`` paid it every call."""
    import torch
    import torch.nn.functional as F

    k = int(kernel)
    if k % 2 == 0:
        raise ValueError(f"kernel must be odd, got {k}")
    if pred.shape != target.shape or pred.dim() != 5:
        raise ValueError(f"pred and target must be equal (B, C, z, y, x); got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    c, r = pred.shape[1], (k - 1) // 2
    ones = torch.ones(k).to(pred)

    def box(x, d=2):                  # MONAI's separable_filtering recursion, zero padding
        if d < 0:
            return x
        pad = [0, 0] * 3
        pad[2 * (2 - d)] = pad[2 * (2 - d) + 1] = r
        shape = [1] * 5
        shape[d + 2] = -1
        w = ones.reshape(shape).repeat([c, 1, 1, 1, 1])
        return F.conv3d(box(F.pad(x, pad, mode="constant"), d - 1), w, groups=c)

    # products first and sums in MONAI's order: autograd accumulates pred's gradient in the
    # order the graph was built, so this keeps the gradients bit-identical too
    t2, p2, tp = target * target, pred * pred, target * pred
    vol = torch.tensor(float(k ** 3)).to(pred)
    t_sum, p_sum, t2_sum, p2_sum, tp_sum = box(target), box(pred), box(t2), box(p2), box(tp)
    t_avg, p_avg = t_sum / vol, p_sum / vol
    cross = tp_sum - p_avg * t_sum
    eps = torch.as_tensor(1e-5, dtype=t2_sum.dtype, device=t2_sum.device)
    t_var = torch.max(t2_sum - t_avg * t_sum, eps)
    p_var = torch.max(p2_sum - p_avg * p_sum, eps)
    return torch.mean((cross * cross + 0.0) / (t_var * p_var)).neg()


def _similarity(name: str, kernel: int, dilation: int = 1):
    """``prepare(fixed) -> loss(warped)``: the fixed image is clamped to [0, 1] (and, for
    ``mind``, described by MIND-SSC) once per resolution level, not in every Adam step."""
    # (no warnings.catch_warnings() here: these constructors warn about nothing, and it is not
    # thread-safe — refinement runs in thread-pool flows)
    if name == "lncc":
        def f(pred, target):
            return lncc_loss(pred, target, int(kernel))
    elif name == "mi":
        from monai.losses import GlobalMutualInformationLoss

        f = GlobalMutualInformationLoss(num_bins=23, sigma_ratio=0.5)
    elif name != "mind":
        from ..errors import InputError

        raise InputError(f"unknown refinement similarity {name!r}", hint="use lncc, mi or mind")

    def prepare(fixed):
        fc = fixed.clamp(0, 1)
        if name == "mind":
            fd = mind_ssc(fc, dilation=dilation)

            def mind_loss(warped):
                return ((mind_ssc(warped.clamp(0, 1), dilation=dilation) - fd) ** 2).mean()

            return mind_loss
        return lambda warped: f(warped.clamp(0, 1), fc)

    return prepare


class _Adam:
    """``torch.optim.Adam(params=[p], lr=lr)`` (betas 0.9 / 0.999, eps 1e-8, no weight decay, no
    AMSGrad) for the one velocity tensor: the operations of torch's single-tensor Adam step in
    the same order, bit-identical to it (``tests/registration/test_refine.py``).

    Hand-written for a stated reason: constructing any ``torch.optim`` optimizer first imports
    ``torch._dynamo`` (1.4 s on the 2-core CPU), more than a whole hippocampus registration
    (≈ 0.2 s), and a single-pair ``medvol register`` call would pay it every time."""

    def __init__(self, p, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        import torch

        self.p, self.lr, self.betas, self.eps, self.t = p, float(lr), betas, float(eps), 0
        self.m = torch.zeros_like(p, memory_format=torch.preserve_format)
        self.v = torch.zeros_like(p, memory_format=torch.preserve_format)

    def zero_grad(self) -> None:
        self.p.grad = None

    def step(self) -> None:
        import torch

        b1, b2 = self.betas
        g = self.p.grad
        with torch.no_grad():
            self.t += 1
            self.m.lerp_(g, 1 - b1)
            self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
            step_size = self.lr / (1 - b1 ** self.t)
            denom = (self.v.sqrt() / (1 - b2 ** self.t) ** 0.5).add_(self.eps)
            self.p.addcdiv_(self.m, denom, value=-step_size)


def _optimise(v_init, moving, integrate, sim, steps: int, s: RefineSettings):
    """``steps`` Adam steps on the velocity ``v_init``; ``sim(warped)``: the level's
    similarity loss (its fixed image prepared by :func:`_similarity`)."""
    from ..models.micdir import grad_l2, warp

    v = v_init.clone().requires_grad_(True)
    opt = _Adam(v, lr=float(s.lr))
    for _ in range(int(steps)):
        u = integrate(v)
        loss = sim(warp(moving, u)) + s.w_smooth * grad_l2(u)
        if s.w_ic > 0:
            ub = integrate(-v)
            loss = loss + s.w_ic * ((u + warp(ub, u, padding_mode="border")) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return v.detach()


def refine_pair(model, fixed, moving, *, steps: int = DEFAULT_REFINE, similarity: str = "lncc",
                settings: RefineSettings | None = None, full_steps: int | None = None):
    """Predict and refine: returns ``(ddf (1, 3, z, y, x) voxels, warped (1, 1, z, y, x))``.

    ``fixed``/``moving``: ``(1, 1, z, y, x)`` tensors in [0, 1] on the net's grid.
    ``steps = 0`` returns the net's own prediction (integrated with its own integrator).
    ``full_steps``: how many of the ``steps`` run at full resolution (default: the second half;
    0: all at half resolution).
    """
    import torch
    import torch.nn.functional as F

    from ..models.micdir import resize_field, warp

    s = settings or RefineSettings()
    model.eval()
    v0, integrate = predict_velocity(model, fixed, moving)
    steps = int(steps)
    if steps > 0:
        prepare = _similarity(similarity, s.lncc_kernel, s.mind_dilation)
        with torch.enable_grad():
            n_full = full_res_steps(steps, full_steps)
            n_half = steps - n_full
            v = v0
            if n_half > 0:
                full = v0.shape[2:]
                half = [max(int(n) // 2, 2) for n in full]
                fh = F.interpolate(fixed, size=half, mode="trilinear", align_corners=True)
                mh = F.interpolate(moving, size=half, mode="trilinear", align_corners=True)
                vh0 = resize_field(v0, half)
                vh = _optimise(vh0, mh, integrate, prepare(fh), n_half, s)
                v = v0 + resize_field(vh - vh0, full)
            if n_full > 0:
                v = _optimise(v, moving, integrate, prepare(fixed), n_full, s)
    else:
        v = v0
    with torch.no_grad():
        ddf = integrate(v)
        return ddf, warp(moving, ddf)


def refine_arrays(model, fixed_arr: np.ndarray, moving_arr: np.ndarray, *,
                  steps: int = DEFAULT_REFINE, similarity: str = "lncc",
                  settings: RefineSettings | None = None,
                  full_steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`refine_pair` on ``(z, y, x)`` arrays in [0, 1]; returns ``(ddf (3, z, y, x),
    warped (z, y, x))`` as numpy (the drop-in for :func:`medvol.registration.learned.run_net`)."""
    import torch

    f = torch.as_tensor(np.ascontiguousarray(fixed_arr), dtype=torch.float32)[None, None]
    m = torch.as_tensor(np.ascontiguousarray(moving_arr), dtype=torch.float32)[None, None]
    ddf, warped = refine_pair(model, f, m, steps=steps, similarity=similarity, settings=settings,
                              full_steps=full_steps)
    return ddf[0].numpy(), warped[0, 0].numpy()
