"""``medvol register``: deformable registration (MICDIR, VoxelMorph, B-spline, affine)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..registration.run import METHODS, MODALITIES

_EPILOG = """\
Examples:

  # MICDIR (shipped weights), T1 to T1, with the moving labels warped along
  medvol register fixed_t1.nii.gz moving_t1.nii.gz -o reg/ --labels moving_seg.nrrd

  # intermodal T1 (fixed) <- T2 (moving) with the classical B-spline baseline (Mattes MI)
  medvol register t1.nrrd t2.nrrd -o reg_bs/ --method bspline --modality inter

Outputs: warped.nrrd, displacement.nrrd (Slicer: load as transform), displacement.h5 (ITK),
affine.tfm (--method affine: the ITK affine transform), warped labels, report.html (checkerboard, overlay, Jacobian, Dice with --fixed-labels), manifest.json.
"""


def register(
    fixed: Path = typer.Argument(..., help="Fixed (reference) volume: .nrrd/.nii.gz/.mha."),
    moving: Path = typer.Argument(..., help="Moving volume, resampled onto the fixed grid."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (created atomically)."),
    method: str = typer.Option("micdir", help=" | ".join(METHODS)),
    modality: str = typer.Option("intra", help=" | ".join(MODALITIES) + " (same contrast / e.g. T1 vs T2)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Label map of the MOVING image."),
    fixed_labels: Optional[Path] = typer.Option(None, "--fixed-labels",
                                                help="Label map of the fixed image (Dice table)."),
    weights: Optional[Path] = typer.Option(None, help="Weights (.safetensors) for micdir/voxelmorph."),
    prealign: bool = typer.Option(True, help="Affine pre-alignment (SimpleITK) before a learned "
                                  "method, as the B-spline baseline does; --no-prealign feeds the "
                                  "images to the net as they lie in physical space."),
    seed: int = typer.Option(0, min=0, help="Metric-sampling seed of the SimpleITK optimisers "
                                             "(affine, B-spline, the learned methods' affine start); "
                                             "same seed, same result."),
    refine: Optional[int] = typer.Option(None, min=0, help="micdir/voxelmorph: instance-"
                                         "optimisation steps on the pair (half then full "
                                         "resolution; LNCC or MIND + smoothness + inverse "
                                         "consistency). Default 40 (half at full resolution); "
                                         "--task hippocampus: 1 at half resolution with Adam step "
                                         "0.01 and no IC term; --task ixi: 20 "
                                         "at full resolution with Adam step 0.3 and no IC term "
                                         "(each task's budget chosen on pairs outside the test "
                                         "set; an explicit other budget runs with the general "
                                         "settings); 0 = the net's prediction only."),
    refine_full: Optional[int] = typer.Option(None, "--refine-full", min=0, help="micdir/voxelmorph: "
                                              "how many of the --refine steps run at full "
                                              "resolution (default: half of them; without --refine "
                                              "the task's split: none for --task hippocampus, "
                                              "all for --task ixi; 0: all at half "
                                              "resolution, about 10x cheaper per step)."),
    similarity: Optional[str] = typer.Option(None, help="micdir/voxelmorph: the refinement's "
                                             "similarity: lncc | mi | mind (default: lncc for "
                                             "--modality intra, mind (MIND-SSC) for inter)."),
    grid_mm: Optional[float] = typer.Option(None, "--grid-mm", min=0.0, help="micdir/voxelmorph: "
                                            "run the net and its refinement on an isotropic grid "
                                            "of this spacing over the fixed image (at most the "
                                            "model grid's field of view); default the weights' "
                                            "model grid, 2.0 for --task synth; 0 = the model "
                                            "grid."),
    task: Optional[str] = typer.Option(None, help="micdir/voxelmorph: shipped weights "
                                       "<method>_<task> (intra, inter, hippocampus, ixi, synth); "
                                       "default: the modality's. demons: --task ixi runs the "
                                       "whole-brain settings chosen on IXI training pairs."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
    progress: bool = typer.Option(True, help="Progress bars (levels, iterations, ETA) on a "
                                  "terminal; never when stderr is piped."),
) -> None:
    """Register MOVING onto FIXED and write a Slicer-ready displacement field and report."""
    from .. import _progress
    from ..registration.run import run_register

    with _progress.scope(progress), _progress.status(f"registering ({method}) …"):
        path = run_register(fixed, moving, out, method=method, modality=modality, labels_path=labels,
                            fixed_labels_path=fixed_labels, weights=weights, prealign=prealign,
                            overwrite=overwrite, seed=seed, refine=refine, task=task,
                            refine_full=refine_full, similarity=similarity, grid_mm=grid_mm)
    from .._text import sanitize

    typer.echo(sanitize(f"wrote {path}"))


register.__doc__ = (register.__doc__ or "") + "\n\n" + _EPILOG
