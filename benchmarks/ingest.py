"""DICOM ingest speed: medvol ``read_dicom_series`` vs SimpleITK ``ImageSeriesReader``.

Run: ``.venv/bin/python benchmarks/ingest.py [--repeat 5]``. Prints seconds per series (median of
``--repeat`` runs) on the tilted GE head CT (28 slices, 512², 18.5° tilt, uneven gaps) and on the
regular pydicom ``CT5N`` series. SimpleITK does not correct gantry tilt or uneven spacing (it only
warns), so its GE result is a sheared stack with one average spacing; medvol's default resamples
to an orthogonal 1.08 mm grid, and ``resample="never"`` refuses the GE series (shown as "refused").
"""
from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _timeit(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _sitk_read(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    import SimpleITK as sitk
    from pydicom.data import get_testdata_file

    from medvol.errors import DicomError
    from medvol.io import read_dicom_series

    logging.getLogger("medvol.io.dicom").setLevel(logging.ERROR)
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    cases = []
    ge = REPO / "sample_data" / "dicom" / "ct_head_ge_tilt"      # bundled
    cases.append(("GE head CT, 28×512², tilt 18.5°", ge))
    ct5n = get_testdata_file("dicomdirtests/DICOMDIR")
    if ct5n:
        cases.append(("pydicom CT5N, 5×16², regular", Path(ct5n).parent / "98892001" / "CT5N"))

    rows = []
    for name, folder in cases:
        read_dicom_series(folder)  # warm caches/imports
        _sitk_read(folder)
        t_auto = _timeit(lambda: read_dicom_series(folder), args.repeat)
        try:
            t = _timeit(lambda: read_dicom_series(folder, resample="never"), args.repeat)
            t_never = f"{t:.3f}"
        except DicomError:
            t_never = "refused"
        t_sitk = _timeit(lambda: _sitk_read(folder), args.repeat)
        v = read_dicom_series(folder)[0]
        img = _sitk_read(folder)
        rows.append((name, t_auto, t_never, t_sitk, v.shape, tuple(reversed(img.GetSize())),
                     v.meta["ingest"]["tilt_deg"]))

    print(f"median of {args.repeat} runs, seconds per series (2 shared CPU cores)\n")
    hdr = (f"{'series':34s} {'medvol auto':>12s} {'medvol never':>13s} {'SimpleITK':>10s}  "
           f"{'medvol shape':>16s} {'SimpleITK shape':>16s} {'tilt':>6s}")
    print(hdr)
    print("-" * len(hdr))
    for name, a, nv, s, vs, ss, tilt in rows:
        print(f"{name:34s} {a:12.3f} {nv:>13s} {s:10.3f}  {str(vs):>16s} {str(ss):>16s} "
              f"{tilt:5.1f}°")
    print("\nSimpleITK does not correct gantry tilt or uneven slice spacing: on the GE series it "
          "returns the sheared 28-slice stack with one mean spacing (and only warns), while medvol "
          "resamples onto an orthogonal uniform grid (the extra time is decoding + resampling "
          "to 134×611×512 voxels).")


if __name__ == "__main__":
    main()
