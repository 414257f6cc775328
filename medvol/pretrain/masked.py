"""Masked-volume reconstruction: the simple self-supervised baseline VoCo is compared against.

A whole MONAI BasicUNet (``mvr_cnn``, the same encoder as ``voco_cnn``) sees a volume with random
``block³`` cubes zeroed (``mask_ratio`` of them) and reconstructs the original; the loss is the L1
error on the masked voxels (the in-painting pretext of Models Genesis / SwinUNETR pre-training,
reduced to one term). Same data, region, optimiser and training-time budget as
:func:`medvol.pretrain.voco.pretrain_voco`; only its encoder is transferred downstream.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

__all__ = ["block_mask", "pretrain_masked"]


def block_mask(shape: Sequence[int], block: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask (True = hidden) of ``shape``: each ``block³`` cell hidden with prob. ``ratio``."""
    cells = [int(np.ceil(n / block)) for n in shape]
    m = rng.random(cells) < ratio
    m = m.repeat(block, 0).repeat(block, 1).repeat(block, 2)
    return m[:shape[0], :shape[1], :shape[2]]


def pretrain_masked(data=None, *, sources: Sequence[str] = ("hippocampus",),
                    model_config: dict | None = None, region: Sequence[int] = (32, 48, 32),
                    batch: int = 2, block: int = 8, mask_ratio: float = 0.5, lr: float = 1e-4,
                    weight_decay: float = 1e-5, steps: int = 3000, run_dir="runs/mvr",
                    time_limit_s: float | None = None, export=None, overwrite: bool = False,
                    seed: int = 0, progress=True, checkpoint_every: int = 100,
                    device: str = "cpu") -> dict:
    """Pre-train the baseline (resumable from ``run_dir``); returns a summary dict.
    ``device``: ``cpu``, ``cuda`` or ``auto`` (masks are drawn on the CPU)."""
    import torch

    from ..errors import InputError
    from ..learned.registry import build_model, config_to_dict
    from ..learned.trainer import peak_gpu_mib, resolve_device, save_loss_curve, train_loop
    from ..learned.weights import save_weights
    from . import models as _models  # noqa: F401
    from .data import unlabelled_pool

    if not 2 <= block <= 32 or not 0 < mask_ratio < 1 or not 1 <= batch <= 64:
        raise InputError("block must be in [2, 32], mask_ratio in (0, 1), batch in [1, 64]")
    device = resolve_device(device)
    vols, _ = unlabelled_pool(data, sources, region=region)
    net, cfg = build_model("mvr_cnn", model_config)
    net = net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay, amsgrad=True)
    run_cfg = {"arch": "mvr_cnn", "model": config_to_dict(cfg), "region": list(region),
               "batch": batch, "block": block, "mask_ratio": mask_ratio, "lr": lr,
               "sources": list(sources), "volumes": len(vols)}

    def step_fn(step, rng):
        idx = rng.integers(0, len(vols), batch)
        x = torch.from_numpy(vols[idx])[:, None].to(device)
        m = torch.from_numpy(np.stack([block_mask(x.shape[2:], block, mask_ratio, rng)
                                       for _ in idx]))[:, None].to(device)
        y = net(x.masked_fill(m, 0.0))
        loss = (y - x).abs()[m].mean()
        return {"loss": loss}

    t0 = time.perf_counter()
    res = train_loop(run_dir, model=net, optimizer=opt, step_fn=step_fn, steps=steps, seed=seed,
                     checkpoint_every=checkpoint_every, time_limit_s=time_limit_s,
                     progress=progress, config=run_cfg)
    out = {"steps": res.steps_done, "train_s": round(res.train_s, 1),
           "wall_s": round(time.perf_counter() - t0, 1), "volumes": len(vols),
           "final_loss": float(np.mean([h["loss"] for h in res.history[-50:]]))
           if res.history else None, "device": device}
    if (peak := peak_gpu_mib(device)) is not None:
        out["peak_gpu_mib"] = peak
    if export is not None:
        save_weights(export, net, arch="mvr_cnn", config=cfg, task="masked-reconstruction",
                     data={"sources": list(sources), "volumes": len(vols)},
                     extra={k: v for k, v in run_cfg.items() if k != "model"} | {
                         "steps": res.steps_done, "train_s": out["train_s"]},
                     overwrite=overwrite)
        save_loss_curve(res.history, str(export)[:-len(".safetensors")] + "_loss.png"
                        if str(export).endswith(".safetensors") else str(export) + "_loss.png",
                        title="masked-volume reconstruction", smooth=25)
        out["export"] = str(export)
    return out
