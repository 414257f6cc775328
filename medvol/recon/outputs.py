"""Files of a reconstruction job: volumes (NRRD), figures, HTML report, manifest."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..manifest import Manifest
    from .jobs import ReconResult

__all__ = ["write_recon_outputs", "metrics_caption"]


def metrics_caption(rec: dict) -> str:
    """Where and how a record's metrics were computed, in one line: units, scoring grid, the
    full-range data range and the HU window of the windowed metrics."""
    parts = [str(rec.get("metric_units", ""))]
    grid = rec.get("scoring_grid") or {}
    if grid.get("note"):
        parts.append("all methods on the " + grid["note"])
    if rec.get("ssim_data_range"):
        parts.append("full range: data range " + str(rec["ssim_data_range"]))
    win = rec.get("metric_window")
    if win:
        parts.append(f"window: {win['name']} W{win['width']:g}/L{win['level']:g} "
                     f"(clipped to [{win['range'][0]:g}, {win['range'][1]:g}], data range "
                     f"{win['width']:g})")
    return "; ".join(p for p in parts if p)


def write_recon_outputs(res: "ReconResult", folder: str | os.PathLike, man: "Manifest") -> None:
    """Write a reconstruction job's result into ``folder``.

    Files: ``recon.nrrd`` (LPS), the baseline (``fbp.nrrd``; ``fbp_centred_axis.nrrd`` for
    projections; ``gridding.nrrd`` for radial k-space), ``recon_orthoslices.png``, a comparison
    PNG, ``report.html`` and ``manifest.json`` (``man`` with the outputs, metrics and the record
    added). ``folder`` must exist (e.g. the temporary folder of :func:`medvol._atomic.atomic_dir`).
    """
    import medvol.io as mio
    from ..report import comparison_png, orthoslices_png, write_html_report

    folder = Path(folder)
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
        panels = [res.reference]    # Volumes: drawn in the patient frame (report.comparison_png)
        labels = ["reference"]
        if res.baseline is not None:
            panels.append(res.baseline); labels.append("FBP")
        panels.append(res.volume); labels.append(str(rec.get("method")).upper())
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
        tables["Image quality vs reference (" + metrics_caption(rec) + ")"] = [
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
