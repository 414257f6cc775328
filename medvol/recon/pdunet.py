"""PD-UNet / Learned Primal-Dual: inference for CT sinograms and radial MRI k-space, and training.

The networks (:mod:`medvol.models.pdunet`) call ``model(sinogram, A)`` with ``A`` a
:class:`medvol.kernels.Projector` whose ``fbp`` hook (:attr:`Projector.pinv`) is the Hann FBP
of :func:`medvol.recon.fbp.fbp` — :func:`pdunet_operator` / :func:`attach_fbp` set it up; no
second operator class. Weights go through the one learned-model stack
(:func:`medvol.learned.load_weights`; shipped names ``pdunet_ct_x16``, ``pdunet_mri_x16``,
``lpd_ct_x16``, ``lpd_mri_x16``), training through :func:`medvol.learned.train_loop`.

Training (:func:`train_pdunet`): L1 loss on images scaled by the p99 constant (optionally plus
``ssim_weight`` · (1 − SSIM), MONAI's ``SSIMLoss`` with the benchmarks' Gaussian window), Adam
(lr 1e-3), cosine annealing over the run, gradient-norm clipping at 1 (as in Adler & Öktem),
rotation/flip augmentation with re-simulated sparse data each step (:mod:`medvol.recon.pdunet_data`).
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import GeometryError, InputError, OutputExistsError, WeightsError

__all__ = ["pdunet_reconstruct", "pdunet_reconstruct_kspace", "kspace_to_model_input",
           "pdunet_operator", "attach_fbp", "task_operator", "load_pdunet", "default_config",
           "train_pdunet", "PRETRAINED", "ARCHS", "weights_for_modality", "default_refine",
           "REFINE_DEFAULTS"]

log = logging.getLogger("medvol.recon.pdunet")

PRETRAINED = ("pdunet_ct_x16", "pdunet_mri_x16", "lpd_ct_x16", "lpd_mri_x16")
ARCHS = ("pdunet", "lpd")
FBP_FILTER = "hann"

REFINE_DEFAULTS: dict[str, tuple[int, float]] = {"pdunet_ct_x16": (20, 0.1)}
"""Shipped weights → ``(iterations, relative λ)`` of the TV refinement run after the network
(:func:`pdunet_reconstruct` ``refine``). ``pdunet_ct_x16``: λ = 0.1 is the weight chosen for
TV itself on the training patients (``benchmarks/pdunet_classical.json``); 20 iterations is the
speed budget (≈ the network's own time again, keeping the whole ≥ 20× faster than that TV) and,
on 16 training-patient slices, the iteration count ≤ 20 and λ ∈ {0.03, 0.1, 0.3} with the
highest PSNR whose SSIM is not below the network's (+0.85 dB, +0.0009 SSIM; fixed before the
held-out patients were scored: ``docs/pdunet_issue14.md``). Weights not listed: no refinement."""


# --------------------------------------------------------------------------- operator
def attach_fbp(A, filter: str = FBP_FILTER):
    """Give the Projector ``A`` its FBP hook (``A.fbp(y)`` = Hann FBP, differentiable w.r.t.
    ``y``) unless it has one; returns ``A``."""
    if getattr(A, "pinv", None) is None and hasattr(A, "geometry"):
        from .fbp import fbp

        A.pinv = functools.partial(fbp, A, filter=filter)
    return A


def pdunet_operator(geometry, image_shape, spacing=(1.0, 1.0), *, backend: str = "torch",
                    device=None):
    """The operator PD-UNet/LPD call: a 2D :class:`medvol.kernels.Projector` with the Hann-FBP
    hook (torch backend by default, as in training)."""
    from medvol.kernels import Projector

    return attach_fbp(Projector(geometry, tuple(image_shape), tuple(spacing), backend=backend,
                                device=device, check_finite=False))


def task_operator(task):
    """:func:`pdunet_operator` on a :class:`medvol.recon.pdunet_data.Task`'s sparse geometry and grid."""
    return attach_fbp(task.projector())


# --------------------------------------------------------------------------- weights
def load_pdunet(weights: str | os.PathLike = "pdunet_ct_x16", *, device: str = "cpu"):
    """Load PD-UNet/LPD weights by shipped name or ``.safetensors`` path → ``(model, info)``."""
    from ..learned.weights import load_weights, shipped_weights

    w = str(weights)
    if w in PRETRAINED or not w.endswith(".safetensors"):
        if w not in PRETRAINED:
            raise WeightsError(f"unknown pretrained model {w!r}; choose one of "
                               f"{', '.join(PRETRAINED)} or give a .safetensors path")
        p = shipped_weights(w)
    else:
        p = Path(w)
    model, info = load_weights(p, device=device)
    if info.arch not in ARCHS:
        raise WeightsError(f"weights are for {info.arch!r}, not PD-UNet/LPD", path=p,
                           hint="give pdunet_* / lpd_* weights")
    return model, info


@functools.lru_cache(maxsize=8)
def _cached(name: str):
    return load_pdunet(name)


def weights_for_modality(modality: str | None, arch: str = "pdunet") -> str:
    """The shipped weights for an input modality: CT (DICOM ``CT``, HU volumes, sinograms) →
    ``<arch>_ct_x16``; MR (radial k-space) → ``<arch>_mri_x16``."""
    if arch not in ARCHS:
        raise InputError(f"unknown architecture {arch!r}; use 'pdunet' or 'lpd'")
    return f"{arch}_{'mri' if str(modality or '').upper() in ('MR', 'MRI') else 'ct'}_x16"


def _check_task(info, A, what: str, modality: str | None = None) -> None:
    """One warning line when the input differs from what the weights were trained on (grid,
    geometry/sinogram shape, modality), with what to do."""
    task = info.task if isinstance(info.task, dict) else {}
    n = task.get("image_size")
    shape = tuple(A.domain_shape)
    if len(shape) != 2:
        raise GeometryError(f"{what}: PD-UNet reconstructs 2D slices; got an operator on {shape}")
    fix = ("reconstruct on the weights' grid (medvol recon resamples volumes to it), or retrain "
           "for your acquisition with `medvol train pdunet`")
    trained = task.get("modality")
    if modality and trained and (str(modality).upper() in ("MR", "MRI")) != (trained == "mri"):
        log.warning("%s: the input is %s but the weights were trained on %s — expect degraded "
                    "results; use --weights %s", what, modality, trained.upper(),
                    weights_for_modality(modality, info.arch))
    if n and shape != (n, n):
        log.warning("%s: weights were trained on %dx%d images, the input grid is %dx%d — expect "
                    "degraded results; %s", what, n, n, shape[0], shape[1], fix)
    name = task.get("name")
    if name:
        from .pdunet_data import TASKS

        t = TASKS.get(name)
        if t is not None:
            g = t.geometry()
            if (type(g) is not type(A.geometry)
                    or tuple(g.sino_shape) != tuple(A.geometry.sino_shape)):
                log.warning("%s: weights were trained for %s sinograms of %s (views, bins), the "
                            "input is %s %s — expect degraded results; %s", what,
                            type(g).__name__, g.sino_shape, type(A.geometry).__name__,
                            tuple(A.geometry.sino_shape), fix)


# --------------------------------------------------------------------------- inference
def default_refine(weights: str | os.PathLike | None) -> tuple[int, float]:
    """``(iterations, relative λ)`` of the TV refinement for ``weights`` (:data:`REFINE_DEFAULTS`;
    ``(0, 0.1)`` for weights without a stated default, e.g. a user's own file)."""
    return REFINE_DEFAULTS.get(str(weights), (0, 0.1))


def refine_tv(A, y, x0, *, n_iter: int, lam: float, progress: bool = False, callback=None):
    """A few TV-PDHG iterations (:func:`medvol.recon.iterative.tv_pdhg`, x ≥ 0) started from the
    network's output ``x0``, on the measured data ``y``: data consistency the network alone does
    not enforce. ``lam`` is relative (× the 99.5th percentile of the Hann FBP of ``y``, the rule
    of :func:`medvol.recon.registry.tv_lambda`). The dual variables start at zero: started at
    their fixed-point values (``p = A x0 − y``) the first steps overshoot badly (SSIM 0.93 →
    0.45 on training slices), because ``x0`` is not a TV minimiser. ``callback(it, x)`` as in
    :func:`~medvol.recon.iterative.tv_pdhg` (the benchmark scores every iteration count)."""
    import torch

    from .iterative import tv_pdhg
    from .registry import tv_lambda

    with torch.inference_mode():
        lam_solver = tv_lambda(lam, attach_fbp(A).fbp(y))
        return tv_pdhg(A, y, lam=lam_solver, n_iter=int(n_iter), nonneg=True, x0=x0,
                       progress=progress, op_norm=float(A.norm()), callback=callback)


def pdunet_reconstruct(A, y, *, weights: str = "pdunet_ct_x16", batch: int = 8,
                       modality: str | None = None, refine: int | None = None,
                       refine_lam: float | None = None, progress: bool = False):
    """Reconstruct 2D slices from (sparse) sinograms with a pretrained PD-UNet (or LPD),
    optionally followed by ``refine`` TV-PDHG iterations from its output (:func:`refine_tv`).

    Parameters
    ----------
    A : :class:`medvol.kernels.Projector`
        Operator of the measured (sparse) geometry on a 2D grid, e.g.
        ``Projector(task.geometry(), (128, 128), (1.953, 1.953))`` for ``pdunet_ct_x16``; its
        FBP hook is attached if missing (:func:`attach_fbp`).
    y : torch tensor or ndarray ``(views, n_det)`` or ``(B, views, n_det)``
        Line integrals (CT: μ·mm with μ in 1/mm).
    weights : shipped name (``pdunet_ct_x16``, ``pdunet_mri_x16``, ``lpd_ct_x16``,
        ``lpd_mri_x16``) or a ``.safetensors`` path.
    batch : slices per forward pass.
    modality : the input's modality (``CT``/``MR``), if known: a mismatch with the weights'
        training modality is warned about (one line, with the weights to use).
    refine, refine_lam : TV refinement iterations (0: the network alone) and its relative λ;
        None: the weights' default (:func:`default_refine`: 20 and 0.1 for ``pdunet_ct_x16``,
        none for the others).

    Returns
    -------
    ``(ny, nx)`` / ``(B, ny, nx)`` images in the training units (CT: μ in 1/mm), same type
    (torch/numpy) as ``y``.

    Raises
    ------
    WeightsError
        Missing, corrupted or mismatched weights.
    GeometryError
        The sinogram does not fit the operator.
    """
    import torch

    n_ref, lam_ref = default_refine(weights)
    n_ref = n_ref if refine is None else int(refine)
    if n_ref < 0:
        raise InputError(f"refine must be >= 0 iterations, got {refine}")
    model, info = _cached(str(weights))
    _check_task(info, A, "pdunet_reconstruct", modality)
    is_np = not isinstance(y, torch.Tensor)
    yt = torch.as_tensor(np.asarray(y, dtype=np.float32)) if is_np else y.detach().float().cpu()
    want = tuple(A.geometry.sino_shape)
    if yt.dim() < 2 or tuple(yt.shape[-2:]) != want:
        raise GeometryError(f"sinogram shape {tuple(yt.shape)} does not end with the operator's "
                            f"(views, n_det) = {want}")
    lead = yt.shape[:-2]
    flat = yt.reshape(-1, *want)
    op = attach_fbp(A)
    outs = []
    with torch.inference_mode():
        for i in range(0, flat.shape[0], int(batch)):
            outs.append(model(flat[i:i + int(batch)], op))
    out = torch.cat(outs)
    if n_ref:
        # all slices at once (one λ from the whole input's FBP, as for TV on a volume)
        out = refine_tv(op, flat, out, n_iter=n_ref, progress=progress,
                        lam=lam_ref if refine_lam is None else float(refine_lam))
    out = out.reshape(*lead, *A.domain_shape)
    return out.numpy() if is_np else out


def kspace_to_model_input(kspace, trajectory, *, image_size: int | None = None,
                          pixel: float = 1.0, backend: str = "torch", device: str | None = None):
    """Radial k-space → ``(sinogram, Projector)`` for the PD-UNet: the Fourier-slice sinogram
    of :func:`medvol.mri.kspace_sinogram_operator` with the FBP hook attached (the shipped MRI
    weights were trained with ``backend="torch"``)."""
    from ..mri.radial import kspace_sinogram_operator

    sino, A = kspace_sinogram_operator(kspace, trajectory, image_size=image_size, pixel=pixel,
                                       backend=backend, device=device)
    return sino, attach_fbp(A)


def pdunet_reconstruct_kspace(kspace, trajectory, *, weights: str = "pdunet_mri_x16",
                              image_size: int | None = None, pixel: float = 1.0) -> np.ndarray:
    """Reconstruct from undersampled radial k-space ``(spokes, n_read)`` (or ``(B, …)``).

    The k-space is turned into a magnitude sinogram (:func:`medvol.mri.kspace_to_sinogram`) on
    the ParallelBeam2D geometry of the spoke angles, then reconstructed by
    :func:`pdunet_reconstruct`. ``image_size`` defaults to ``n_read // 2`` (2× oversampled
    readout). The shipped ``pdunet_mri_x16`` expects 16 uniform spokes over π (every 16th of
    256) with 256 readout samples and images normalised to max 1.
    """
    sino, A = kspace_to_model_input(kspace, trajectory, image_size=image_size, pixel=pixel)
    return pdunet_reconstruct(A, sino, weights=weights, modality="MR")


# --------------------------------------------------------------------------- training
def default_config(arch: str, size: str = "small") -> dict:
    """Model config: ``size="paper"`` (UNet width 32, depth 4) or ``"small"`` (width 16, depth 4;
    the shipped CPU-trained weights). LPD: Adler & Öktem's 10 iterations, width 32."""
    if arch == "pdunet":
        if size not in ("small", "paper"):
            raise InputError(f"unknown size {size!r}; use small or paper")
        return dict(width=32 if size == "paper" else 16, depth=4, n_primal=4, n_dual=5,
                    n_iter=2, dual_width=32)
    if arch == "lpd":
        return dict(n_iter=10, n_primal=5, n_dual=5, width=32)
    raise InputError(f"unknown architecture {arch!r}; use 'pdunet' or 'lpd'")


def train_pdunet(task: str = "ct_x16", arch: str = "pdunet", *,
                 data: str | os.PathLike | None = None, steps: int = 1500, batch: int = 4,
                 lr: float = 1e-3, size: str = "small", config: dict | None = None,
                 seed: int = 1701, run_dir: str | os.PathLike | None = None,
                 time_limit_s: float | None = None, threads: int = 1, log_every: int = 25,
                 checkpoint_every: int = 100, export: str | os.PathLike | None = None,
                 overwrite: bool = False, images: list | None = None,
                 init: str | os.PathLike | None = None, noise_i0: float | None = None,
                 p_noise: float = 0.0, ssim_weight: float = 0.0,
                 sources: Sequence[str] | None = None,
                 progress: bool | Callable[[str], None] = True):
    """Train (or resume) PD-UNet or the LPD baseline on a ×16 task — the job behind
    ``medvol train pdunet`` and the ``medvol-train-pdunet`` flow.

    Parameters
    ----------
    task : ``"ct_x16"`` (fan-beam CT, 23 of 360 views) | ``"mri_x16"`` (radial MRI, 16 of 256
        spokes).
    arch : ``"pdunet"`` | ``"lpd"``.
    data : training-data root (else ``$MEDVOL_DATA``); the training split of the task's
        many-patient cohort is read (:mod:`medvol.recon.pdunet_cohort`: CT from
        ``ct/tcga_luad_slices``, ``ct/totalseg``; MRI from ``mri/ixi10/t1``, ``mri/stroke``).
        Not needed when ``images`` is given.
    steps : total optimiser steps (also the cosine period). batch : slices per step.
    size : ``small`` (width 16, the shipped weights) | ``paper`` (width 32); ``config``
        overrides it with a full config dict.
    run_dir : checkpoint folder (default ``.cache/pdunet/<arch>_<task>``); rerunning resumes.
    time_limit_s : stop (checkpointed) after this many seconds.
    export : write the weights here (``.safetensors``) when the call ends.
    images : training slices ``(N, N)`` instead of the task's real data.
    init : start from these weights (shipped name or ``.safetensors`` path; same arch) instead of
        a random initialisation (their ``image_scale`` is kept).
    noise_i0, p_noise : CT only — a fraction ``p_noise`` of the training sinograms gets Poisson
        transmission noise at ``noise_i0`` photons per ray.
    ssim_weight : loss = L1 + ``ssim_weight`` · (1 − SSIM) on images / p99 (MONAI ``SSIMLoss``,
        Gaussian window 11, σ 1.5 — the window the benchmarks score with; data range 1). 0 (the
        default) is the plain L1 of the paper; the run config records the weight only when it is
        set, so runs without it resume as before.
    sources : CT only — train on these cohort sources only (a subset of
        :data:`medvol.recon.pdunet_cohort.CT_SOURCES`, e.g. without ``synth_head`` to repeat the
        runs made before the synthetic heads existed); default all. Recorded in the run config
        and the weights' metadata only when given.

    Returns
    -------
    :class:`medvol.learned.TrainResult` (``extra``: ``image_scale``, ``export``, ``loss_curve``).
    """
    import torch

    from .pdunet_data import get_task, image_scale, make_batch
    from ..learned.registry import build_model, config_to_dict
    from ..learned.trainer import save_loss_curve, train_loop
    from ..learned.weights import save_weights
    from ..models.pdunet import LPD_NORM_ITERS

    t_task = get_task(task)
    if arch not in ARCHS:
        raise InputError(f"unknown architecture {arch!r}; use 'pdunet' or 'lpd'")
    if export is not None:
        export = Path(export)
        if export.suffix != ".safetensors":
            raise InputError(f"--export {export}: weights are written as .safetensors only")
        if export.exists() and not overwrite:
            raise OutputExistsError("weights file exists", path=export,
                                    hint="pass --overwrite or choose another path")
    if int(steps) < 1 or int(batch) < 1:
        raise InputError(f"steps and batch must be >= 1 (got {steps}, {batch})")
    if not (0.0 <= float(ssim_weight) <= 100.0):
        raise InputError(f"ssim_weight must be in [0, 100], got {ssim_weight}")
    from .._threads import set_threads

    set_threads(int(threads))     # torch and the numba projector that re-simulates the sinograms
    if sources is not None:      # one order for the cohort, the run config and the metadata
        sources = tuple(sorted(set(sources)))
    if images is not None:
        imgs = [np.asarray(im, dtype=np.float32) for im in images]
        if not imgs or any(im.shape != (t_task.image_size,) * 2 for im in imgs):
            raise InputError(f"images must be a non-empty list of {t_task.image_size}² slices")
        split_rows = None
    else:
        from .pdunet_cohort import cohort_slices, ct_subjects, mri_subjects

        if t_task.modality == "ct":
            subs = ct_subjects(data, size=t_task.image_size, split="train", sources=sources)
        elif sources is not None:
            raise InputError(f"sources selects CT cohort sources; task {task} is MRI",
                             hint="leave --sources out for mri_x16")
        else:
            subs = mri_subjects(data, size=t_task.image_size, split="train")
        imgs = cohort_slices(subs)
        split_rows = [s.row() for s in subs]
    scale = image_scale(imgs)
    run = Path(run_dir) if run_dir is not None else Path(".cache") / "pdunet" / f"{arch}_{task}"
    torch.manual_seed(int(seed))
    if init is not None:
        model, init_info = load_pdunet(init)
        if init_info.arch != arch:
            raise WeightsError(f"init weights are {init_info.arch!r}, not {arch!r}",
                               hint=f"give {arch}_* weights to --init")
        from ..learned.registry import get_model_spec

        cfg = get_model_spec(arch).config_cls(**init_info.config)
        scale = float(model.image_scale)
        model.train()
    else:
        model, cfg = build_model(arch, config if config is not None
                                 else default_config(arch, size))
        with torch.no_grad():
            model.image_scale.fill_(scale)
    opt = torch.optim.Adam(model.parameters(), lr=float(lr))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(steps))
    op = task_operator(t_task)
    if arch == "lpd":
        op.norm(n_iter=LPD_NORM_ITERS)
    w_ssim = float(ssim_weight)
    ssim_loss = None
    if w_ssim > 0:
        from monai.losses import SSIMLoss

        ssim_loss = SSIMLoss(spatial_dims=2, data_range=1.0, win_size=11, kernel_sigma=1.5)

    def step_fn(step: int, rng: np.random.Generator) -> dict:
        # the batch depends only on (seed, step), as in the runs that made the shipped weights
        y, gt = make_batch(t_task, imgs, np.random.default_rng([int(seed), step]), int(batch), op,
                           noise_i0=noise_i0, p_noise=float(p_noise))
        y_t, gt_t = torch.from_numpy(y), torch.from_numpy(gt)
        x0 = None
        if arch == "pdunet":
            with torch.no_grad():
                x0 = op.fbp(y_t)
        pred = model(y_t, op, x0)
        p, g = pred / scale, gt_t / scale
        l1 = torch.nn.functional.l1_loss(p, g)
        if ssim_loss is None:
            return {"loss": l1}
        s_term = ssim_loss(p[:, None], g[:, None])
        return {"loss": l1 + w_ssim * s_term, "l1": l1.detach(),
                "one_minus_ssim": s_term.detach()}

    run_config = dict(task=t_task.to_dict(), arch=arch, config=config_to_dict(cfg),
                      steps=int(steps), batch=int(batch), lr=float(lr), seed=int(seed),
                      image_scale=scale, n_train_slices=len(imgs),
                      init=None if init is None else str(init),
                      noise_i0=noise_i0, p_noise=float(p_noise))
    if ssim_loss is not None:
        run_config["ssim_weight"] = w_ssim
    if sources:
        run_config["sources"] = list(sources)
    res = train_loop(run, model=model, optimizer=opt, scheduler=sched, step_fn=step_fn,
                     steps=int(steps), seed=int(seed), checkpoint_every=int(checkpoint_every),
                     time_limit_s=time_limit_s, log_every=int(log_every), grad_clip=1.0,
                     progress=progress, config=run_config)
    curve = save_loss_curve(res.history, run / "loss_curve.png", keys=("loss",),
                            title=f"{arch} {task}: " + (
                                "L1 (image / p99)" if ssim_loss is None
                                else f"L1 + {w_ssim:g} (1 - SSIM)"),
                            smooth=int(log_every),
                            log_y=True)
    res.extra.update(image_scale=scale, loss_curve=str(curve), export=None)
    if export is not None and res.steps_done > 0:
        last = res.history[-min(len(res.history), int(log_every)):]
        from .pdunet_cohort import CT_SOURCES

        save_weights(export, model.eval(), arch=arch, config=cfg, task=t_task.to_dict(),
                     data={"task": task, "split": "train", "n_train_slices": len(imgs),
                           "read": "images" if images is not None else
                           [CT_SOURCES[k] for k in sources] if sources else
                           list(t_task.data_needs),
                           "subjects": split_rows,
                           **({"sources": list(sources)} if sources else {})},
                     metrics={"final_l1": float(np.mean([h.get("l1", h["loss"]) for h in last]))},
                     extra=dict(steps=res.steps_done, batch=int(batch), lr=float(lr),
                                seed=int(seed), image_scale=scale, init=run_config["init"],
                                noise_i0=noise_i0, p_noise=float(p_noise),
                                ssim_weight=w_ssim, train_seconds=round(res.train_s, 1),
                                finished=res.finished),
                     overwrite=overwrite)
        res.extra["export"] = str(export)
        if progress:
            (print if progress is True else progress)(f"exported {export}")
    return res
