"""Prefect flow for VoCo pre-training: resumable, so a scheduled run continues where it stopped.

Deployment entrypoint ``flows/pretrain.py:voco_pretrain``. The one task calls the library job
:func:`medvol.pretrain.voco.pretrain_voco` (the same as ``medvol pretrain voco``); ``time_limit``
(s) stops after a checkpoint. Imports are absolute so Prefect can load this file by path.
"""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

__all__ = ["voco_pretrain"]


@task(name="voco-pretrain", cache_policy=NO_CACHE)
def _pretrain_task(data, sources, arch, settings, steps, run_dir, time_limit, export, overwrite,
                   seed, device="auto"):
    from medvol.pretrain.voco import pretrain_voco

    return pretrain_voco(data, sources=sources, arch=arch, settings=settings, steps=steps,
                         run_dir=run_dir, time_limit_s=time_limit, export=export,
                         overwrite=overwrite, seed=seed, progress=False, device=device)


@flow(name="medvol-voco-pretrain", log_prints=True)
def voco_pretrain(data: str | None = None, sources: list[str] | None = None,
                  arch: str = "voco_cnn", settings: dict | None = None, steps: int = 3000,
                  run_dir: str = "runs/voco", time_limit: float | None = None,
                  export: str | None = None, overwrite: bool = False, seed: int = 0,
                  device: str = "auto") -> dict:
    """Pre-train (or resume) a VoCo backbone; returns the job's summary dict."""
    return _pretrain_task(data, list(sources or ["hippocampus"]), arch, settings, steps, run_dir,
                          time_limit, export, overwrite, seed, device)
