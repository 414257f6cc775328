"""The main job on the bundled sample data (``make demo``).

1. Ingest the tilted GE head CT (gantry tilt + uneven slice gaps corrected by resampling).
2. Simulate a 16x sparse-view fan-beam scan of a few of its slices and reconstruct them with
   FBP and TV, then with the shipped PD-UNet, each scored against the CT in HU on ONE grid (the
   reference at 2x in-plane downsampling; PD-UNet runs on its 128² training grid and its result
   is resampled back) over the full HU range and inside the brain window W80/L40; the table
   of all methods is printed at the end.
3. Reconstruct the real synchrotron projections with an automatically estimated rotation axis.

Every step is one ``medvol`` CLI call; the outputs (NRRD in LPS, manifest.json, report.html)
open in 3D Slicer. Usage: ``python sample_data/demo.py --out demo_out``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(argv: list[str]) -> None:
    from medvol.cli import main

    print("$ medvol " + " ".join(argv), flush=True)
    t0 = time.perf_counter()
    code = main(argv)
    print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
    if code != 0:
        sys.exit(code)


def print_metrics_table(folders: list[Path]) -> None:
    """All methods' metrics from the recon manifests, checked to share one grid and window."""
    import json

    rows, grids, windows = [], set(), set()
    for folder in folders:
        rec = json.loads((folder / "manifest.json").read_text())["record"]
        grid = rec["scoring_grid"]
        grids.add((tuple(grid["shape_zyx"]), tuple(grid["spacing_mm"])))
        w = rec.get("metric_window") or {}
        windows.add((w.get("name"), w.get("width"), w.get("level")))
        for name, m in rec["metrics"].items():
            label = rec["method"] if name == "recon" else "fbp"
            if name != "recon" and name in grid["resampled"]:
                label += f" (on {rec['method']}'s grid, resampled)"
            elif name == "recon" and "recon" in grid["resampled"]:
                label += " (network grid, resampled)"
            rows.append((label, m))
    if len(grids) != 1 or len(windows) != 1:
        sys.exit(f"demo: methods were scored on different grids/windows: {grids} {windows}")
    (shape, spacing), (wname, ww, wl) = grids.pop(), windows.pop()
    print(f"\nSparse-view CT (16x fewer of 360 fan-beam views), all methods scored on ONE grid: "
          f"{shape[1]}x{shape[2]} px of {spacing[0]:.4g} mm, {shape[0]} slices (HU).")
    print(f"Full range: data range = reference max-min. Window: {wname} W{ww:g}/L{wl:g} "
          f"(both images clipped to it, data range {ww:g} HU).")
    print(f"{'method':44s} {'PSNR dB':>8s} {'SSIM':>7s} {'RMSE HU':>8s} | "
          f"{'PSNR win':>8s} {'SSIM win':>8s}")
    for label, m in rows:
        print(f"{label:44s} {m['psnr_db']:8.2f} {m['ssim']:7.4f} {m['rmse']:8.1f} | "
              f"{m.get('psnr_db_window', float('nan')):8.2f} "
              f"{m.get('ssim_window', float('nan')):8.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("demo_out"))
    args = ap.parse_args()
    out = args.out
    run(["ingest", str(HERE / "dicom" / "ct_head_ge_tilt"), "-o", str(out / "ingest"),
         "--overwrite"])
    series = sorted((out / "ingest").glob("*/volume.nrrd"))
    if not series:
        sys.exit("demo: ingest produced no volume")
    ct = series[0]
    run(["info", str(ct)])
    run(["recon", str(ct), "--geometry", "fan", "--views", "16", "--method", "tv",
         "--slices", "40:100:20", "--downsample", "2", "-o", str(out / "recon_ct_tv"),
         "--overwrite"])
    run(["recon", str(ct), "--geometry", "fan", "--views", "16", "--method", "pdunet",
         "--slices", "40:100:20", "--downsample", "2", "-o", str(out / "recon_ct_pdunet"),
         "--overwrite"])
    run(["recon", str(HERE / "projections" / "synchrotron_parallel"), "--method", "fbp",
         "--cor", "auto", "-o", str(out / "recon_synchrotron"), "--overwrite"])
    print_metrics_table([out / "recon_ct_tv", out / "recon_ct_pdunet"])
    print(f"\nDone. Open in 3D Slicer: {ct}, {out / 'recon_ct_tv' / 'recon.nrrd'}, "
          f"{out / 'recon_ct_pdunet' / 'recon.nrrd'}, "
          f"{out / 'recon_synchrotron' / 'recon.nrrd'}; reports: {out}/*/report.html")


if __name__ == "__main__":
    main()
