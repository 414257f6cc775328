"""``medvol recon``: reconstruct a volume from projections, or evaluate sparse-view CT on a volume."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

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


def _detect_input(path: Path) -> str:
    from ..errors import InputError

    if not path.exists():
        raise InputError("input does not exist", path=path, hint="check the path")
    if path.is_dir():
        if (path / "sinogram.npy").is_file():
            return "sinogram"
        names = [p.name.lower() for p in path.iterdir()]
        if (path / "raw").is_dir() or any(n.endswith((".tif", ".tiff")) for n in names):
            return "projections"
        return "dicom"
    name = path.name.lower()
    if name.endswith(".npy"):
        import numpy as np

        try:
            if np.load(path, mmap_mode="r").dtype.kind == "c":
                return "kspace"  # complex: radial k-space (the reader asks for the angles)
        except (OSError, ValueError):
            raise InputError("not a readable .npy file", path=path) from None
    if name.endswith((".h5", ".hdf5", ".npz")) or (
            name.endswith(".npy") and path.with_name(path.stem + "_angles.npy").is_file()):
        return "kspace"
    if name.endswith((".tif", ".tiff", ".npy")):
        return "projections"
    if name.endswith((".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")):
        return "volume"
    raise InputError("cannot tell what this input is", path=path,
                     hint="give a volume (.nrrd/.nii.gz/.mha), a DICOM folder or a projection folder")


def _load_volume(path: Path, kind: str):
    import medvol.io as mio
    from ..errors import InputError

    if kind == "volume":
        return mio.read(path, min_shape=(1, 16, 16), purpose="reconstruction")
    vols = mio.read_dicom_series(path)
    if not vols:
        raise InputError("no series found", path=path)
    return max(vols, key=lambda v: v.array.size)   # the largest series


def recon(
    input: Path = typer.Argument(..., help="Volume file, DICOM folder, or projection folder/stack."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (created atomically)."),
    method: str = typer.Option("tv", help="fbp | sirt | cgls | tv | pdunet"),
    weights: Optional[str] = typer.Option(None, help="pdunet: shipped name (pdunet_ct_x16, "
                                          "pdunet_mri_x16, lpd_ct_x16, lpd_mri_x16) or a "
                                          ".safetensors file."),
    geometry: str = typer.Option("fan", help="For volume input: fan | parallel | cone."),
    views: int = typer.Option(16, help="Sparse-view factor: keep every K-th view."),
    full_views: int = typer.Option(360, help="Views of the full acquisition (volume input)."),
    filter: str = typer.Option("hann", help="FBP filter: ram-lak | shepp-logan | cosine | hann."),
    n_iter: Optional[int] = typer.Option(None, help="Iterations (default: sirt 200, cgls 30, tv 300)."),
    lam: Optional[float] = typer.Option(None, help="TV weight relative to the data scale (default 0.02)."),
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
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Reconstruct sparse-view CT (FBP, SIRT, CGLS, TV) and write a Slicer-ready result.

    Writes OUT/recon.nrrd (LPS), OUT/manifest.json and OUT/report.html with PNGs. With a volume
    or DICOM input the volume is the reference: its sinogram is simulated for --geometry, every
    --views-th view kept, reconstructed with --method and scored (PSNR, SSIM, RMSE; HU for CT)
    against the reference and against FBP of the same data.
    """
    import logging

    from rich.console import Console

    from .._atomic import atomic_dir, check_writable
    from ..errors import InputError
    from ..manifest import Manifest
    from ..recon.run import METHODS

    console = Console(stderr=True)
    import sys

    # notices (backend choice …) go to stdout: stderr carries the one error line
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if method not in METHODS:
        raise InputError(f"unknown --method {method!r}", hint=f"choose one of {', '.join(METHODS)}")
    check_writable(out, overwrite, inputs=[input])
    kind = _detect_input(input)
    if kind in ("volume", "dicom") and geometry not in ("fan", "parallel", "cone"):
        raise InputError(f"unknown --geometry {geometry!r}", hint="use fan, parallel or cone")
    if kind == "projections" and method == "pdunet":
        raise InputError("--method pdunet is trained for fan-beam CT and radial MRI, not for "
                         "parallel-beam projections", path=input,
                         hint="use fbp, sirt, cgls or tv")
    params = dict(method=method, weights=weights, filter=filter, n_iter=n_iter, lam=lam,
                  backend=backend, device=device, input_kind=kind)
    if kind in ("volume", "dicom"):
        params.update(geometry=geometry, views=views, full_views=full_views, noise_i0=noise_i0,
                      seed=seed, slices=slices, downsample=downsample)
    elif kind == "projections":
        params.update(cor=cor, pixel_size=pixel_size, rows=rows, angle_rows=angle_rows,
                      angles=None if angles is None else angles.name,
                      flats=None if flats is None else flats.name,
                      darks=None if darks is None else darks.name)
    man = Manifest("recon", params)
    with console.status(f"reconstructing ({method}) …"):
        if kind == "kspace":
            from ..recon.run import reconstruct_kspace

            res = reconstruct_kspace(input, method=method, weights=weights, filter=filter,
                                     backend=backend, device=device)
        elif kind == "sinogram":
            from ..recon.run import reconstruct_sinogram_folder

            res = reconstruct_sinogram_folder(input, method=method, filter=filter, n_iter=n_iter,
                                              lam=lam, backend=backend, device=device,
                                              weights=weights)
        elif kind == "projections":
            from ..recon.run import reconstruct_projections

            arows = None
            if angle_rows:
                a, _, b = angle_rows.partition(":")
                try:
                    arows = slice(int(a or 0), int(b) if b else None)
                except ValueError:
                    raise InputError(f"--angle-rows {angle_rows!r} is not A:B") from None
            res = reconstruct_projections(input, flats=flats, darks=darks, angles=angles,
                                          angle_rows=arows, method=method, filter=filter,
                                          n_iter=n_iter, lam=lam, cor=cor, pixel_size=pixel_size,
                                          rows=rows, backend=backend, device=device, progress=False)
        else:
            from ..recon.run import reconstruct_from_volume

            vol = _load_volume(input, kind)
            res = reconstruct_from_volume(vol, geometry=geometry, views=views,
                                          full_views=full_views, method=method, filter=filter,
                                          n_iter=n_iter, lam=lam, I0=noise_i0, seed=seed,
                                          slices=slices, downsample=downsample, backend=backend,
                                          device=device, progress=False, weights=weights)
    _add_inputs(man, input)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_outputs(res, tmp, man)
    rec = res.record
    from .._text import escape_markup

    console.print(f"[green]wrote[/green] {escape_markup(out)}/recon.nrrd, report.html, "
                  "manifest.json")
    if "metrics" in rec:
        for name, m in rec["metrics"].items():
            console.print(f"  {name:6s} PSNR {m['psnr_db']:.2f} dB  SSIM {m['ssim']:.4f}  "
                          f"RMSE {m['rmse']:.1f} {rec.get('metric_units', '')}")
    if "cor" in rec:
        console.print(f"  rotation axis: {rec['cor']}; sharpness estimated "
                      f"{rec['sharpness']['estimated_axis']:.3f} vs centred "
                      f"{rec['sharpness']['centred_axis']:.3f}")


def _add_inputs(man, input: Path) -> None:
    files = [input] if input.is_file() else sorted(p for p in input.rglob("*") if p.is_file())
    for p in files[:5000]:
        man.add_input(p, name=str(p.relative_to(input.parent)))


def write_outputs(res, folder: Path, man) -> None:
    """Write recon.nrrd (+ fbp/baseline), PNGs, report.html and manifest.json into ``folder``."""
    import numpy as np

    import medvol.io as mio
    from ..report import comparison_png, orthoslices_png, write_html_report

    rec = res.record
    ct = bool(rec.get("ct_hu"))
    window = (-160.0, 240.0) if ct else None
    mio.write(res.volume, folder / "recon.nrrd")
    man.add_output(folder / "recon.nrrd", root=folder, role="reconstruction")
    if res.baseline is not None:
        name = {"projections": "fbp_centred_axis.nrrd",
                "radial-kspace": "gridding.nrrd"}.get(rec.get("mode"), "fbp.nrrd")
        mio.write(res.baseline, folder / name)
        man.add_output(folder / name, root=folder, role="baseline")
    images = []
    orthoslices_png(res.volume, folder / "recon_orthoslices.png", window=window,
                    title=f"{rec.get('method')} reconstruction")
    images.append(("Reconstruction, three orthogonal slices", "recon_orthoslices.png"))
    k = res.volume.shape[0] // 2
    if res.reference is not None:
        panels = [res.reference.numpy()[k]]
        labels = ["reference"]
        if res.baseline is not None:
            panels.append(res.baseline.numpy()[k]); labels.append("FBP")
        panels.append(res.volume.numpy()[k]); labels.append(str(rec.get("method")).upper())
        comparison_png(panels, labels, folder / "comparison.png", window=window)
        images.append((f"Middle slice: {' | '.join(labels)} ({rec.get('views_factor')}x fewer views)",
                       "comparison.png"))
    elif res.baseline is not None and rec.get("mode") == "radial-kspace":
        a, b = res.baseline.numpy()[k], res.volume.numpy()[k]
        a = a / max(float(np.percentile(a, 99.5)), 1e-12)
        b = b / max(float(np.percentile(b, 99.5)), 1e-12)
        comparison_png([a, b], ["gridding (NUFFT adjoint, DCF)", str(rec.get("method")).upper()],
                       folder / "comparison.png", window=(0.0, 1.0))
        images.append(("Radial MRI: gridding vs reconstruction (each scaled to its 99.5th "
                       "percentile)", "comparison.png"))
    elif res.baseline is not None:
        a, b = res.baseline.numpy()[k], res.volume.numpy()[k]
        lo, hi = np.percentile(b, [0.5, 99.5])
        comparison_png([a, b], ["axis at detector centre", "estimated axis"],
                       folder / "cor_comparison.png", window=(float(lo), float(hi)))
        images.append(("Centre of rotation: centred vs estimated (middle slice)", "cor_comparison.png"))
    for _, png in images:
        man.add_output(folder / png, root=folder, role="figure")
    tables = {}
    if "metrics" in rec:
        tables["Image quality vs reference (" + rec.get("metric_units", "") + ")"] = [
            {"method": n, **m} for n, m in rec["metrics"].items()]
    if "sharpness" in rec:
        tables["Sharpness (higher is sharper)"] = [
            {"axis": n, "sharpness": round(v, 4)} for n, v in rec["sharpness"].items()]
    write_html_report(folder, title="medvol recon", images=[(c, folder / p) for c, p in images], tables=tables,
                      params={k: v for k, v in rec.items() if k not in ("metrics", "sharpness")})
    man.add_output(folder / "report.html", root=folder, role="report")
    man.data["metrics"] = {k: rec[k] for k in ("metrics", "sharpness", "cor") if k in rec}
    man.data["record"] = rec
    man.write(folder / "manifest.json")
