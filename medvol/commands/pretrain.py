"""``medvol pretrain``: self-supervised pre-training on unlabelled volumes (``medvol pretrain voco``).

Data come from ``--data DIR`` (default: the environment variable ``MEDVOL_DATA``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import comma_list

app = typer.Typer(help="Self-supervised pre-training of MONAI backbones on unlabelled volumes "
                       "(resumable checkpoints, safetensors export).", no_args_is_help=True)


def _ints(text: str, name: str) -> tuple[int, ...]:
    from ..errors import InputError

    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{name} must be comma-separated integers, got {text!r}") from None
    return vals


@app.command("voco")
def voco(
    data: Optional[Path] = typer.Option(None, help="Data root (default: $MEDVOL_DATA) holding "
                                        "mri/hippocampus/images (and, per --sources, "
                                        "mri/ixi10/t1, mri/stroke, ct/totalseg)."),
    output: Path = typer.Option(..., "-o", "--output", help="Weights to write (.safetensors); "
                                "the loss curve goes next to it (<name>_loss.png)."),
    sources: str = typer.Option("hippocampus", help="Comma-separated unlabelled pools: "
                                "hippocampus, ixi10, stroke, totalseg. The hippocampus test "
                                "subjects are always left out."),
    arch: str = typer.Option("voco_cnn", help="voco_cnn (BasicUNet encoder, CPU) or voco_swin "
                             "(SwinUNETR v2 encoder, GPU; crops divisible by 32)."),
    region: str = typer.Option("32,48,32", help="z,y,x size every volume is resized to."),
    grid: int = typer.Option(2, help="n: an n×n grid of base crops in the x–y plane."),
    crops: int = typer.Option(2, help="Random crops per volume."),
    batch: int = typer.Option(2, help="Volumes per step."),
    lr: float = typer.Option(1e-4, help="AdamW learning rate."),
    steps: int = typer.Option(3000, help="Total optimiser steps (a rerun resumes)."),
    run_dir: Path = typer.Option(Path(".cache/pretrain/voco"), "--run-dir",
                                 help="Checkpoint folder (rerun the same command to resume)."),
    time_limit: Optional[float] = typer.Option(None, help="Stop (checkpointed) after this many "
                                               "seconds; rerun to continue."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (torch and numba)."),
    overwrite: bool = typer.Option(False, help="Replace an existing --output file."),
    seed: int = typer.Option(0, help="Seed of crops, augmentation and initial weights."),
    device: str = typer.Option("auto", help="auto (CUDA when PyTorch sees a GPU), cpu or cuda."),
) -> None:
    """VoCo volume-contrastive pre-training (Wu et al., CVPR 2024; v1 repository recipe).

    Example: medvol pretrain voco --data DATA_DIR --steps 3000 -o voco.safetensors
    """
    from ..errors import InputError
    from ..pretrain.voco import VoCoSettings, check_shape, pretrain_voco

    if steps < 1:
        raise InputError(f"--steps must be >= 1, got {steps}")
    if not str(output).endswith(".safetensors"):
        raise InputError(f"--output must end in .safetensors, got {output.name!r}")
    if output.exists() and not overwrite:
        from ..errors import OutputExistsError

        raise OutputExistsError("output weights exist", path=output, hint="pass --overwrite")
    settings = VoCoSettings(region=_ints(region, "--region"), grid=grid, n_crops=crops,
                            batch=batch, lr=lr)
    settings.validate()
    if arch not in ("voco_cnn", "voco_swin"):
        raise InputError(f"--arch must be voco_cnn or voco_swin, got {arch!r}")
    check_shape(arch, settings)
    s = pretrain_voco(data, sources=comma_list(sources),
                      arch=arch, settings=settings, steps=steps, run_dir=run_dir,
                      time_limit_s=time_limit, export=output, overwrite=overwrite, seed=seed,
                      threads=threads, device=device)
    msg = f"wrote {output} ({s['steps']} steps, {s['train_s']:.0f} s on {s['device']}"
    if "peak_gpu_mib" in s:
        msg += f", peak GPU memory {s['peak_gpu_mib']:.0f} MiB"
    if "pretext_mae" in s:
        msg += (f"; held-out overlap error {s['pretext_mae']:.3f} vs uniform guess "
                f"{s['uniform_mae']:.3f}")
    typer.echo(msg + ")")
