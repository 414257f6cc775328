"""``medvol train pdunet``: train PD-UNet (or the Learned Primal-Dual baseline) for sparse-view CT
or radial MRI, resumable, with a loss-curve PNG and optional safetensors export."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import comma_list


def train_pdunet(
    data: Optional[Path] = typer.Option(None, "--data", help="Training-data root (default: "
                                        "$MEDVOL_DATA). The training patients of the task's "
                                        "cohort are read: ct_x16 DIR/ct/tcga_luad_slices, "
                                        "DIR/ct/totalseg, DIR/mri/synthseg_label_maps "
                                        "(synthetic head CT); mri_x16 DIR/mri/ixi10/t1, "
                                        "DIR/mri/stroke (split by patient, see "
                                        "medvol.recon.pdunet_cohort)."),
    task: str = typer.Option("ct_x16", help="ct_x16 (fan-beam CT, 23 of 360 views) or mri_x16 "
                             "(radial MRI, 16 of 256 spokes)."),
    arch: str = typer.Option("pdunet", help="pdunet | lpd (Learned Primal-Dual baseline)."),
    steps: int = typer.Option(1500, help="Optimiser steps (also the cosine-annealing period)."),
    batch: int = typer.Option(4, help="Slices per step."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    size: str = typer.Option("small", help="small (UNet width 16, the shipped weights) or paper "
                             "(width 32, depth 4)."),
    seed: int = typer.Option(1701, help="Seed of the weights and of the augmentation stream."),
    run_dir: Optional[Path] = typer.Option(None, help="Checkpoint folder (default "
                                           ".cache/pdunet/<arch>_<task>); rerun to resume."),
    time_limit: Optional[float] = typer.Option(None, help="Stop (checkpointed) after this many "
                                               "seconds."),
    threads: int = typer.Option(1, help="CPU threads of torch and of the numba projectors."),
    export: Optional[Path] = typer.Option(None, help="Write the weights here (.safetensors)."),
    overwrite: bool = typer.Option(False, help="Replace an existing --export file."),
    init: Optional[str] = typer.Option(None, help="Start from these weights (shipped name or "
                                       ".safetensors path, same --arch)."),
    noise_i0: Optional[float] = typer.Option(None, help="CT: photons per ray of the Poisson "
                                             "noise added to a fraction --p-noise of the "
                                             "training sinograms."),
    p_noise: float = typer.Option(0.0, help="CT: fraction of noisy training sinograms."),
    ssim_weight: float = typer.Option(0.0, help="Loss = L1 + this x (1 - SSIM) (Gaussian "
                                      "window sigma 1.5, as the benchmark scores); 0 = plain L1."),
    sources: Optional[str] = typer.Option(None, help="ct_x16: comma-separated cohort sources "
                                          "to train on (default all: tcga_luad, chest_cta, "
                                          "petct, synth_head); e.g. tcga_luad,chest_cta,petct "
                                          "repeats the runs made before synth_head existed."),
) -> None:
    """Train PD-UNet / LPD on many patients' real CT or MRI slices (rotation, flip, zoom and
    intensity augmentation; sparse data re-simulated every step).

    Example: medvol train pdunet --data DATA_DIR --task ct_x16 --steps 1500
    --export weights/pdunet_ct_x16.safetensors
    """
    from ..recon.pdunet import train_pdunet as job

    res = job(task, arch, data=data, steps=steps, batch=batch, lr=lr, size=size, seed=seed,
              run_dir=run_dir, time_limit_s=time_limit, threads=threads, export=export,
              overwrite=overwrite, init=init, noise_i0=noise_i0, p_noise=p_noise,
              ssim_weight=ssim_weight,
              sources=comma_list(sources) or None,
              progress=lambda s: typer.echo(s))
    typer.echo(f"{'finished' if res.finished else 'paused'} at step {res.steps_done}; "
               f"loss curve: {res.extra['loss_curve']}")
