"""Reconstruction jobs: the library behind ``medvol recon`` / ``medvol simulate`` and the flows.

Each job returns the reconstructed :class:`~medvol.Volume` plus a record of what was done
(parameters, metrics, decisions) that :func:`medvol.recon.write_recon_outputs` turns into
``manifest.json`` and a report:

* :func:`reconstruct_from_volume` — *evaluation mode*: a reference volume (e.g. an ingested CT in
  HU) is projected with a chosen geometry, sparse-sampled to every ``views``-th view (optionally
  with Poisson noise), reconstructed, and compared with the reference (PSNR, SSIM, RMSE in HU).
* :func:`reconstruct_projections` — *data mode*: real parallel-beam projections with flat/dark
  frames → flat/dark correction, −log, centre-of-rotation estimation, slice-wise reconstruction.
* :func:`reconstruct_sinogram_folder` — what ``medvol simulate`` wrote.
* radial MRI k-space: :func:`medvol.recon.kspace.reconstruct_kspace`.

:func:`recon_job` and :func:`simulate_job` are the whole CLI jobs (input detection, manifest,
atomic output folder); the CLI only parses options and prints.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .grid import parse_range
from .registry import get_method, reconstruct, resolved_params, tv_lambda

log = logging.getLogger("medvol.recon")

__all__ = ["ReconResult", "reconstruct_from_volume", "reconstruct_projections",
           "reconstruct_sinogram_folder", "detect_input", "load_input_volume", "recon_job",
           "simulate_job", "INPUT_KINDS"]

INPUT_KINDS = ("volume", "dicom", "projections", "sinogram", "kspace")
"""What :func:`detect_input` can tell an input to be."""


@dataclass
class ReconResult:
    """What a reconstruction job produced."""

    volume: Volume
    reference: Volume | None = None
    baseline: Volume | None = None          # e.g. FBP of the same data, or a centred-axis recon
    record: dict[str, Any] = field(default_factory=dict)


def _refine_kw(spec, refine: int | None, lam: float | None) -> dict:
    """``refine`` / ``refine_lam`` for a method that refines (``pdunet``: ``--lam`` is the
    refinement's relative λ there); ``{}`` otherwise."""
    return dict(refine=refine, refine_lam=lam) if spec.refines else {}


def _fbp_scaled_lambda(A, y, method: str, lam: float | None, filter: str) -> float | None:
    """TV weight for real data (no reference): the rule of :func:`tv_lambda` on the FBP image."""
    if not get_method(method).uses_lambda:
        return None
    return tv_lambda(lam, reconstruct(A, y, "fbp", filter=filter))


# --------------------------------------------------------------------------- evaluation mode
def reconstruct_from_volume(vol: Volume, *, geometry: str = "fan", views: int = 16,
                            full_views: int = 360, method: str = "tv", filter: str = "hann",
                            n_iter: int | None = None, lam: float | None = None,
                            I0: float | None = None, seed: int = 0,
                            slices: str | slice | int | None = None, downsample: int = 1,
                            backend: str = "auto", device: str | None = None,
                            progress: bool = False, weights: str | None = None,
                            metric_window=None, refine: int | None = None) -> ReconResult:
    """Simulate sparse-view data from a reference volume, reconstruct, and score it.

    Parameters
    ----------
    vol : Volume
        Reference, ``(z, y, x)``. CT in HU is converted to linear attenuation (1/mm) for the
        projection and back to HU afterwards.
    geometry : one of :data:`medvol.simulate.GEOMETRIES`: ``"fan"`` (2D fan beam per axial
        slice), ``"parallel"`` (2D parallel per slice) or ``"cone"`` (3D circular cone beam
        over the selected slab).
    views : int
        Sparse-view factor: every ``views``-th of ``full_views`` views is kept.
    method, filter, n_iter : a registered method (:func:`medvol.recon.available_methods`) and
        its options.
    lam : TV weight in units of the normalised problem (default 0.02); the solver gets
        :func:`~medvol.recon.registry.tv_lambda` of it and the reference image. For ``pdunet``
        it is the relative λ of the TV refinement (default 0.1, scaled by the data's FBP).
    refine : ``pdunet`` only: TV iterations run from the network's output (None: the weights'
        default, :func:`medvol.recon.pdunet.default_refine`; 0: the network alone).
    I0 : float, optional
        Photons per ray for Poisson noise (None: noiseless).
    slices : ``slice`` or ``"START:STOP[:STEP]"`` subset of axial slices; ``downsample``
        averages in-plane blocks first (fast previews). Together they define the *reference
        grid* on which every method is scored (:func:`score_on_reference_grid`): a learned
        method runs on its training grid and its result is resampled back for scoring.
    metric_window : HU window of the windowed metrics: None = modality default (head CT brain
        W80/L40, other CT soft tissue W400/L40), a preset name of
        :data:`medvol.report.WINDOWS`, ``(low, high)``, or ``"none"``.

    Returns
    -------
    ReconResult with ``volume`` (same grid as the selected reference), ``reference``,
    ``baseline`` (FBP of the same data, when ``method`` is not FBP) and ``record``.
    """
    import torch

    from ..kernels import Projector
    from ..simulate import add_poisson_noise, mu_to_hu
    from .simulation import simulation_setup

    spec = get_method(method)
    task = spec.resolve("task")
    # a learned model was trained on one grid and geometry: evaluate it there
    task_grid = task(geometry, views, full_views) if task is not None else None
    st = simulation_setup(vol, geometry, views, full_views, slices, downsample, task_grid)
    ref, ct, x_true, g, data = st.ref, st.ct, st.x_true, st.geometry, st.data
    nz, ny, nx = x_true.shape
    record: dict[str, Any] = {"mode": "simulate-from-volume", "geometry": geometry,
                              "views_factor": views, "full_views": full_views, "method": method,
                              "ct_hu": ct, "shape_zyx": [nz, ny, nx], "I0": I0, "seed": seed}
    A = Projector(g, st.vol_shape, st.spacing, backend=backend, device=device)
    record["geometry_params"] = g.to_dict() | {"angles": f"{g.n_views} views"}
    record["backend"] = getattr(A, "backend_name", backend)

    t0 = time.perf_counter()
    y = A(data)
    if I0:
        y = torch.from_numpy(add_poisson_noise(y, I0, seed=seed)).to(y.dtype)
    record["seconds_project"] = round(time.perf_counter() - t0, 3)

    if method == "pdunet" and not ct:
        log.warning("pdunet: this volume is not CT (no HU) but the fan-beam simulation uses CT "
                    "weights — expect degraded results; for radial MRI reconstruct k-space "
                    "(spokes.h5), which uses %s", "pdunet_mri_x16")
    lam_eff = tv_lambda(lam, x_true)      # the truth is known: scale from the reference
    t0 = time.perf_counter()
    x = reconstruct(A, y, method, filter=filter, n_iter=n_iter, lam=lam_eff, progress=progress,
                    weights=weights, **_refine_kw(spec, refine, lam))
    record["seconds_reconstruct"] = round(time.perf_counter() - t0, 3)
    if spec.learned:
        record["weights"] = weights or spec.default_weights
        if task_grid is not None:
            record["grid_note"] = (f"slices resampled to the network's {task_grid[0]}x"
                                   f"{task_grid[0]} grid of {task_grid[1]:.4g} mm")
    if spec.uses_lambda:
        record["tv_lambda"] = lam_eff
    base = reconstruct(A, y, "fbp", filter=filter) if method != "fbp" else None

    def to_vol(t, tag):
        a = t.detach().cpu().numpy().reshape(nz, ny, nx).astype(np.float32)
        if ct:
            a = mu_to_hu(a)
        return ref.with_array(a, recon_method=tag)

    out = to_vol(x, method)
    baseline = to_vol(base, "fbp") if base is not None else None
    ref = ref.with_array((mu_to_hu(x_true) if ct else x_true).astype(np.float32))
    record.update(score_on_reference_grid(out, baseline, st.score_ref, ct=ct,
                                          window=metric_window))
    record["resolved"] = resolved_params(method, filter=filter, n_iter=n_iter, lam=lam,
                                         lam_solver=lam_eff if spec.uses_lambda else None,
                                         weights=weights, **_refine_kw(spec, refine, lam))
    return ReconResult(volume=out, reference=ref, baseline=baseline, record=record)


def _no_window(window) -> bool:
    """``--metric-window none``: no windowed metrics."""
    return isinstance(window, str) and window.lower() == "none"


def _window_of(window, score_ref: Volume, ct: bool) -> tuple[str, tuple[float, float]] | None:
    """The HU window of the windowed metrics: ``None`` → the modality default of
    :func:`medvol.report.default_windows` (head CT: brain W80/L40; other CT: soft tissue
    W400/L40; nothing for non-CT); ``"none"`` → no windowed metrics; a preset name or
    ``(low, high)``."""
    from ..report import default_windows, resolve_window

    if _no_window(window):
        return None
    if window is None:
        if not ct:
            return None
        return default_windows(score_ref.with_array(score_ref.array, modality="CT"))[0]
    lo_hi = resolve_window(window)
    return (window if isinstance(window, str) else "given", lo_hi)


def score_on_reference_grid(recon: Volume, baseline: Volume | None, score_ref: Volume, *,
                            ct: bool, window=None) -> dict[str, Any]:
    """PSNR / SSIM / RMSE of a reconstruction (and its FBP baseline) on ONE grid: the
    reference's (selected slices, ``downsample``), whatever grid the method ran on.

    A learned method that runs on its training grid (e.g. PD-UNet's 128² of 1.95 mm) is
    resampled back onto the reference grid (SimpleITK, linear; air −1000 HU outside its field
    of view) before scoring, so every method's numbers compare like with like. CT references
    are scored against what the simulation saw (HU below air clipped to −1000).

    Metrics (keys of ``metrics[name]``): ``psnr_db``, ``ssim`` (mean of per-slice 2D SSIM),
    ``rmse`` over the full range with data range = reference max − min; and, for CT (or with
    ``window``), ``psnr_db_window`` / ``ssim_window`` after clipping both images to the HU
    window with data range = window width (``window``: None = modality default, see
    :func:`_window_of`).

    Returns the record entries ``metrics``, ``metric_units``, ``ssim_data_range``,
    ``scoring_grid`` and ``metric_window``.
    """
    from ..metrics import psnr, rmse, ssim
    from ..simulate import hu_to_mu, mu_to_hu
    from .grid import resample_like

    ref_a = score_ref.numpy().astype(np.float32)
    if ct:
        ref_a = mu_to_hu(hu_to_mu(ref_a)).astype(np.float32)
    fill = -1000.0 if ct else float(ref_a.min())
    win = _window_of(window, score_ref, ct)
    dr = float(ref_a.max() - ref_a.min())
    metrics: dict[str, Any] = {}
    resampled = []
    for name, v in (("recon", recon), ("fbp", baseline)):
        if v is None:
            continue
        if not v.same_grid(score_ref):
            resampled.append(name)
        a = resample_like(v, score_ref, fill=fill).numpy().astype(np.float64)
        m = {"psnr_db": round(float(psnr(a, ref_a, data_range=dr)), 3),
             "ssim": round(float(np.mean([ssim(a[k], ref_a[k], data_range=dr)
                                          for k in range(a.shape[0])])), 4),
             "rmse": round(float(rmse(a, ref_a)), 3)}
        if win is not None:
            lo, hi = win[1]
            ac, rc = np.clip(a, lo, hi), np.clip(ref_a, lo, hi)
            m["psnr_db_window"] = round(float(psnr(ac, rc, data_range=hi - lo)), 3)
            m["ssim_window"] = round(float(np.mean([ssim(ac[k], rc[k], data_range=hi - lo)
                                                    for k in range(a.shape[0])])), 4)
        metrics[name] = m
    nz, ny, nx = score_ref.shape
    sx, sy, _ = score_ref.spacing
    note = f"reference grid {ny}x{nx} of {sy:.4g} x {sx:.4g} mm, {nz} slices"
    if resampled:
        note += f"; {', '.join(resampled)} resampled onto it (linear) from the method's grid"
    out = {"metrics": metrics, "metric_units": "HU" if ct else "input units",
           "ssim_data_range": f"reference max-min = {dr:.1f}",
           "scoring_grid": {"shape_zyx": [nz, ny, nx],
                            "spacing_mm": [round(float(s), 6) for s in score_ref.spacing],
                            "resampled": resampled, "note": note}}
    if win is not None:
        lo, hi = win[1]
        out["metric_window"] = {"name": win[0], "width": hi - lo, "level": (hi + lo) / 2,
                                "range": [lo, hi]}
    return out


# --------------------------------------------------------------------------- data mode
def _as_span(rows: str | slice | None, what: str) -> slice | None:
    if rows is None or rows == "":
        return None
    if isinstance(rows, slice):
        return rows
    vals = parse_range(rows, what)
    if len(vals) != 2:
        raise InputError(f"{what} {rows!r} is not A:B")
    return slice(*vals)


def reconstruct_projections(path, *, flats=None, darks=None, angles=None,
                            angle_rows: slice | None = None, method: str = "fbp",
                            filter: str = "hann", n_iter: int | None = None,
                            lam: float | None = None, cor: str | float = "auto",
                            pixel_size: float = 1.0, rows: str | slice | None = None,
                            backend: str = "auto", device: str | None = None,
                            progress: bool = False) -> ReconResult:
    """Reconstruct real parallel-beam projections slice by slice (one slice per detector row).

    ``cor`` is ``"auto"`` (estimate), ``"none"`` (axis at the detector centre) or a number of
    detector pixels (offset of the rotation axis from the detector centre). ``rows`` selects
    detector rows (``slice`` or ``"A:B"``). The result's ``baseline`` is the centred-axis
    reconstruction, for the crescent-artefact comparison. The TV weight is scaled by the FBP
    image of the data (:func:`~medvol.recon.registry.tv_lambda`).
    """
    import torch

    from ..geometry import ParallelBeam2D
    from ..kernels import Projector
    from ..io.projections import load_projections
    from .projections import estimate_center_of_rotation, line_integrals, sharpness

    get_method(method)
    p = load_projections(path, flats=flats, darks=darks, angles=angles, angle_rows=angle_rows)
    lines = line_integrals(p)                                            # (views, rows, cols)
    n_views, n_rows, n_cols = lines.shape
    n_rows_all, row0 = n_rows, 0
    span = _as_span(rows, "rows")
    if span is not None:
        row0, row1, _ = span.indices(n_rows)
        lines = lines[:, row0:row1]
        if lines.shape[1] == 0:
            raise InputError(f"rows {rows!r} selects none of the {n_rows} detector rows")
        n_rows = lines.shape[1]
    sino = np.ascontiguousarray(np.transpose(lines, (1, 0, 2)))          # (rows, views, cols)
    record: dict[str, Any] = {"mode": "projections", "n_views": n_views, "detector": [n_rows, n_cols],
                              "pixel_size_mm": pixel_size, "method": method}
    mid = sino[n_rows // 2]
    if cor == "auto":
        est = estimate_center_of_rotation(mid, p.angles, det_spacing=pixel_size)
        det_offset = float(est.det_offset)
        record["cor"] = {"method": f"auto ({est.method})", "offset_px": round(est.offset_px, 3),
                         "axis_index": round(est.axis_index, 3), "quality": round(est.quality, 3)}
    elif cor == "none":
        det_offset = 0.0
        record["cor"] = {"method": "none (detector centre)"}
    else:
        try:
            offset_px = float(cor)
        except (TypeError, ValueError):
            raise InputError(f"cor {cor!r} must be 'auto', 'none' or a pixel offset") from None
        det_offset = -offset_px * pixel_size
        record["cor"] = {"method": "given", "offset_px": offset_px}
    record["det_offset_mm"] = det_offset

    def recon_with(offset, meth):
        g = ParallelBeam2D(angles=p.angles, n_det=n_cols, det_spacing=pixel_size, det_offset=offset)
        A = Projector(g, (n_cols, n_cols), (pixel_size, pixel_size), backend=backend,
                      device=device)
        y = torch.from_numpy(sino)
        lam_eff = _fbp_scaled_lambda(A, y, meth, lam, filter)
        if lam_eff is not None:
            record["tv_lambda"] = lam_eff
        return reconstruct(A, y, meth, filter=filter, n_iter=n_iter, lam=lam_eff or 0.0,
                           progress=progress).detach().cpu().numpy()

    t0 = time.perf_counter()
    x = recon_with(det_offset, method)
    record["seconds_reconstruct"] = round(time.perf_counter() - t0, 3)
    x0 = recon_with(0.0, "fbp")
    mid_k = n_rows // 2
    shared = tuple(float(v) for v in np.percentile(x[mid_k], [0.5, 99.5]))  # same grey levels
    record["sharpness"] = {"estimated_axis": float(sharpness(x[mid_k], value_range=shared)),
                           "centred_axis": float(sharpness(x0[mid_k], value_range=shared))}
    # volume: z = detector row (rotation axis), y/x = reconstruction grid; parallel beam, 1:1.
    # Detector row 0 is the top of each projection image, so it becomes the highest z (superior).
    x, x0 = x[::-1].copy(), x0[::-1].copy()
    sp = (pixel_size, pixel_size, pixel_size)
    # detector row r of the full detector sits at z = ((N-1)/2 - r)·pixel (row 0 on top);
    # the flipped volume's slice 0 is the lowest kept row, row0 + n_rows - 1
    org = (-(n_cols - 1) / 2 * pixel_size, -(n_cols - 1) / 2 * pixel_size,
           ((n_rows_all - 1) / 2 - (row0 + n_rows - 1)) * pixel_size)
    vol = Volume(x.astype(np.float32), spacing=sp, origin=org, meta={"recon_method": method})
    base = Volume(x0.astype(np.float32), spacing=sp, origin=org, meta={"recon_method": "fbp-centred"})
    return ReconResult(volume=vol, baseline=base, record=record)


# --------------------------------------------------------------------------- sinogram folders
def reconstruct_sinogram_folder(folder, *, method: str = "tv", filter: str = "hann",
                                n_iter: int | None = None, lam: float | None = None,
                                backend: str = "auto", device: str | None = None,
                                progress: bool = False, weights: str | None = None,
                                refine: int | None = None) -> ReconResult:
    """Reconstruct ``sinogram.npy`` + ``sinogram.json`` written by
    :func:`medvol.recon.simulation.simulate_to_folder`. The TV weight is scaled by the FBP image
    of the data (:func:`~medvol.recon.registry.tv_lambda`); ``refine`` as in
    :func:`reconstruct_from_volume`."""
    import json

    import torch

    from ..geometry import geometry_from_dict
    from ..kernels import Projector
    from ..simulate import mu_to_hu

    spec = get_method(method)
    folder = Path(folder)
    try:
        info = json.loads((folder / "sinogram.json").read_text())
        y = np.load(folder / "sinogram.npy")
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read sinogram.npy/sinogram.json: {e}", path=folder,
                         hint="write them with `medvol simulate`") from None
    if not np.all(np.isfinite(y)):
        raise InputError("sinogram contains NaN or infinite values", path=folder / "sinogram.npy")
    need = ("geometry", "volume_shape", "spacing", "grid")
    if not isinstance(info, dict) or any(k not in info for k in need) or not isinstance(
            info.get("grid"), dict) or any(k not in info["grid"] for k in
                                           ("shape_zyx", "spacing", "origin", "direction")):
        raise InputError(f"sinogram.json lacks one of {', '.join(need)} (grid: shape_zyx, "
                         "spacing, origin, direction)", path=folder / "sinogram.json",
                         hint="write it with `medvol simulate`")
    g = geometry_from_dict(info["geometry"])
    A = Projector(g, tuple(info["volume_shape"]), tuple(info["spacing"]), backend=backend,
                  device=device)
    yt = torch.from_numpy(y.astype(np.float32))
    lam_eff = _fbp_scaled_lambda(A, yt, method, lam, filter)
    x = reconstruct(A, yt, method, filter=filter, n_iter=n_iter, lam=lam_eff or 0.0,
                    progress=progress, weights=weights, **_refine_kw(spec, refine, lam))
    grid = info["grid"]
    a = x.detach().cpu().numpy().reshape(grid["shape_zyx"]).astype(np.float32)
    if info.get("ct_hu"):
        a = mu_to_hu(a)
    vol = Volume(a, spacing=grid["spacing"], origin=grid["origin"], direction=grid["direction"],
                 meta={"recon_method": method})
    return ReconResult(volume=vol, record={"mode": "sinogram", "method": method, "ct_hu":
                                           info.get("ct_hu"), "geometry": info["geometry"]["type"],
                                           "views": g.n_views, "tv_lambda": lam_eff,
                                           "resolved": resolved_params(
                                               method, filter=filter, n_iter=n_iter, lam=lam,
                                               lam_solver=lam_eff, weights=weights,
                                               **_refine_kw(spec, refine, lam))})


# --------------------------------------------------------------------------- inputs
def detect_input(path: str | os.PathLike) -> str:
    """What an input path holds: one of :data:`INPUT_KINDS`.

    A folder with ``sinogram.npy`` → ``sinogram``; a folder with TIFFs or ``raw/`` →
    ``projections``; another folder → ``dicom``; complex ``.npy``, ``.h5``/``.hdf5``/``.npz`` or a
    ``.npy`` with ``<stem>_angles.npy`` → ``kspace``; ``.tif``/``.npy`` → ``projections``;
    ``.nrrd``/``.nii[.gz]``/``.mha``/``.mhd`` → ``volume``.
    """
    path = Path(path)
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


def load_input_volume(path: str | os.PathLike, kind: str | None = None) -> Volume:
    """The reference volume of a ``volume`` file or a ``dicom`` folder (its largest series)."""
    import medvol.io as mio

    path = Path(path)
    kind = kind or detect_input(path)
    if kind == "volume":
        return mio.read(path, min_shape=(1, 16, 16), purpose="reconstruction")
    vols = mio.read_dicom_series(path)
    if not vols:
        raise InputError("no series found", path=path)
    return max(vols, key=lambda v: v.array.size)   # the largest series


def _add_inputs(man, input: Path) -> None:
    """Record the input: a file by its name, a folder's files (DICOM, projections) by position
    and hash only — a DICOM file name may carry patient identifiers; at most 5 000 files."""
    if input.is_file():
        man.add_input(input, name=input.name)
        return
    files = sorted(p for p in input.rglob("*") if p.is_file())
    for i, p in enumerate(files[:5000]):
        man.add_input(p, name=f"file/{i:05d}")


def _span_text(s: slice | str | None) -> str | None:
    if s is None or isinstance(s, str):
        return s
    return f"{'' if s.start is None else s.start}:{'' if s.stop is None else s.stop}"


# --------------------------------------------------------------------------- whole jobs
def recon_job(input: str | os.PathLike, out: str | os.PathLike, *, method: str = "tv",
              weights: str | None = None, geometry: str = "fan", views: int = 16,
              full_views: int = 360, filter: str = "hann", n_iter: int | None = None,
              lam: float | None = None, noise_i0: float | None = None,
              slices: str | slice | None = None, downsample: int = 1,
              angles: str | os.PathLike | None = None, angle_rows: slice | str | None = None,
              flats: str | os.PathLike | None = None, darks: str | os.PathLike | None = None,
              cor: str | float = "auto", pixel_size: float = 1.0,
              rows: str | slice | None = None, backend: str = "auto", device: str | None = None,
              seed: int = 0, overwrite: bool = False, progress: bool = False,
              metric_window=None, refine: int | None = None) -> ReconResult:
    """The ``medvol recon`` job: detect the input, reconstruct, write ``out`` atomically.

    ``out`` receives ``recon.nrrd`` (LPS), the baseline, PNGs, ``report.html`` and
    ``manifest.json`` (:func:`medvol.recon.write_recon_outputs`). The input kind
    (:func:`detect_input`) picks the job: a volume file or DICOM folder →
    :func:`reconstruct_from_volume` (``geometry``, ``views``, ``full_views``, ``noise_i0``,
    ``seed``, ``slices``, ``downsample``, ``metric_window``); projections → :func:`reconstruct_projections`
    (``flats``, ``darks``, ``angles``, ``angle_rows``, ``cor``, ``pixel_size``, ``rows``); a
    ``medvol simulate`` folder → :func:`reconstruct_sinogram_folder`; radial k-space →
    :func:`medvol.recon.kspace.reconstruct_kspace`.

    Raises
    ------
    InputError, OutputExistsError, BackendError, WeightsError — nothing is written then.
    """
    from .._atomic import atomic_dir, check_writable
    from ..manifest import Manifest
    from ..simulate import GEOMETRIES
    from .outputs import write_recon_outputs

    input, out = Path(input), Path(out)
    spec = get_method(method)
    check_writable(out, overwrite, inputs=[input])
    kind = detect_input(input)
    if metric_window is not None and not _no_window(metric_window):
        from ..report import resolve_window

        resolve_window(metric_window)          # an unknown preset fails before any work
    if kind in ("volume", "dicom") and geometry not in GEOMETRIES:
        raise InputError(f"unknown geometry {geometry!r}", hint=f"use {', '.join(GEOMETRIES)}")
    if refine is not None and (not spec.refines or refine < 0):
        raise InputError(f"--refine {refine}: " + ("must be 0 or more" if spec.refines else
                                                   f"method {method} has no refinement"),
                         hint="--refine N applies to --method pdunet (0: the network alone)")
    if kind == "kspace" and refine:
        raise InputError("--refine runs on CT sinograms; radial k-space input is reconstructed "
                         "by the network alone", path=input, hint="drop --refine")
    if kind == "projections" and spec.learned:
        raise InputError(f"method {method} is trained for fan-beam CT and radial MRI, not for "
                         "parallel-beam projections", path=input,
                         hint="use fbp, sirt, cgls or tv")
    params = dict(method=method, weights=weights, filter=filter, n_iter=n_iter, lam=lam,
                  backend=backend, device=device, input_kind=kind, refine=refine)
    if kind in ("volume", "dicom"):
        params.update(geometry=geometry, views=views, full_views=full_views, noise_i0=noise_i0,
                      seed=seed, slices=_span_text(slices) if isinstance(slices, slice)
                      else slices, downsample=downsample,
                      metric_window=(metric_window if metric_window is None
                                     or isinstance(metric_window, str) else list(metric_window)))
    elif kind == "projections":
        params.update(cor=cor, pixel_size=pixel_size, rows=_span_text(rows),
                      angle_rows=_span_text(angle_rows),
                      angles=None if angles is None else Path(angles).name,
                      flats=None if flats is None else Path(flats).name,
                      darks=None if darks is None else Path(darks).name)
    man = Manifest("recon", params)
    if kind == "kspace":
        from .kspace import reconstruct_kspace

        res = reconstruct_kspace(input, method=method, weights=weights, filter=filter,
                                 backend=backend, device=device)
    elif kind == "sinogram":
        res = reconstruct_sinogram_folder(input, method=method, filter=filter, n_iter=n_iter,
                                          lam=lam, backend=backend, device=device,
                                          weights=weights, progress=progress, refine=refine)
    elif kind == "projections":
        res = reconstruct_projections(input, flats=flats, darks=darks, angles=angles,
                                      angle_rows=_as_span(angle_rows, "angle_rows"),
                                      method=method, filter=filter, n_iter=n_iter, lam=lam,
                                      cor=cor, pixel_size=pixel_size, rows=rows,
                                      backend=backend, device=device, progress=progress)
    else:
        vol = load_input_volume(input, kind)
        res = reconstruct_from_volume(vol, geometry=geometry, views=views,
                                      full_views=full_views, method=method, filter=filter,
                                      n_iter=n_iter, lam=lam, I0=noise_i0, seed=seed,
                                      slices=slices, downsample=downsample, backend=backend,
                                      device=device, progress=progress, weights=weights,
                                      metric_window=metric_window, refine=refine)
    # the manifest records the values used (defaults resolved), never a null for an unset one
    p = man.data["parameters"]
    for k in ("n_iter", "lam", "weights", "metric_window", "refine"):
        if p.get(k) is None:
            p.pop(k, None)
    win = res.record.get("metric_window")
    if win:                                    # the window actually used
        p["metric_window"] = {k: win[k] for k in ("name", "width", "level")}
    p.update(res.record.get("resolved") or resolved_params(
        method, filter=filter, n_iter=n_iter, lam=lam, lam_solver=res.record.get("tv_lambda"),
        weights=weights, **_refine_kw(spec, refine, lam)))
    _add_inputs(man, input)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_recon_outputs(res, tmp, man)
    return res


def simulate_job(input: str | os.PathLike, out: str | os.PathLike, *, geometry: str = "fan",
                 views: int = 16, full_views: int = 360, noise_i0: float | None = None,
                 seed: int = 0, slices: str | slice | None = None, downsample: int = 1,
                 backend: str = "auto", overwrite: bool = False) -> dict[str, Any]:
    """The ``medvol simulate`` job: a sparse-view (optionally noisy) acquisition of a volume.

    Writes ``out/sinogram.npy``, ``out/sinogram.json`` and ``out/manifest.json`` atomically
    (:func:`medvol.recon.simulation.simulate_to_folder`); returns the ``sinogram.json`` content.
    """
    from .._atomic import atomic_dir, check_writable
    from ..manifest import Manifest
    from .simulation import simulate_to_folder

    input, out = Path(input), Path(out)
    check_writable(out, overwrite, inputs=[input])
    vol = load_input_volume(input)
    man = Manifest("simulate", dict(geometry=geometry, views=views, full_views=full_views,
                                    noise_i0=noise_i0, seed=seed, slices=_span_text(slices)
                                    if isinstance(slices, slice) else slices,
                                    downsample=downsample))
    if input.is_file():
        man.add_input(input, name=input.name)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        info = simulate_to_folder(vol, tmp, geometry=geometry, views=views, full_views=full_views,
                                  I0=noise_i0, seed=seed, slices=slices, downsample=downsample,
                                  backend=backend)
        for f in ("sinogram.npy", "sinogram.json"):
            man.add_output(tmp / f, root=tmp)
        man.write(tmp / "manifest.json")
    return info
