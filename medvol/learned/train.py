"""Resumable training of PD-UNet and the Learned Primal-Dual baseline.

L1 loss on images scaled by the p99 constant, Adam (lr 1e-3), cosine annealing over the run,
gradient-norm clipping at 1 (as in Adler & Öktem), rotation/flip augmentation with re-simulated
sparse data each step. The step's data depend only on ``(seed, step)``, so a resumed run draws
exactly the batches an uninterrupted run would. Checkpoints (model + optimiser + scheduler +
loss history) go to ``<run_dir>/checkpoint.pt`` (ignored by git); the shipped weights are
exported separately as safetensors by :func:`export`.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError

__all__ = ["train", "default_config", "plot_loss_curve"]


def default_config(arch: str, size: str = "small") -> dict:
    """Model config: ``size="paper"`` (UNet width 32, depth 4) or ``"small"`` (width 16, depth 4;
    the shipped CPU-trained weights)."""
    if arch == "pdunet":
        from medvol.models.pdunet import pdunet_config

        return pdunet_config(width=32 if size == "paper" else 16, depth=4)
    if arch == "lpd":
        return dict(n_iter=10, n_primal=5, n_dual=5, width=32)
    raise InputError(f"unknown architecture {arch!r}; use 'pdunet' or 'lpd'")


def _save_ckpt(path: Path, obj: dict) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def plot_loss_curve(losses: list[tuple[int, float]], path, title: str = "") -> Path:
    """Write a loss-curve PNG (step vs mean L1 of each logging window)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if losses:
        s, v = zip(*losses)
        ax.plot(s, v, lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("L1 loss (image / p99)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def train(task: str, arch: str = "pdunet", *, steps: int = 2000, batch: int = 4,
          lr: float = 1e-3, seed: int = 1701, config: dict | None = None,
          run_dir: str | os.PathLike | None = None, time_limit: float | None = None,
          threads: int = 1, log_every: int = 25, ckpt_every: int = 100,
          export: str | os.PathLike | None = None, overwrite: bool = False,
          images: list | None = None,
          progress: Callable[[str], None] = print) -> dict:
    """Train ``arch`` (``"pdunet"`` | ``"lpd"``) on ``task`` (``"ct_x16"`` | ``"mri_x16"``).

    Parameters
    ----------
    steps : total optimiser steps (also the cosine period).
    batch : slices per step.
    config : model config (default :func:`default_config` ``(arch, "small")``).
    run_dir : checkpoint folder; default ``.cache/pdunet/<arch>_<task>``. Rerunning with the same
        folder resumes from the last checkpoint.
    time_limit : stop (after checkpointing) once this many seconds have passed in this call.
    threads : torch intra-op threads.
    images : training slices ``(N, N)`` to use instead of the task's default real data (e.g.
        from :func:`medvol.learned.data.volume_slices` of your own Volumes).
    export : write the final weights as safetensors here (metadata ``finished`` says whether
        the run reached ``steps``).

    Returns
    -------
    dict with ``step``, ``finished``, ``losses`` (list of ``(step, mean L1)``), ``seconds``.
    """
    import torch

    from .data import ct_slices, get_task, image_scale, make_batch, mri_slices
    from ._legacy_weights import build_model, save_weights

    torch.set_num_threads(int(threads))
    t_task = get_task(task)
    cfg = dict(config) if config is not None else default_config(arch)
    run = Path(run_dir) if run_dir is not None else Path(".cache") / "pdunet" / f"{arch}_{task}"
    run.mkdir(parents=True, exist_ok=True)
    if images is not None:
        imgs = [np.asarray(im, dtype=np.float32) for im in images]
        if not imgs or any(im.shape != (t_task.image_size,) * 2 for im in imgs):
            raise InputError(f"images must be a non-empty list of {t_task.image_size}² slices")
    elif t_task.modality == "ct":
        imgs = ct_slices("train", t_task.image_size)
    else:
        imgs = mri_slices("train", t_task.image_size)
    scale = image_scale(imgs)
    torch.manual_seed(seed)
    model = build_model(arch, cfg, image_scale=scale)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(steps))
    op = t_task.operator()
    if arch == "lpd":
        op.norm()
    ck = run / "checkpoint.pt"
    step, losses, elapsed_before = 0, [], 0.0
    meta = dict(task=t_task.to_dict(), arch=arch, config=cfg, steps=int(steps), batch=int(batch),
                lr=float(lr), seed=int(seed), image_scale=scale, n_train_slices=len(imgs))
    if ck.exists():
        st = torch.load(ck, weights_only=True)
        old = json.loads(st["meta"])
        if old["config"] != cfg or old["task"] != meta["task"] or old["steps"] != meta["steps"]:
            raise InputError(f"checkpoint {ck} was made with a different config/task/steps",
                             hint="use another --run-dir or delete the checkpoint")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        step = int(st["step"])
        losses = [tuple(x) for x in st["losses"].tolist()]
        elapsed_before = float(st.get("elapsed", 0.0))
        progress(f"resumed {arch}/{task} at step {step}/{steps}")
    model.train()
    t0 = time.time()
    window: list[float] = []

    def checkpoint():
        _save_ckpt(ck, dict(model=model.state_dict(), opt=opt.state_dict(),
                            sched=sched.state_dict(), step=step,
                            losses=torch.tensor(losses, dtype=torch.float64).reshape(-1, 2),
                            meta=json.dumps(meta), elapsed=elapsed_before + time.time() - t0))

    stopped = False
    while step < steps:
        rng = np.random.default_rng([seed, step])
        y, gt = make_batch(t_task, imgs, rng, batch, op)
        y_t, gt_t = torch.from_numpy(y), torch.from_numpy(gt)
        x0 = None
        if arch == "pdunet":
            with torch.no_grad():
                x0 = op.fbp(y_t)
        pred = model(y_t, op, x0)
        loss = torch.nn.functional.l1_loss(pred / scale, gt_t / scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        window.append(loss.item())
        if step % log_every == 0 or step == steps:
            losses.append((step, float(np.mean(window))))
            window = []
            el = time.time() - t0
            progress(f"{arch}/{task} step {step}/{steps} L1 {losses[-1][1]:.4f} "
                     f"lr {sched.get_last_lr()[0]:.2e} {el:.0f}s")
        if step % ckpt_every == 0:
            checkpoint()
        if time_limit is not None and time.time() - t0 > time_limit and step < steps:
            stopped = True
            break
    checkpoint()
    plot_loss_curve(losses, run / "loss_curve.png", f"{arch} {task}")
    total = elapsed_before + time.time() - t0
    result = dict(step=step, finished=step >= steps, losses=losses, seconds=total,
                  run_dir=str(run), image_scale=scale)
    if export is not None and step > 0:
        save_weights(model.eval(), export, arch=arch, task=t_task.to_dict(), overwrite=overwrite,
                     extra=dict(steps=step, batch=batch, lr=lr, seed=seed, image_scale=scale,
                                train_seconds=round(total, 1), final_l1=losses[-1][1] if losses else None,
                                finished=step >= steps,
                                n_train_slices=len(imgs)))
        progress(f"exported {export}")
    if stopped:
        progress(f"stopped at step {step}/{steps} (time limit); rerun to resume")
    return result


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("task")
    ap.add_argument("--arch", default="pdunet")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--export")
    ap.add_argument("--time-limit", type=float)
    a = ap.parse_args()
    r = train(a.task, a.arch, steps=a.steps, batch=a.batch, export=a.export,
              time_limit=a.time_limit, overwrite=True,
              progress=lambda s: print(s, flush=True))
    print(json.dumps({k: v for k, v in r.items() if k != "losses"}))
