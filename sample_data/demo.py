"""The main job on the bundled sample data (``make demo``).

1. Ingest the tilted GE head CT (gantry tilt + uneven slice gaps corrected by resampling).
2. Simulate a 16x sparse-view fan-beam scan of a few of its slices and reconstruct them with
   FBP and TV, then with the shipped PD-UNet, each scored against the CT in HU.
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
         "--slices", "40:100:20", "-o", str(out / "recon_ct_pdunet"), "--overwrite"])
    run(["recon", str(HERE / "projections" / "synchrotron_parallel"), "--method", "fbp",
         "--cor", "auto", "-o", str(out / "recon_synchrotron"), "--overwrite"])
    print(f"\nDone. Open in 3D Slicer: {ct}, {out / 'recon_ct_tv' / 'recon.nrrd'}, "
          f"{out / 'recon_ct_pdunet' / 'recon.nrrd'}, "
          f"{out / 'recon_synchrotron' / 'recon.nrrd'}; reports: {out}/*/report.html")


if __name__ == "__main__":
    main()
