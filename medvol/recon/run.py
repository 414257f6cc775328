"""End-to-end reconstruction jobs: the library behind ``medvol recon`` and the flows.

Two entry points, each returning the reconstructed :class:`~medvol.Volume` plus a record of what
was done (parameters, metrics, decisions) that the CLI turns into ``manifest.json`` and a report:

* :func:`reconstruct_from_volume` — *evaluation mode*: a reference volume (e.g. an ingested CT in
  HU) is projected with a chosen geometry, sparse-sampled to every ``views``-th view (optionally
  with Poisson noise), reconstructed, and compared with the reference (PSNR, SSIM, RMSE in HU).
* :func:`reconstruct_projections` — *data mode*: real parallel-beam projections with flat/dark
  frames → flat/dark correction, −log, centre-of-rotation estimation, slice-wise reconstruction.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import GeometryError, InputError
from ..volume import Volume

log = logging.getLogger("medvol.recon")

__all__ = ["METHODS", "ReconResult", "reconstruct", "reconstruct_from_volume",
           "reconstruct_projections", "downsample_inplane"]

METHODS = ("fbp", "sirt", "cgls", "tv", "pdunet")
LEARNED = ("pdunet",)


@dataclass
class ReconResult:
    """What a reconstruction job produced."""

    volume: Volume
    reference: Volume | None = None
    baseline: Volume | None = None          # e.g. FBP of the same data, or a centred-axis recon
    record: dict[str, Any] = field(default_factory=dict)


def reconstruct(A, y, method: str, *, filter: str = "hann", n_iter: int | None = None,
                lam: float = 0.01, nonneg: bool = True, progress: bool = False,
                weights: str | None = None):
    """Run one of :data:`METHODS` with the operator ``A`` on sinogram(s) ``y`` (torch tensor).

    ``pdunet`` uses shipped or given safetensors ``weights`` (default ``pdunet_ct_x16``; the
    Learned Primal-Dual baseline is ``lpd_ct_x16``)."""
    from . import cgls, fbp, sirt, tv_pdhg

    if n_iter is not None and n_iter < 1:
        raise InputError(f"--n-iter must be at least 1, got {n_iter}")
    if method == "pdunet":
        from .pdunet import pdunet_reconstruct

        return pdunet_reconstruct(A, y, weights=weights or "pdunet_ct_x16")
    if method == "fbp":
        return fbp(A, y, filter=filter)
    if method == "sirt":
        return sirt(A, y, n_iter=n_iter or 200, nonneg=nonneg, progress=progress)
    if method == "cgls":
        return cgls(A, y, n_iter=n_iter or 30, progress=progress)
    if method == "tv":
        return tv_pdhg(A, y, lam=lam, n_iter=n_iter or 300, nonneg=nonneg, progress=progress)
    raise InputError(f"unknown reconstruction method {method!r}",
                     hint=f"choose one of {', '.join(METHODS)}")


def downsample_inplane(vol: Volume, factor: int) -> Volume:
    """Average ``factor × factor`` in-plane blocks of every slice; geometry follows exactly."""
    if factor < 1:
        raise InputError(f"--downsample must be at least 1, got {factor}")
    if factor == 1:
        return vol
    a = vol.numpy().astype(np.float32)
    nz, ny, nx = a.shape
    ny2, nx2 = ny // factor, nx // factor
    if ny2 < 8 or nx2 < 8:
        raise GeometryError(f"downsampling {ny}x{nx} by {factor} leaves too few pixels")
    a = a[:, : ny2 * factor, : nx2 * factor].reshape(nz, ny2, factor, nx2, factor).mean(axis=(2, 4))
    half = (factor - 1) / 2.0
    origin = vol.index_to_world([half, half, 0.0])
    spacing = (vol.spacing[0] * factor, vol.spacing[1] * factor, vol.spacing[2])
    return Volume(a, spacing=spacing, origin=origin, direction=vol.direction, meta=vol.meta)


def resample_inplane(vol: Volume, n: int, pixel: float, fill: float | None = None) -> Volume:
    """Resample every slice onto an ``n × n`` grid of ``pixel`` mm, centred on the slice centre
    (same direction and slice positions; linear interpolation; ``fill`` outside)."""
    import SimpleITK as sitk

    nz, ny, nx = vol.shape
    centre = vol.index_to_world([(nx - 1) / 2.0, (ny - 1) / 2.0, 0.0])
    spacing = np.array([pixel, pixel, vol.spacing[2]])
    origin = centre - vol.direction @ (spacing * np.array([(n - 1) / 2.0, (n - 1) / 2.0, 0.0]))
    a = vol.numpy().astype(np.float32)
    fill = float(a.min()) if fill is None else float(fill)
    img = sitk.GetImageFromArray(a)
    img.SetSpacing(vol.spacing); img.SetOrigin(vol.origin)
    img.SetDirection(tuple(vol.direction.reshape(-1)))
    ref = sitk.Image(int(n), int(n), int(nz), sitk.sitkFloat32)
    ref.SetSpacing(tuple(spacing)); ref.SetOrigin(tuple(origin))
    ref.SetDirection(tuple(vol.direction.reshape(-1)))
    out = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, fill, sitk.sitkFloat32)
    return Volume(sitk.GetArrayFromImage(out), spacing=spacing, origin=origin,
                  direction=vol.direction, meta=vol.meta)


def _slice_range(vol: Volume, slices: str | None) -> Volume:
    """Axial slices by a Python-style ``START:STOP[:STEP]`` (or one index ``K``; negatives count
    from the end); the step must be positive."""
    if not slices:
        return vol
    n = vol.shape[0]
    parts = [p.strip() for p in slices.split(":")]
    try:
        vals = [int(p) if p else None for p in parts]
    except ValueError:
        raise InputError(f"--slices {slices!r} is not START:STOP[:STEP]") from None
    if len(vals) == 1:
        k = vals[0]
        if k is None or not -n <= k < n:
            raise InputError(f"--slices {slices!r} selects no slice of a volume with {n} slices")
        k %= n
        return vol[k:k + 1]
    if len(vals) > 3 or (len(vals) == 3 and vals[2] is not None and vals[2] < 1):
        raise InputError(f"--slices {slices!r}: give START:STOP[:STEP] with a positive STEP")
    sel = slice(*vals)
    if len(range(*sel.indices(n))) == 0:
        raise InputError(f"--slices {slices!r} selects no slice of a volume with {n} slices")
    return vol[sel]


def _is_ct(vol: Volume) -> bool:
    if str(vol.meta.get("modality", vol.meta.get("Modality", ""))).upper() == "CT":
        return True
    return float(np.nanmin(vol.numpy())) < -500  # HU-valued air


@dataclass
class _SimSetup:
    ref: Volume              # selected, downsampled reference
    ct: bool                 # HU data converted to attenuation
    x_true: np.ndarray       # (nz, ny, nx) in projection units
    geometry: Any            # sparse-view geometry
    vol_shape: tuple
    spacing: tuple
    data: Any                # torch tensor shaped for the operator's batch convention


def _simulation_setup(vol: Volume, geometry: str, views: int, full_views: int,
                      slices: str | None, downsample: int, task_grid=None) -> _SimSetup:
    """Select/downsample the reference, convert HU → μ, and build the sparse-view geometry:
    2D fan/parallel per axial slice (slices form the batch) or one 3D cone beam over the slab."""
    import torch

    from ..simulate import (default_cone_geometry, default_fan_geometry,
                            default_parallel_geometry, hu_to_mu)

    if views < 1 or full_views < views:
        raise InputError(f"--views {views} must be between 1 and --full-views {full_views}")
    ref = _slice_range(vol, slices)
    if task_grid is not None:  # a learned model's training grid: (n, pixel mm)
        ref = resample_inplane(ref, task_grid[0], task_grid[1],
                               fill=-1024.0 if _is_ct(ref) else None)
    else:
        ref = downsample_inplane(ref, downsample)
    ct = _is_ct(ref)
    img = ref.numpy().astype(np.float32)
    x_true = hu_to_mu(img) if ct else img
    nz, ny, nx = img.shape
    sx, sy, sz = ref.spacing
    if geometry in ("fan", "parallel"):
        make = default_fan_geometry if geometry == "fan" else default_parallel_geometry
        g_full = make((ny, nx), (sy, sx), n_views=full_views)
        vol_shape, spacing, data = (ny, nx), (sy, sx), torch.from_numpy(x_true)
    elif geometry == "cone":
        g_full = default_cone_geometry((nz, ny, nx), (sz, sy, sx), n_views=full_views)
        vol_shape, spacing = (nz, ny, nx), (sz, sy, sx)
        data = torch.from_numpy(x_true)[None]
    else:
        raise InputError(f"unknown geometry {geometry!r} for a volume input",
                         hint="use --geometry fan, parallel or cone")
    return _SimSetup(ref, ct, x_true, g_full.subsample(views), vol_shape, spacing, data)


def reconstruct_from_volume(vol: Volume, *, geometry: str = "fan", views: int = 16,
                            full_views: int = 360, method: str = "tv", filter: str = "hann",
                            n_iter: int | None = None, lam: float | None = None,
                            I0: float | None = None, seed: int = 0, slices: str | None = None,
                            downsample: int = 1, backend: str = "auto", device: str | None = None,
                            progress: bool = False, weights: str | None = None) -> ReconResult:
    """Simulate sparse-view data from a reference volume, reconstruct, and score it.

    Parameters
    ----------
    vol : Volume
        Reference, ``(z, y, x)``. CT in HU is converted to linear attenuation (1/mm) for the
        projection and back to HU afterwards.
    geometry : ``"fan"`` (2D fan beam per axial slice), ``"parallel"`` (2D parallel per slice)
        or ``"cone"`` (3D circular cone beam over the selected slab).
    views : int
        Sparse-view factor: every ``views``-th of ``full_views`` views is kept.
    method, filter, n_iter, lam : reconstruction options (see :func:`reconstruct`); ``lam`` is
        the TV weight in units of the normalised problem (default 0.02 × the data's scale).
    I0 : float, optional
        Photons per ray for Poisson noise (None: noiseless).
    slices : ``"START:STOP[:STEP]"`` subset of axial slices; ``downsample`` averages in-plane
        blocks first (fast previews).

    Returns
    -------
    ReconResult with ``volume`` (same grid as the selected reference), ``reference``,
    ``baseline`` (FBP of the same data, when ``method`` is not FBP) and ``record``.
    """
    import torch

    from ..kernels import Projector
    from ..metrics import psnr, rmse, ssim
    from ..simulate import add_poisson_noise, mu_to_hu

    task_grid = None
    if method in LEARNED:
        # the shipped network was trained on one grid and geometry: evaluate it there
        from ..learned.data import get_task

        task = get_task("ct_x16")
        if geometry != "fan" or views != task.sparsity or full_views != 360:
            raise InputError(f"the shipped PD-UNet weights are for a fan beam, every "
                             f"{task.sparsity}th of 360 views",
                             hint="use --geometry fan --views 16 --full-views 360")
        task_grid = (task.image_size, task.pixel)
    st = _simulation_setup(vol, geometry, views, full_views, slices, downsample, task_grid)
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

    scale = float(np.percentile(x_true, 99.5)) or 1.0
    lam_eff = (0.02 if lam is None else lam) * scale
    t0 = time.perf_counter()
    x = reconstruct(A, y, method, filter=filter, n_iter=n_iter, lam=lam_eff, progress=progress,
                    weights=weights)
    record["seconds_reconstruct"] = round(time.perf_counter() - t0, 3)
    if method in LEARNED:
        record["weights"] = weights or "pdunet_ct_x16"
        record["grid_note"] = (f"slices resampled to the network's {task_grid[0]}x{task_grid[0]} "
                               f"grid of {task_grid[1]:.4g} mm")
    record["tv_lambda"] = lam_eff if method == "tv" else None
    base = reconstruct(A, y, "fbp", filter=filter) if method != "fbp" else None

    def to_vol(t, tag):
        a = t.detach().cpu().numpy().reshape(nz, ny, nx).astype(np.float32)
        if ct:
            a = mu_to_hu(a)
        return ref.with_array(a, recon_method=tag)

    out = to_vol(x, method)
    baseline = to_vol(base, "fbp") if base is not None else None
    # metrics in the reference's units (HU for CT) against what the simulation saw: HU below
    # air (scanner padding such as −3024) is clipped to −1000 with μ ≥ 0.
    # SSIM/PSNR data range = reference max − min.
    ref_a = (mu_to_hu(x_true) if ct else x_true).astype(np.float32)
    ref = ref.with_array(ref_a)
    dr = float(ref_a.max() - ref_a.min())
    metrics = {}
    for name, v in (("recon", out), ("fbp", baseline)):
        if v is None:
            continue
        a = v.numpy()
        metrics[name] = {
            "psnr_db": round(float(psnr(a, ref_a, data_range=dr)), 3),
            "ssim": round(float(np.mean([ssim(a[k], ref_a[k], data_range=dr)
                                         for k in range(nz)])), 4),
            "rmse": round(float(rmse(a, ref_a)), 3),
        }
    record["metrics"] = metrics
    record["metric_units"] = "HU" if ct else "input units"
    record["ssim_data_range"] = f"reference max-min = {dr:.1f}"
    return ReconResult(volume=out, reference=ref, baseline=baseline, record=record)


def reconstruct_projections(path, *, flats=None, darks=None, angles=None, angle_rows=None,
                            method: str = "fbp", filter: str = "hann", n_iter: int | None = None,
                            lam: float | None = None, cor: str = "auto",
                            pixel_size: float = 1.0, rows: str | None = None,
                            backend: str = "auto", device: str | None = None,
                            progress: bool = False) -> ReconResult:
    """Reconstruct real parallel-beam projections slice by slice (one slice per detector row).

    ``cor`` is ``"auto"`` (estimate), ``"none"`` (axis at the detector centre) or a number of
    detector pixels (offset of the rotation axis from the detector centre). The result's
    ``baseline`` is the centred-axis reconstruction, for the crescent-artefact comparison.
    """
    import torch

    from ..geometry import ParallelBeam2D
    from ..kernels import Projector
    from ..projections import (estimate_center_of_rotation, line_integrals, load_projections,
                               sharpness)

    p = load_projections(path, flats=flats, darks=darks, angles=angles, angle_rows=angle_rows)
    lines = line_integrals(p)                                            # (views, rows, cols)
    n_views, n_rows, n_cols = lines.shape
    n_rows_all, row0 = n_rows, 0
    if rows:
        r0, _, r1 = rows.partition(":")
        try:
            row0, row1 = int(r0 or 0), (int(r1) if r1 else n_rows)
        except ValueError:
            raise InputError(f"rows {rows!r} is not A:B (detector rows)") from None
        row0, row1, _ = slice(row0, row1).indices(n_rows)
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
            det_offset = -float(cor) * pixel_size
        except ValueError:
            raise InputError(f"--cor {cor!r} must be 'auto', 'none' or a pixel offset") from None
        record["cor"] = {"method": "given", "offset_px": float(cor)}
    record["det_offset_mm"] = det_offset

    def recon_with(offset, meth):
        g = ParallelBeam2D(angles=p.angles, n_det=n_cols, det_spacing=pixel_size, det_offset=offset)
        A = Projector(g, (n_cols, n_cols), (pixel_size, pixel_size), backend=backend,
                      device=device)
        y = torch.from_numpy(sino)
        scale = float(np.percentile(sino, 99)) / (n_cols * pixel_size) or 1.0
        lam_eff = (0.02 if lam is None else lam) * scale
        return reconstruct(A, y, meth, filter=filter, n_iter=n_iter, lam=lam_eff,
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


# ---------------------------------------------------------------------------------------------
# sinogram files: what ``medvol simulate`` writes and ``medvol recon`` reads back
# ---------------------------------------------------------------------------------------------
def simulate_to_folder(vol: Volume, folder, *, geometry: str = "fan", views: int = 16,
                       full_views: int = 360, I0: float | None = None, seed: int = 0,
                       slices: str | None = None, downsample: int = 1,
                       backend: str = "auto") -> dict[str, Any]:
    """Project ``vol`` (HU → μ for CT), keep every ``views``-th view, optionally add Poisson noise,
    and write ``sinogram.npy`` + ``sinogram.json`` (geometry, grid, units) into ``folder``.

    2D geometries give ``(slices, views, n_det)``; cone beam ``(views, n_rows, n_det)``.
    """
    import json
    from pathlib import Path

    from ..kernels import Projector
    from ..simulate import add_poisson_noise

    st = _simulation_setup(vol, geometry, views, full_views, slices, downsample)
    ref, ct, g, vol_shape, spacing = st.ref, st.ct, st.geometry, st.vol_shape, st.spacing
    nz, ny, nx = st.x_true.shape
    y = Projector(g, vol_shape, spacing, backend=backend)(st.data).numpy().astype(np.float32)
    if I0:
        y = add_poisson_noise(y, I0, seed=seed)
    folder = Path(folder)
    np.save(folder / "sinogram.npy", y)
    info = {"geometry": g.to_dict(), "volume_shape": list(vol_shape), "spacing": list(spacing),
            "ct_hu": ct, "units": "line integrals of mu (1/mm) x mm" if ct else "line integrals",
            "I0": I0, "seed": seed, "views_factor": views, "full_views": full_views,
            "grid": {"shape_zyx": [nz, ny, nx], "spacing": list(ref.spacing),
                     "origin": list(ref.origin), "direction": ref.direction.tolist()}}
    (folder / "sinogram.json").write_text(json.dumps(info, indent=2))
    return info


def reconstruct_sinogram_folder(folder, *, method: str = "tv", filter: str = "hann",
                                n_iter: int | None = None, lam: float | None = None,
                                backend: str = "auto", device: str | None = None,
                                progress: bool = False, weights: str | None = None) -> ReconResult:
    """Reconstruct ``sinogram.npy`` + ``sinogram.json`` written by :func:`simulate_to_folder`."""
    import json
    from pathlib import Path

    import torch

    from ..geometry import geometry_from_dict
    from ..kernels import Projector
    from ..simulate import mu_to_hu

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
    scale = float(np.percentile(y, 99)) / max(info["volume_shape"][-1] * info["spacing"][-1], 1e-6)
    lam_eff = (0.02 if lam is None else lam) * (scale or 1.0)
    x = reconstruct(A, yt, method, filter=filter, n_iter=n_iter, lam=lam_eff, progress=progress,
                    weights=weights)
    grid = info["grid"]
    a = x.detach().cpu().numpy().reshape(grid["shape_zyx"]).astype(np.float32)
    if info.get("ct_hu"):
        a = mu_to_hu(a)
    vol = Volume(a, spacing=grid["spacing"], origin=grid["origin"], direction=grid["direction"],
                 meta={"recon_method": method})
    return ReconResult(volume=vol, record={"mode": "sinogram", "method": method, "ct_hu":
                                           info.get("ct_hu"), "geometry": info["geometry"]["type"],
                                           "views": g.n_views})


def reconstruct_kspace(path, *, method: str = "pdunet", weights: str | None = None,
                       image_size: int | None = None, pixel: float = 1.0,
                       filter: str = "hann", backend: str = "auto",
                       device: str | None = None) -> ReconResult:
    """Reconstruct undersampled radial MRI k-space (``.h5``/``.npz``/``.npy`` + angles).

    ``backend``/``device`` select the projector as for sinograms (``auto``: ASTRA CUDA on a GPU,
    else medvol's kernels, on ``device``).

    The k-space becomes a sinogram by the Fourier slice theorem (one centred 1D inverse FFT per
    spoke, magnitude); ``method="pdunet"`` reconstructs it with the MRI PD-UNet
    (default weights ``pdunet_mri_x16``), ``"fbp"`` with filtered back-projection. The
    density-compensated gridding (NUFFT adjoint) image is the baseline.
    """
    from ..mri import gridding_recon, read_radial_kspace

    if method not in ("pdunet", "fbp"):
        raise InputError(f"--method {method!r} is not available for radial k-space",
                         hint="use --method pdunet or fbp")
    k, traj = read_radial_kspace(path)
    if not np.all(np.isfinite(k)):
        raise InputError("k-space contains NaN or infinite values", path=path)
    from .pdunet import kspace_to_model_input

    sino, A = kspace_to_model_input(k, traj, image_size=image_size, pixel=pixel, backend=backend,
                                    device=device)
    n = A.domain_shape[-1]
    t0 = time.perf_counter()
    if method == "pdunet":
        from .pdunet import pdunet_reconstruct

        x = pdunet_reconstruct(A, sino, weights=weights or "pdunet_mri_x16")
    else:
        from . import fbp

        x = fbp(A, sino, filter=filter)
    seconds = time.perf_counter() - t0
    x = np.asarray(x, dtype=np.float32).reshape(-1, n, n)
    base = np.stack([gridding_recon(kk, traj, (n, n), pixel=pixel)
                     for kk in np.asarray(k).reshape(-1, *k.shape[-2:])]).astype(np.float32)
    sp = (pixel, pixel, pixel)
    org = (-(n - 1) / 2 * pixel, -(n - 1) / 2 * pixel, 0.0)
    vol = Volume(x, spacing=sp, origin=org, meta={"recon_method": method, "modality": "MR"})
    baseline = Volume(base, spacing=sp, origin=org, meta={"recon_method": "gridding"})
    return ReconResult(volume=vol, baseline=baseline, record={
        "mode": "radial-kspace", "method": method, "spokes": int(traj.n_spokes),
        "readout": int(traj.n_read), "image_size": n, "backend": A.backend,
        "device": device, "weights": weights if method == "pdunet"
        else None, "seconds_reconstruct": round(seconds, 3)})
