"""``medvol train diffusion``: train the 2D CT-slice diffusion prior (VP/DDPM ε-network) of the
``dds`` and ``mbir`` reconstruction methods, resumable, with optional safetensors export."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def train_diffusion(
    data: Optional[Path] = typer.Option(None, "--data", help="Training-data root (default: "
                                        "$MEDVOL_DATA): DIR/ct/tcga_luad_slices/*.dcm, "
                                        "DIR/ct/totalseg/petct_dicom/*, DIR/dicom/ct_head_ge_tilt/"
                                        "*.dcm, DIR/ct/totalseg/abdomen_ct.nii.gz (any present; "
                                        "ct/totalseg/chest_cta is never read: held out)."),
    runs: Path = typer.Option(Path(".cache/diffusion/runs"), help="Folder of the run folder "
                              "(checkpoints; rerun the same command to resume)."),
    steps: int = typer.Option(4000, help="Optimiser steps in total."),
    batch: int = typer.Option(8, help="Random crops per step."),
    crop: int = typer.Option(48, help="Crop size in pixels of the 3 mm grid (multiple of 8)."),
    lr: float = typer.Option(5e-4, help="Adam learning rate."),
    seed: int = typer.Option(0, help="Seed of the weights and of the crop/noise stream."),
    time_limit: Optional[float] = typer.Option(None, help="Stop (checkpointed) after this many "
                                               "seconds."),
    threads: int = typer.Option(1, help="CPU threads (torch and numba)."),
    export: Optional[Path] = typer.Option(None, help="Folder for diffusion_ct.safetensors, its "
                                          "loss curve and denoising metrics."),
    init: Optional[Path] = typer.Option(None, help="Continue from these diffusion weights "
                                        "(e.g. models/weights/diffusion_ct.safetensors): their "
                                        "config, a fresh optimiser; exported steps add theirs."),
) -> None:
    """Train the slice prior on real CT slices (3 mm/pixel, HU window [-1000, 1000] → [0, 1]).

    Example: medvol train diffusion --data DATA_DIR --steps 4000 --export models/weights
    """
    from .._threads import set_threads
    from ..recon.diffusion_data import train_diffusion as job

    set_threads(max(1, threads))
    res = job(data, runs=runs, steps=steps, batch=batch, crop=crop, lr=lr, seed=seed,
              time_limit_s=time_limit, export=export, progress=lambda s: typer.echo(s),
              init=init)
    typer.echo(f"{res.steps_done} steps ({'finished' if res.finished else 'stopped'}), "
               f"run in {res.run_dir}")
