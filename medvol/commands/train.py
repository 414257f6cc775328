"""``medvol train``: train learned models (``medvol train micdir``, ``medvol train pdunet``)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(help="Train learned models with resumable checkpoints.", no_args_is_help=True)


def _register_pdunet() -> None:
    from .train_pdunet import train_pdunet

    app.command("pdunet")(train_pdunet)


_register_pdunet()


@app.command("micdir")
def train_micdir(
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
) -> None:
    """Train MICDIR (and the VoxelMorph baseline) on known-deformation MRI pairs.

    Example: medvol train micdir --steps 500 --modality intra --export weights/
    """
    from ..registration.train import _main

    argv = ["--steps", str(steps), "--batch", str(batch), "--lr", str(lr), "--seed", str(seed),
            "--w-cycle", str(w_cycle), "--runs", str(runs), "--device", device]
    for m in model:
        argv += ["--model", m]
    for m in modality:
        argv += ["--modality", m]
    if time_limit is not None:
        argv += ["--time-limit", str(time_limit)]
    if init is not None:
        argv += ["--init", str(init)]
    if export is not None:
        argv += ["--export", str(export)]
    raise typer.Exit(_main(argv))
