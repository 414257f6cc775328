"""Training of MICDIR and VoxelMorph on the issue-15 data sets (``hippocampus``, ``ixi``, ``synth``).

:func:`train_task` trains (or resumes) one run per model in ``<runs>/<task>_<model>`` through
the one training loop (:func:`medvol.learned.train_loop`), advancing the runs in lockstep so
both nets always have the same number of steps, then exports ``<model>_<task>.safetensors``
(:func:`medvol.learned.save_weights`). Objective per pair, both directions with shared weights
(the MICDIR objective, :func:`medvol.models.micdir.micdir_loss`), plus the label-supervised
Dice loss (:func:`medvol.registration.datasets.dice_loss` on the warped one-hot labels) when
``w_dice > 0``:

``hippocampus``
    real inter-patient pairs of training subjects (:class:`~.datasets.HippocampusPairs`);
    global NCC (weight 1.2, half-res 0.5) + smoothness + SCG + ``w_dice`` × Dice (default 1).
``ixi``
    every ordered pair of the 7 IXI training subjects, affinely pre-aligned and on the intramodal
    model grid exactly as at inference (:func:`~.datasets.ixi_training_pairs`, cached in the
    runs folder), random left-right flips (:class:`~.datasets.IXIPairs`); NCC as
    ``hippocampus`` + ``w_dice`` × Dice over 32 parcellation labels drawn per step. Meant to
    start from the ``intra`` weights (``--init intra``).
``synth``
    SynthMorph-style synthetic pairs from label maps (:class:`~.datasets.LabelMapSynth`); the
    network never sees a real image. Image similarity off (weights 0, as in SynthMorph);
    ``w_dice`` × Dice (default 1) + smoothness + SCG. Used for intermodal registration
    (contrast-agnostic).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

from ..errors import InputError

__all__ = ["EXPORT_INT_RESOLUTION", "TASKS", "train_task", "task_meta"]

TASKS = {
    "hippocampus": {"w_ncc": 1.2, "w_ncc_half": 0.5, "w_dice": 1.0, "modality": "intra",
                    "similarity": "ncc"},
    "ixi": {"w_ncc": 1.2, "w_ncc_half": 0.5, "w_dice": 1.0, "modality": "intra",
            "similarity": "ncc"},
    "synth": {"w_ncc": 0.0, "w_ncc_half": 0.0, "w_dice": 1.0, "modality": "inter",
              "similarity": "dice (label maps)"},
}
# MICDIR velocity integration written into exported configs, chosen on the task's VALIDATION
# pairs: hippocampus, 10 val pairs, the shipped 4 400-step net alone: Dice 0.816 integrated at
# full resolution vs 0.793 at half (folding 0.055 % vs 0.001 %); other tasks keep "half"
EXPORT_INT_RESOLUTION = {"hippocampus": "full"}


def task_meta(task: str) -> dict:
    """The ``task`` metadata of exported weights (model grid, modality, similarity)."""
    from .datasets import (HIPPO_CROP, HIPPO_OFFSET, IXI_GRID, IXI_SPACING, SYNTH_GRID,
                           SYNTH_SPACING)

    t = TASKS[task]
    if task == "hippocampus":
        return {"dataset": "hippocampus", "modality": "intra", "similarity": t["similarity"],
                "grid_shape": list(HIPPO_CROP), "grid_spacing_mm": 1.0,
                "box_offset_in_64": list(HIPPO_OFFSET)}
    if task == "ixi":
        return {"dataset": "ixi10", "modality": "intra", "similarity": t["similarity"],
                "grid_shape": list(IXI_GRID), "grid_spacing_mm": IXI_SPACING,
                "prealign": "affine (SimpleITK, correlation)"}
    return {"dataset": "synthseg_label_maps", "modality": "inter", "similarity": t["similarity"],
            "grid_shape": list(SYNTH_GRID), "grid_spacing_mm": SYNTH_SPACING}


class _Run:
    def __init__(self, name, model, opt, sampler, cfg, out, seed, n_labels):
        self.name, self.model, self.opt, self.sampler = name, model, opt, sampler
        self.cfg, self.out, self.seed, self.n_labels = cfg, out, seed, n_labels
        self.result = None

    def step_fn(self, step, rng):
        from ..models.micdir import micdir_loss, warp
        from .datasets import dice_loss, one_hot

        drop = self.cfg.get("lr_drop")
        for g in self.opt.param_groups:  # step schedule from the absolute step: resume-safe
            g["lr"] = self.cfg["lr"] * (self.cfg["lr_drop_factor"]
                                        if drop is not None and step >= drop else 1.0)
        self.sampler.gen.manual_seed(int(rng.integers(0, 2 ** 62)))
        x, y, lx, ly = self.sampler.sample(1)
        oxy, oyx = self.model(x, y), self.model(y, x)
        loss, parts = micdir_loss(oxy, oyx, x, y, w_ncc=self.cfg["w_ncc"],
                                  w_ncc_half=self.cfg["w_ncc_half"])
        if self.cfg["w_dice"] > 0:
            hx, hy = one_hot(lx, self.n_labels), one_hot(ly, self.n_labels)
            d = dice_loss(warp(hy, oxy["ddf"]), hx) + dice_loss(warp(hx, oyx["ddf"]), hy)
            loss = loss + self.cfg["w_dice"] * d
            parts["dice_loss"] = float(d.detach()) / 2
        parts["loss"] = loss
        return parts


def _sampler(task, data, seed, cache_dir):
    from .datasets import (IXI_DICE_LABELS, HippocampusPairs, IXIPairs, LabelMapSynth,
                           ixi_training_pairs, load_hippocampus, load_label_maps)

    if task == "hippocampus":
        return HippocampusPairs(load_hippocampus(data, "train"), seed=seed), 3
    if task == "ixi":
        pairs = ixi_training_pairs(data, cache=Path(cache_dir) / "ixi_train_pairs.npz",
                                   progress=lambda m: print(m, flush=True))
        return IXIPairs(pairs, seed=seed), IXI_DICE_LABELS + 1
    maps = load_label_maps(data, "train", cache=Path(cache_dir) / "synth_train_maps.npy")
    s = LabelMapSynth(maps, seed=seed)
    return s, s.n_groups


class _XY:
    """Adapter: ``sample(b) -> (fixed, moving)`` for BatchNorm recalibration."""

    def __init__(self, s):
        self.s = s

    def sample(self, b=1):
        return self.s.sample(b)[:2]


def train_task(task: str, *, data=None, models: Sequence[str] = ("micdir", "voxelmorph"),
               steps: int = 400, lr: float = 5e-4, w_dice: float | None = None, seed: int = 0,
               runs: str | os.PathLike = ".cache/registration/runs15",
               time_limit_s: float | None = None, export: str | os.PathLike | None = None,
               ckpt_every: int = 20, log_every: int = 10, bn_pairs: int = 24,
               init: str | None = None, lr_drop: int | None = None, latent_samples: int = 8,
               lr_drop_factor: float = 0.2, int_resolution: str | None = None,
               train_int_resolution: str = "half",
               progress: bool | Callable[[str], None] = True) -> dict:
    """Train (or resume) ``models`` on ``task`` (``hippocampus`` | ``ixi`` | ``synth``) in lockstep.

    ``w_dice``: weight of the label-supervised Dice loss (``None``: the task's default; 0 gives
    the plain unsupervised objective for ``hippocampus``). ``time_limit_s``: stop (all runs at
    the same step, checkpointed) once exceeded. ``init``: warm start every net from its shipped
    weights ``<model>_<init>.safetensors`` (e.g. ``intra``; fresh optimiser; ignored on resume).
    ``lr_drop``: from this (0-based) step on, the learning rate is ``lr × lr_drop_factor`` (a
    one-step schedule computed from the absolute step, so a resumed run follows it exactly; the
    keys join the run config only when set). ``latent_samples``: stored in exported MICDIR
    configs (:class:`medvol.models.micdir.MICDIRConfig`; 0 = the released ``z = μ`` inference
    path, then with ``bn_pairs`` training pairs re-estimating BatchNorm on it).
    ``int_resolution``: the velocity integration stored in exported MICDIR configs (``None``: the
    task's validated choice, ``EXPORT_INT_RESOLUTION``, else ``"half"``).
    ``train_int_resolution``: how MICDIR integrates while training — ``"half"`` (default) as the
    released code and as every shipped file was first trained, also when warm-started from a
    file exported with ``"full"``; ``"full"`` trains on the field that full-resolution inference
    uses (the key joins the run config only then, so earlier runs resume unchanged). ``export``:
    folder for ``<model>_<task>.safetensors`` + ``<task>_histories.json``. Returns
    ``{"models": rows, "exported": paths}``.
    """
    import torch

    from ..learned.registry import build_model
    from ..learned.trainer import train_loop
    from ..learned.weights import save_weights

    if task not in TASKS:
        raise InputError(f"unknown registration task {task!r}", hint=f"use {', '.join(TASKS)}")
    cfg = dict(TASKS[task])
    cfg["lr"] = float(lr)
    if lr_drop is not None:
        if int(lr_drop) < 0 or not 0 < float(lr_drop_factor) <= 1:
            raise InputError(f"lr_drop must be >= 0 and lr_drop_factor in (0, 1], got "
                             f"{lr_drop} and {lr_drop_factor}")
        cfg["lr_drop"], cfg["lr_drop_factor"] = int(lr_drop), float(lr_drop_factor)
    if w_dice is not None:
        cfg["w_dice"] = float(w_dice)
    if train_int_resolution not in ("half", "full"):
        raise InputError(f"train_int_resolution must be 'half' or 'full', got "
                         f"{train_int_resolution!r}")
    if task == "synth" and cfg["w_dice"] <= 0:
        raise InputError("the synth task needs the Dice loss (w_dice > 0)")
    torch.set_num_threads(int(os.environ.get("MEDVOL_TRAIN_THREADS", "1")))
    runs = Path(runs)
    jobs = []
    for i, m in enumerate(models):
        sampler, n_lab = _sampler(task, data, seed, runs)
        torch.manual_seed(int(seed))
        if init:
            from .learned import load_model

            net, _ = load_model(m, init)
        else:
            net, _ = build_model(m)
        run_cfg = dict(cfg)
        if hasattr(net.config, "int_resolution"):       # MICDIR: half as released, or full
            net.config.int_resolution = train_int_resolution
            if train_int_resolution == "full":           # only then: old runs resume unchanged
                run_cfg["train_int_resolution"] = "full"
        opt = torch.optim.Adam(net.parameters(), lr=float(lr))
        jobs.append(_Run(m, net, opt, sampler, run_cfg, runs / f"{task}_{m}", seed, n_lab))
    t0 = time.perf_counter()
    target = 0
    while target < int(steps):
        if time_limit_s is not None and time.perf_counter() - t0 > float(time_limit_s):
            break
        target = min(int(steps), target + int(ckpt_every))
        for j in jobs:
            tag = f"[{task}/{j.name}] "
            j.result = train_loop(j.out, model=j.model, optimizer=j.opt, step_fn=j.step_fn,
                                  steps=target, seed=seed, checkpoint_every=ckpt_every,
                                  log_every=log_every, grad_clip=10.0,
                                  progress=(lambda s, t=tag: print(t + s, flush=True))
                                  if progress else False,
                                  config={"task": task, "model": j.name, "init": init,
                                          **j.cfg})
    rows, exported = [], []
    hist = {j.name: j.result.history if j.result else [] for j in jobs}
    for j in jobs:
        steps_done = j.result.steps_done if j.result else 0
        train_s = j.result.train_s if j.result else 0.0
        rows.append({"model": j.name, "task": task, "steps": steps_done,
                     "seconds": round(train_s, 1)})
        if export is not None:
            import copy

            from .train import recalibrate_batchnorm

            net = copy.deepcopy(j.model)
            if hasattr(net.config, "latent_samples"):   # MICDIR: how its graph latent is read
                net.config.latent_samples = int(latent_samples)
                net.config.int_resolution = (int_resolution
                                             or EXPORT_INT_RESOLUTION.get(task, "half"))
                net.config.validate()
            # z = μ needs BatchNorm statistics of that path; sampled latents keep the training ones
            recal = bn_pairs and not getattr(net.config, "latent_samples", 0)
            if recal:
                smp, _ = _sampler(task, data, 777, runs)
            nbn = recalibrate_batchnorm(net, _XY(smp), bn_pairs) if recal else 0
            net.eval()
            from .datasets import splits

            meta = task_meta(task)
            sp = splits()[meta["dataset"]]          # the split file is keyed by data set
            p = Path(export) / f"{j.name}_{task}.safetensors"
            Path(export).mkdir(parents=True, exist_ok=True)
            save_weights(p, net, arch=j.name, config=net.config, task=meta,
                         data={"dataset": task, "train_subjects": sp["train"],
                               "split_file": "medvol/registration/splits.json"},
                         extra={"train": {"steps": steps_done, "seed": seed,
                                          "batch": 1, "optimizer": "Adam", "grad_clip": 10.0,
                                          "init": f"{j.name}_{init}.safetensors" if init else None,
                                          **j.cfg},
                                "steps_done": steps_done, "train_seconds": round(train_s, 1),
                                "bn_recalibrated_pairs": bn_pairs if nbn else 0,
                                "device": "cpu"}, overwrite=True)
            exported.append(str(p))
    if export is not None:
        (Path(export) / f"{task}_histories.json").write_text(json.dumps(hist))
    return {"models": rows, "exported": exported}


if __name__ == "__main__":  # pragma: no cover - background training entry point
    import argparse

    ap = argparse.ArgumentParser(description="train MICDIR + VoxelMorph on an issue-15 task")
    ap.add_argument("task", choices=sorted(TASKS))
    ap.add_argument("--data", default=None)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--w-dice", type=float, default=None)
    ap.add_argument("--runs", default=".cache/registration/runs15")
    ap.add_argument("--time-limit", type=float, default=None)
    ap.add_argument("--export", default=None)
    ap.add_argument("--models", default="micdir,voxelmorph")
    ap.add_argument("--init", default=None)
    ap.add_argument("--lr-drop", type=int, default=None,
                    help="from this step on train at lr x --lr-drop-factor")
    ap.add_argument("--lr-drop-factor", type=float, default=0.2)
    ap.add_argument("--ckpt-every", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0,
                    help="pair stream and initialisation seed (a warm-started continuation "
                         "takes a new one to see new pairs)")
    ap.add_argument("--latent-samples", type=int, default=8,
                    help="MICDIR export: seeded SCG latent draws averaged at inference (0: z = mu "
                         "as the released code, with --bn-pairs BatchNorm re-estimation)")
    ap.add_argument("--int-resolution", choices=("half", "full"), default=None,
                    help="MICDIR export: velocity integration at inference (default: the task's "
                         "validated choice, full for hippocampus, else half as released)")
    ap.add_argument("--train-int-resolution", choices=("half", "full"), default="half",
                    help="MICDIR's velocity integration while training (default half, as "
                         "released; full: the field full-resolution inference uses)")
    ap.add_argument("--bn-pairs", type=int, default=24,
                    help="MICDIR export with --latent-samples 0: training pairs for the BatchNorm "
                         "re-estimation under the z = mu path (0: keep the training statistics)")
    a = ap.parse_args()
    r = train_task(a.task, data=a.data, models=a.models.split(","), steps=a.steps, lr=a.lr,
                   w_dice=a.w_dice, seed=a.seed, runs=a.runs, time_limit_s=a.time_limit,
                   export=a.export, init=a.init,
                   lr_drop=a.lr_drop, lr_drop_factor=a.lr_drop_factor, ckpt_every=a.ckpt_every,
                   log_every=a.ckpt_every, bn_pairs=a.bn_pairs, latent_samples=a.latent_samples,
                   int_resolution=a.int_resolution,
                   train_int_resolution=a.train_int_resolution)
    print(json.dumps(r["models"]))
