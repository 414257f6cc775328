"""``medvol ssp``: SparseSSP — fluorescence from sparse transmitted-light z-slices.

``medvol ssp train --data DIR`` trains on the ISL phase/fluorescence field (or the 3D SURROGATE);
``medvol ssp predict STACK --ratio 4 -o OUT`` predicts from an OME-TIFF stack.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="SparseSSP: predict fluorescence from every r-th transmitted-light "
                       "z-slice (ECCV 2024).", no_args_is_help=True)


@app.command("train")
def train(
    data: Optional[Path] = typer.Option(None, help="Data root holding microscopy/"
                                        "isl_phase_fluorescence (else env MEDVOL_DATA). Not "
                                        "needed for --task surrogate."),
    task: str = typer.Option("isl", help="isl (real paired phase/fluorescence, 2D target) or "
                             "surrogate (3D head on a SURROGATE input)."),
    arch: str = typer.Option("sparsessp", help="sparsessp or fnet3d (dense baseline, ratio 1)."),
    ratio: int = typer.Option(4, help="Keep every r-th z-slice: 2, 4 or 8 (1 = dense)."),
    steps: int = typer.Option(1000, help="Total optimiser steps (a rerun resumes)."),
    run_dir: Path = typer.Option(Path(".cache/ssp/runs/run"), "--run-dir",
                                 help="Checkpoint folder (rerun the same command to resume)."),
    time_limit: Optional[float] = typer.Option(None, help="Stop (checkpointed) after this many "
                                               "seconds."),
    export: Optional[Path] = typer.Option(None, help="Write the trained weights to this "
                                          ".safetensors file (with validation metrics)."),
    overwrite: bool = typer.Option(False, help="Replace an existing --export file."),
    seed: int = typer.Option(0, help="Seed of crops and initial weights."),
) -> None:
    """Train a SparseSSP (or fnet-style) model; resumable from --run-dir.

    Example: medvol ssp train --data DATA_DIR --ratio 4 --steps 1000 --export r4.safetensors
    """
    from ..errors import InputError
    from ..ssp.train import run_training

    if task not in ("isl", "surrogate"):
        raise InputError(f"--task must be isl or surrogate, got {task!r}")
    summary = run_training(data, task=task, arch=arch, ratio=ratio, steps=steps,
                           run_dir=run_dir, time_limit_s=time_limit, export=export,
                           overwrite=overwrite, seed=seed)
    typer.echo(summary)


@app.command("predict")
def predict(
    stack: Path = typer.Argument(..., help="OME-TIFF stack (TL channel + optional fluorescence "
                                 "channels; physical sizes in the OME metadata)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder (prediction.ome.tif, "
                                "prediction_<channel>.nrrd, manifest.json)."),
    ratio: int = typer.Option(4, help="Sparse ratio r: keep z[::r] (2, 4, 8; 1 = dense)."),
    weights: Optional[str] = typer.Option(None, help="Shipped weights name or .safetensors file "
                                          "(default: the ISL model for --ratio)."),
    tl_channel: Optional[str] = typer.Option(None, help="Transmitted-light channel (index or "
                                             "name; default: a channel named TL/bright/phase, "
                                             "else 0)."),
    sparse_input: bool = typer.Option(False, help="The stack holds only the acquired sparse "
                                      "slices (r apart) instead of a dense stack to sparsify."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Predict fluorescence from a transmitted-light OME-TIFF.

    Example: medvol ssp predict cells.ome.tif --ratio 4 -o cells_pred/
    """
    from ..ssp.predict import predict_stack

    s = predict_stack(stack, output, ratio=ratio, weights=weights, tl_channel=tl_channel,
                      sparse_input=sparse_input, overwrite=overwrite)
    typer.echo(f"wrote {output} ({s['arch']}, shape CZYX {tuple(s['output_shape_czyx'])}, "
               f"kept z {s['kept_z']})")
