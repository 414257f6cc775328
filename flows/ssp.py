"""Prefect flows for SparseSSP: resumable training and prediction from an OME-TIFF stack.

Deployment entrypoints ``flows/ssp.py:ssp_train`` and ``flows/ssp.py:ssp_predict``. Each calls the
library function (:func:`medvol.ssp.train.run_training`, :func:`medvol.ssp.predict.predict_stack`)
in one task; ``time_limit`` (s) stops training after a checkpoint, so a scheduled run continues
where the last one stopped. Imports are absolute so Prefect can load this file by path.
"""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

__all__ = ["ssp_train", "ssp_predict"]


@task(name="ssp-train", cache_policy=NO_CACHE)
def _train_task(data, task_name, arch, ratio, steps, run_dir, time_limit, export, overwrite, seed):
    from medvol.ssp.train import run_training

    return run_training(data, task=task_name, arch=arch, ratio=ratio, steps=steps,
                        run_dir=run_dir, time_limit_s=time_limit, export=export,
                        overwrite=overwrite, seed=seed)


@task(name="ssp-predict", cache_policy=NO_CACHE)
def _predict_task(stack, output, ratio, weights, tl_channel, sparse_input, overwrite):
    from medvol.ssp.predict import predict_stack

    return predict_stack(stack, output, ratio=ratio, weights=weights, tl_channel=tl_channel,
                         sparse_input=sparse_input, overwrite=overwrite)


@flow(name="medvol-ssp-train", log_prints=True)
def ssp_train(data: str | None = None, task_name: str = "isl", arch: str = "sparsessp",
              ratio: int = 4, steps: int = 1000, run_dir: str = "runs/ssp",
              time_limit: float | None = None, export: str | None = None,
              overwrite: bool = False, seed: int = 0) -> str:
    """Train (or resume) a SparseSSP / fnet-style model; returns the one-line summary."""
    return _train_task(data, task_name, arch, ratio, steps, run_dir, time_limit, export,
                       overwrite, seed)


@flow(name="medvol-ssp-predict", log_prints=True)
def ssp_predict(stack: str, output: str, ratio: int = 4, weights: str | None = None,
                tl_channel: str | None = None, sparse_input: bool = False,
                overwrite: bool = False) -> dict:
    """Predict fluorescence from a transmitted-light OME-TIFF into ``output``."""
    return _predict_task(stack, output, ratio, weights, tl_channel, sparse_input, overwrite)
