"""``medvol simulate``: sparse-view (optionally noisy) sinograms from a volume."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..simulate import GEOMETRIES


def simulate(
    input: Path = typer.Argument(..., help="Volume file (.nrrd/.nii.gz/.mha) or DICOM folder."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (created atomically)."),
    geometry: str = typer.Option("fan", help=" | ".join(GEOMETRIES) + " (fan/parallel per axial "
                                 "slice, cone 3D)."),
    views: int = typer.Option(16, help="Sparse-view factor: keep every K-th view."),
    full_views: int = typer.Option(360, help="Views of the full acquisition."),
    noise_i0: Optional[float] = typer.Option(None, "--noise-i0", help="Photons per ray (Poisson)."),
    seed: int = typer.Option(0, help="Noise seed (recorded)."),
    slices: Optional[str] = typer.Option(None, help="Axial slices START:STOP[:STEP]."),
    downsample: int = typer.Option(1, help="In-plane block averaging first."),
    backend: str = typer.Option("auto", help="auto | torch | astra"),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Simulate a sparse-view CT acquisition of a volume.

    Writes OUT/sinogram.npy (2D geometries: (slices, views, det); cone: (views, rows, det)),
    OUT/sinogram.json (geometry, grid, units; CT in HU is converted to attenuation μ in 1/mm)
    and OUT/manifest.json. Reconstruct it with `medvol recon OUT -o REC`.

    Example: medvol simulate ct/volume.nrrd --geometry fan --views 16 --noise-i0 1e5 -o sino/
    """
    from ..recon import simulate_job

    info = simulate_job(input, out, geometry=geometry, views=views, full_views=full_views,
                        noise_i0=noise_i0, seed=seed, slices=slices, downsample=downsample,
                        backend=backend, overwrite=overwrite)
    typer.echo(f"wrote {out}/sinogram.npy ({info['geometry']['type']}, "
               f"{len(info['geometry']['angles'])} views)", err=True)
