"""``medvol recon``: reconstruct a volume from projections, or evaluate sparse-view CT on a volume."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..recon.registry import method_help
from ..simulate import GEOMETRIES

_EPILOG = """\
Examples:

  # evaluation on a real CT: fan beam, 16x fewer of 360 views, TV vs FBP, metrics in HU
  medvol recon out/s002_CT_1a2b/volume.nrrd --geometry fan --views 16 --method tv -o rec/

  # straight from a DICOM folder, three slices, 2x in-plane downsampling for a quick look
  medvol recon study/ --slices 10:13 --downsample 2 --method cgls -o rec/

  # learned sinogram upsampling (PD-UNet, shipped weights): CT evaluation, radial MRI k-space
  medvol recon ct/volume.nrrd --method pdunet --views 16 -o rec_pdunet/
  medvol recon spokes.h5 --method pdunet -o rec_mri/

  # real parallel-beam projections (TIFF folder + flat/dark + angles), automatic axis
  medvol recon projections/ --angles angles.txt --angle-rows 10:101 --method fbp -o rec/
"""


def _span(text: str | None, flag: str) -> slice | None:
    """``A:B`` → ``slice(A, B)`` for detector/angle rows (errors name the option)."""
    from ..errors import InputError

    if not text:
        return None
    a, _, b = text.partition(":")
    try:
        return slice(int(a) if a.strip() else None, int(b) if b.strip() else None)
    except ValueError:
        raise InputError(f"{flag} {text!r} is not A:B") from None


def _cor(text: str) -> str | float:
    """``auto`` | ``none`` | a pixel offset (the library refuses anything else)."""
    try:
        return float(text)
    except ValueError:
        return text


def recon(
    input: Path = typer.Argument(..., help="Volume file, DICOM folder, or projection folder/stack."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (created atomically)."),
    method: str = typer.Option("tv", help=method_help()),
    weights: Optional[str] = typer.Option(None, help="pdunet: shipped name (pdunet_ct_x16, "
                                          "pdunet_mri_x16, lpd_ct_x16, lpd_mri_x16) or a "
                                          ".safetensors file."),
    geometry: str = typer.Option("fan", help="For volume input: " + " | ".join(GEOMETRIES) + "."),
    views: int = typer.Option(16, help="Sparse-view factor: keep every K-th view."),
    full_views: int = typer.Option(360, help="Views of the full acquisition (volume input)."),
    filter: str = typer.Option("hann", help="FBP filter: ram-lak | shepp-logan | cosine | hann."),
    n_iter: Optional[int] = typer.Option(None, help="Iterations (default: sirt 200, cgls 30, tv 300; "
                                         "dds: DDIM steps, 100; mbir: PC steps, 100)."),
    lam: Optional[float] = typer.Option(None, help="TV weight relative to the data scale (default "
                                        "0.02; pdunet: the refinement's, default 0.1)."),
    refine: Optional[int] = typer.Option(None, min=0, help="pdunet: TV iterations run from the "
                                         "network's output (default 20 for pdunet_ct_x16, 0 for "
                                         "the other weights; 0 = the network alone)."),
    noise_i0: Optional[float] = typer.Option(None, "--noise-i0", help="Photons/ray for Poisson noise."),
    slices: Optional[str] = typer.Option(None, help="Axial slices START:STOP[:STEP] (volume input)."),
    downsample: int = typer.Option(1, help="In-plane block averaging before simulation."),
    angles: Optional[Path] = typer.Option(None, help="Angles file (degrees), projection input."),
    angle_rows: Optional[str] = typer.Option(None, help="Rows of the angles file to use, A:B."),
    flats: Optional[Path] = typer.Option(None, help="Flat-field frame(s)."),
    darks: Optional[Path] = typer.Option(None, help="Dark-field frame(s)."),
    cor: str = typer.Option("auto", help="Rotation axis: auto | none | offset in pixels."),
    pixel_size: float = typer.Option(1.0, help="Detector pixel size in mm (projection input)."),
    rows: Optional[str] = typer.Option(None, help="Detector rows A:B to reconstruct (projection input)."),
    backend: str = typer.Option("auto", help="auto | torch | astra"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda with ASTRA if "
                                         "available, else cpu)."),
    seed: int = typer.Option(0, help="Seed for simulated noise."),
    metric_window: Optional[str] = typer.Option(
        None, help="HU window of the windowed PSNR/SSIM (volume input): a preset "
        "(brain, soft_tissue, bone, head_bone, lung), LOW:HIGH in HU, or none. Default: head "
        "CT brain W80/L40, other CT soft tissue W400/L40."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
    progress: bool = typer.Option(True, help="Progress bars (iterations, ETA) on a terminal; "
                                        "never when stderr is piped."),
) -> None:
    """Reconstruct sparse-view CT (FBP, SIRT, CGLS, TV) and write a Slicer-ready result.

    Writes OUT/recon.nrrd (LPS), OUT/manifest.json and OUT/report.html with PNGs. With a volume
    or DICOM input the volume is the reference: its sinogram is simulated for --geometry, every
    --views-th view kept, reconstructed with --method and scored (PSNR, SSIM, RMSE; HU for CT)
    against the reference and against FBP of the same data. All methods are scored on the
    reference grid (--slices, --downsample): a learned method runs on its training grid and is
    resampled back. CT is scored over the full HU range and inside --metric-window.
    """
    import logging

    from rich.console import Console

    from ..errors import InputError
    from ..recon import available_methods, recon_job

    console = Console(stderr=True)
    import sys

    # notices (backend choice …) go to stdout: stderr carries the one error line
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if method not in available_methods():
        raise InputError(f"unknown --method {method!r}",
                         hint=f"choose one of {', '.join(available_methods())}")
    if n_iter is not None and n_iter < 1:
        raise InputError(f"--n-iter must be at least 1, got {n_iter}")
    window: object = metric_window
    if metric_window and ":" in metric_window:
        lo, _, hi = metric_window.partition(":")
        try:
            window = (float(lo), float(hi))
        except ValueError:
            raise InputError(f"--metric-window {metric_window!r} is not LOW:HIGH in HU",
                             hint="e.g. --metric-window=-160:240 or --metric-window brain") from None
    from .. import _progress

    with _progress.scope(progress), _progress.status(f"reconstructing ({method}) …"):
        res = recon_job(input, out, method=method, weights=weights, geometry=geometry,
                        views=views, full_views=full_views, filter=filter, n_iter=n_iter,
                        lam=lam, noise_i0=noise_i0, slices=slices, downsample=downsample,
                        angles=angles, angle_rows=_span(angle_rows, "--angle-rows"),
                        flats=flats, darks=darks, cor=_cor(cor), pixel_size=pixel_size,
                        rows=_span(rows, "--rows"), backend=backend, device=device, seed=seed,
                        overwrite=overwrite, progress=progress, metric_window=window,
                        refine=refine)
    rec = res.record
    from .._text import escape_markup

    console.print(f"[green]wrote[/green] {escape_markup(out)}/recon.nrrd, report.html, "
                  "manifest.json")
    if "metrics" in rec:
        from ..recon.outputs import metrics_caption

        console.print(f"  metrics: {escape_markup(metrics_caption(rec))}")
        for name, m in rec["metrics"].items():
            line = (f"  {name:6s} PSNR {m['psnr_db']:.2f} dB  SSIM {m['ssim']:.4f}  "
                    f"RMSE {m['rmse']:.1f} {rec.get('metric_units', '')}")
            if "ssim_window" in m:
                line += (f"  | in window: PSNR {m['psnr_db_window']:.2f} dB  "
                         f"SSIM {m['ssim_window']:.4f}")
            console.print(line)
    if "cor" in rec:
        console.print(f"  rotation axis: {rec['cor']}; sharpness estimated "
                      f"{rec['sharpness']['estimated_axis']:.3f} vs centred "
                      f"{rec['sharpness']['centred_axis']:.3f}")
