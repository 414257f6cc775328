"""Seeded generator of hostile inputs for the ``medvol`` command line (issue 13).

Every case is built from the real data (``sample_data/dicom`` CT slices cropped to 64×64 to keep
the suite fast, ``../shared/data`` when present) into a fresh folder ``root``:

* ``root/in/``   — the input (the only thing the command may read),
* ``root/out``   — the output path (must not exist afterwards when the command fails),
* ``root/secret.raw`` — a canary *outside* the input: its bytes must never appear in any output
  or printed line.

``cases()`` returns :class:`Case` objects; ``Case.build(root)`` writes the input and returns the
command-line arguments. ``expect`` is the set of acceptable exit codes (documented in
``medvol --help``; never 70).
"""
from __future__ import annotations

import gzip
import io
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data" / "dicom" / "ct_head_ge_tilt"
CANARY = b"MEDVOL-CANARY-7f3a9c-SECRET"
SEED = 1313


@dataclass
class Case:
    name: str
    cls: str            # issue-13 class: file-read, data-loss, concurrency, bomb, values, ...
    command: str        # ingest | info | recon | register | run-pipeline | weights
    build: Callable[[Path], list]
    expect: set
    one_line: bool = True          # a failure prints exactly one stderr line
    run_kw: dict = field(default_factory=dict)
    check: Callable | None = None  # extra assertion(root, run) -> None
    slow: bool = False
    timeout: float | None = None   # only cases that start Prefect's server get more than 60 s
    xfail: str | None = None       # known gap owned elsewhere (reported, not hidden)


# ----------------------------------------------------------------------------- inputs
def _slices(n: int = 3, size: int = 64):
    """The first ``n`` real CT slices, cropped to ``size``² (pydicom datasets)."""
    import pydicom

    files = sorted(SAMPLE.glob("*.dcm"))[:n]
    out = []
    for f in files:
        ds = pydicom.dcmread(f)
        arr = ds.pixel_array[200:200 + size, 200:200 + size].copy()
        ds.Rows, ds.Columns = size, size
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        out.append(ds)
    return out


def write_series(folder: Path, datasets, names=None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ds in enumerate(datasets):
        p = folder / (names[k] if names else f"{k:02d}.dcm")
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def _secret(root: Path) -> Path:
    p = root / "secret.raw"
    p.write_bytes((CANARY * (64 * 64 * 64 * 2 // len(CANARY) + 1))[:64 * 64 * 64 * 2])
    return p


def _nhdr(path: Path, data_file: str, sizes=(64, 64, 64), typ="short", encoding="raw",
          extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("NRRD0004\n" f"type: {typ}\ndimension: 3\nspace: left-posterior-superior\n"
                    f"sizes: {' '.join(map(str, sizes))}\n"
                    "space directions: (1,0,0) (0,1,0) (0,0,1)\nkinds: domain domain domain\n"
                    f"endian: little\nencoding: {encoding}\nspace origin: (0,0,0)\n{extra}"
                    f"data file: {data_file}\n")
    return path


def _nrrd(path: Path, payload: bytes, sizes=(64, 64, 64), typ="short", encoding="raw",
          extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    hdr = ("NRRD0004\n" f"type: {typ}\ndimension: {len(sizes)}\nspace: left-posterior-superior\n"
           f"sizes: {' '.join(map(str, sizes))}\n"
           + ("space directions: (1,0,0) (0,1,0) (0,0,1)\nkinds: domain domain domain\n"
              if len(sizes) == 3 else "")
           + f"endian: little\nencoding: {encoding}\n{extra}\n")
    path.write_bytes(hdr.encode() + payload)
    return path


def good_nrrd(path: Path, shape=(16, 32, 32)) -> Path:
    rng = np.random.default_rng(SEED)
    a = (rng.random(shape) * 100).astype("<i2")
    return _nrrd(path, a.tobytes(), sizes=shape[::-1])


def _gzip_bomb(n_bytes: int) -> bytes:
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    parts = [co.compress(chunk) for _ in range(n_bytes >> 20)]
    return b"".join(parts) + co.flush()


def _nifti_gz(path: Path, dims, data: bytes = b"") -> Path:
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    d = [len(dims)] + list(dims) + [1] * (7 - len(dims))
    struct.pack_into("<8h", hdr, 40, *d)
    struct.pack_into("<h", hdr, 70, 4)     # datatype int16
    struct.pack_into("<h", hdr, 72, 16)    # bitpix
    struct.pack_into("<8f", hdr, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", hdr, 108, 352)  # vox_offset
    struct.pack_into("<f", hdr, 112, 1.0)  # scl_slope
    struct.pack_into("<h", hdr, 254, 1)    # sform code
    struct.pack_into("<4f", hdr, 280, 1, 0, 0, 0)
    struct.pack_into("<4f", hdr, 296, 0, 1, 0, 0)
    struct.pack_into("<4f", hdr, 312, 0, 0, 1, 0)
    hdr[344:348] = b"n+1\0"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(bytes(hdr) + b"\0" * 4 + data)
    return path


# ----------------------------------------------------------------------------- helpers
def _no_canary(root: Path, run) -> None:
    assert CANARY.decode() not in run.stdout + run.stderr, "secret bytes printed"
    out = root / "out"
    if out.exists():
        for p in out.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                if p.suffix == ".gz" or p.name.endswith(".nrrd"):
                    with __import__("contextlib").suppress(Exception):
                        data += gzip.decompress(data[data.find(b"\x1f\x8b"):])
                assert CANARY not in data, f"secret bytes in {p}"


def _ingest(root: Path, *extra) -> list:
    return ["ingest", root / "in", "-o", root / "out", *extra]


def _info(root: Path, target: str = "in") -> list:
    return ["info", root / target]


def _recon(target: Path, root: Path, *extra) -> list:
    return ["recon", target, "-o", root / "out", "--method", "fbp", "--views", "4",
            "--full-views", "32", "--geometry", "parallel", "--no-progress", *extra]


def _register(fixed: Path, moving: Path, root: Path, *extra) -> list:
    return ["register", fixed, moving, "-o", root / "out", "--method", "affine", *extra]


# ----------------------------------------------------------------------------- cases
def _file_read_cases() -> list[Case]:
    cases = []

    def nhdr_variants():
        def absolute(root):
            s = _secret(root)
            return _nhdr(root / "in" / "v.nhdr", str(s))

        def dotdot(root):
            _secret(root)
            return _nhdr(root / "in" / "v.nhdr", "../secret.raw")

        def deep_dotdot(root):
            _secret(root)
            return _nhdr(root / "in" / "v.nhdr", "sub/../../secret.raw")

        def symlink(root):
            s = _secret(root)
            (root / "in").mkdir(parents=True)
            (root / "in" / "data.raw").symlink_to(s)
            return _nhdr(root / "in" / "v.nhdr", "data.raw")

        def fifo(root):
            (root / "in").mkdir(parents=True)
            os.mkfifo(root / "in" / "data.raw")
            return _nhdr(root / "in" / "v.nhdr", "data.raw")

        def etc(root):
            return _nhdr(root / "in" / "v.nhdr", "/etc/passwd", sizes=(4, 4, 4), typ="uchar")

        def devzero(root):
            return _nhdr(root / "in" / "v.nhdr", "/dev/zero")

        def header_fifo(root):
            (root / "in").mkdir(parents=True)
            os.mkfifo(root / "in" / "v.nhdr")
            return root / "in" / "v.nhdr"

        def mhd_abs(root):
            s = _secret(root)
            p = root / "in" / "v.mhd"
            p.parent.mkdir(parents=True)
            p.write_text("ObjectType = Image\nNDims = 3\nDimSize = 64 64 64\n"
                         "ElementType = MET_SHORT\nElementDataFile = " + str(s) + "\n")
            return p

        def mhd_dotdot(root):
            _secret(root)
            p = root / "in" / "v.mhd"
            p.parent.mkdir(parents=True)
            p.write_text("ObjectType = Image\nNDims = 3\nDimSize = 64 64 64\n"
                         "ElementType = MET_SHORT\nElementDataFile = ../secret.raw\n")
            return p

        return {"nhdr-absolute": absolute, "nhdr-dotdot": dotdot, "nhdr-deep-dotdot": deep_dotdot,
                "nhdr-symlink-out": symlink, "nhdr-fifo": fifo, "nhdr-etc-passwd": etc,
                "nhdr-dev-zero": devzero, "header-is-fifo": header_fifo,
                "mhd-absolute": mhd_abs, "mhd-dotdot": mhd_dotdot}

    for name, make in nhdr_variants().items():
        cases.append(Case(f"{name}/info", "file-read", "info",
                          lambda root, m=make: ["info", m(root)], {2}, check=_no_canary))
    for name in ("nhdr-absolute", "nhdr-dotdot", "nhdr-symlink-out", "nhdr-fifo",
                 "mhd-absolute"):
        make = nhdr_variants()[name]
        cases.append(Case(f"{name}/recon", "file-read", "recon",
                          lambda root, m=make: _recon(m(root), root), {2}, check=_no_canary))
    for name in ("nhdr-absolute", "nhdr-dotdot", "nhdr-fifo", "mhd-dotdot"):
        make = nhdr_variants()[name]

        def reg(root, m=make):
            bad = m(root)
            good = good_nrrd(root / "in" / "fixed.nrrd")
            return _register(good, bad, root)
        cases.append(Case(f"{name}/register", "file-read", "register", reg, {2},
                          check=_no_canary))
    return cases


def _data_loss_cases() -> list[Case]:
    cases = []

    def symlink_out(root):
        ds = _slices(3)
        write_series(root / "in", ds[:2])
        write_series(root / "other", ds[2:], names=["x.dcm"])
        (root / "in" / "02.dcm").symlink_to(root / "other" / "x.dcm")
        return _ingest(root)

    def check_symlink_warned(root, run):
        assert "02.dcm" in run.stdout and "symbolic link" in run.stdout
        man = json.loads((root / "out" / "manifest.json").read_text())
        assert man["outputs"][0]["geometry"]["n_slices_in"] == 2

    cases.append(Case("symlink-slice-outside/ingest", "data-loss", "ingest", symlink_out, {0},
                      check=check_symlink_warned))

    def symlink_dir(root):
        write_series(root / "other", _slices(3))
        (root / "in").mkdir()
        write_series(root / "in" / "a", _slices(2))
        (root / "in" / "b").symlink_to(root / "other", target_is_directory=True)
        return _ingest(root)

    def check_dir_warned(root, run):
        assert "symbolic link to a folder" in run.stdout and "/b" in run.stdout

    cases.append(Case("symlink-folder/ingest", "data-loss", "ingest", symlink_dir, {0},
                      check=check_dir_warned))

    def fifo_slice(root):
        write_series(root / "in", _slices(2))
        os.mkfifo(root / "in" / "zz.dcm")
        return _ingest(root)

    cases.append(Case("fifo-in-study/ingest", "data-loss", "ingest", fifo_slice, {0},
                      check=lambda root, run: ("zz.dcm" in run.stdout) or (_ for _ in ()).throw(
                          AssertionError("FIFO not named"))))

    def unreadable_slice(root, flag=()):
        write_series(root / "in", _slices(3))
        os.chmod(root / "in" / "01.dcm", 0)
        return _ingest(root, *flag)

    def unreadable_dir(root):
        write_series(root / "in" / "a", _slices(2))
        write_series(root / "in" / "b", _slices(3)[2:])
        os.chmod(root / "in" / "b", 0)
        return _ingest(root)

    as_user = {"needs_non_root": True}
    cases.append(Case("unreadable-slice/ingest", "data-loss", "ingest", unreadable_slice, {2},
                      run_kw=as_user))
    cases.append(Case("unreadable-folder/ingest", "data-loss", "ingest", unreadable_dir, {2},
                      run_kw=as_user))

    def check_skipped(root, run):
        assert "01.dcm" in run.stdout
        man = json.loads((root / "out" / "manifest.json").read_text())
        assert any("01.dcm" in w for w in man["warnings"])

    cases.append(Case("unreadable-slice-skipped/ingest", "data-loss", "ingest",
                      lambda root: unreadable_slice(root, ("--skip-unreadable",)), {0},
                      run_kw=as_user, check=check_skipped))
    cases.append(Case("unreadable-slice/info", "data-loss", "info",
                      lambda root: (unreadable_slice(root), _info(root))[1], {2}, run_kw=as_user))
    return cases


def _mutate_header(name: str, mutate, expect=frozenset({3}), command="ingest", n=3):
    def build(root):
        ds = _slices(n)
        for k, d in enumerate(ds):
            mutate(d, k)
        write_series(root / "in", ds)
        return _ingest(root) if command == "ingest" else _info(root)
    return Case(f"{name}/{command}", "values", command, build, set(expect))


def _set(tag, value, which=None):
    def m(ds, k):
        if which is None or k == which:
            from pydicom.dataelem import DataElement
            from pydicom.datadict import dictionary_VR

            vr = dictionary_VR(tag)
            ds[tag] = DataElement(tag, vr, value)
    return m


def _raw_elem(keyword, raw: bytes, which=None):
    """Store raw bytes for a tag (bypasses pydicom's own validation)."""
    def m(ds, k):
        if which is None or k == which:
            from pydicom.datadict import dictionary_VR, tag_for_keyword
            from pydicom.dataelem import RawDataElement

            tag = tag_for_keyword(keyword)
            ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(raw), raw, 0, False, True)
    return m


def _values_cases() -> list[Case]:
    cases = []
    bad = {
        "iop-text": ("ImageOrientationPatient", b"a\\b\\c\\d\\e\\f "),
        "iop-zero": ("ImageOrientationPatient", b"0\\0\\0\\0\\0\\0 "),
        "iop-nan": ("ImageOrientationPatient", b"nan\\0\\0\\0\\1\\0 "),
        "slope-text": ("RescaleSlope", b"abc "),
        "slope-inf": ("RescaleSlope", b"inf "),
        "slope-nan": ("RescaleSlope", b"nan "),
        "slope-1e10": ("RescaleSlope", b"1e10"),
        "slope-zero": ("RescaleSlope", b"0 "),
        "intercept-1e30": ("RescaleIntercept", b"1e30"),
        "thickness-text": ("SliceThickness", b"thick "),
        "frames-text": ("NumberOfFrames", b"many"),
        "frames-2e6": ("NumberOfFrames", b"2000000 "),
        "frames-1e9": ("NumberOfFrames", b"1000000000"),
        "frames-negative": ("NumberOfFrames", b"-5"),
        "seriesnumber-9e999": ("SeriesNumber", b"9e999 "),
        "seriesnumber-text": ("SeriesNumber", b"xyz "),
        "spacing-1e-6": ("PixelSpacing", b"1e-6\\1e-6 "),
        "spacing-negative": ("PixelSpacing", b"-1\\-1 "),
        "spacing-text": ("PixelSpacing", b"a\\b "),
        "ipp-1e5-inplane": ("ImagePositionPatient", b"100000\\0\\0 "),
        "ipp-inf": ("ImagePositionPatient", b"inf\\0\\0 "),
        "ipp-text": ("ImagePositionPatient", b"x\\y\\z "),
        "rows-zero": ("Rows", struct.pack("<H", 0)),
    }
    expect_for = {"frames-2e6": {3, 8}, "frames-1e9": {3, 8}, "ipp-1e5-inplane": {3, 8},
                  "spacing-1e-6": {3, 8}}
    for name, (kw, raw) in bad.items():
        which = 1 if name.startswith("ipp-1e5") else None
        cases.append(_mutate_header(name, _raw_elem(kw, raw, which),
                                    expect_for.get(name, {3})))
    def enhanced(nframes: int):
        """One real slice turned into an enhanced multi-frame object (shared functional groups)
        that claims ``nframes`` frames in a few KB."""
        def build(root):
            from pydicom.dataset import Dataset
            from pydicom.sequence import Sequence

            ds = _slices(1)[0]
            pos, ori, pm = Dataset(), Dataset(), Dataset()
            pos.ImagePositionPatient = list(ds.ImagePositionPatient)
            ori.ImageOrientationPatient = list(ds.ImageOrientationPatient)
            pm.PixelSpacing = list(ds.PixelSpacing)
            pm.SliceThickness = 1.0
            shared = Dataset()
            shared.PlanePositionSequence = Sequence([pos])
            shared.PlaneOrientationSequence = Sequence([ori])
            shared.PixelMeasuresSequence = Sequence([pm])
            ds.SharedFunctionalGroupsSequence = Sequence([shared])
            ds.NumberOfFrames = nframes
            write_series(root / "in", [ds])
            return _ingest(root)
        return build

    for n in (2_000_000, 10**9):
        cases.append(Case(f"enhanced-frames-{n:.0e}/ingest", "bomb", "ingest", enhanced(n),
                          {3, 8}))
    for name in ("iop-text", "slope-inf", "seriesnumber-9e999", "frames-2e6"):
        kw, raw = bad[name]
        cases.append(_mutate_header(name, _raw_elem(kw, raw), expect_for.get(name, {3}),
                                    command="info"))
    return cases


def _bomb_cases() -> list[Case]:
    cases = []

    def gap(root):
        ds = _slices(3)
        for d, z in zip(ds, (0.0, 0.02, 2000.0)):
            d.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            d.ImagePositionPatient = [0, 0, z]
        write_series(root / "in", ds)
        return _ingest(root)

    cases.append(Case("slice-gap-1e5/ingest", "bomb", "ingest", gap, {8}))
    cases.append(Case("slice-gap-1e5/info", "bomb", "info",
                      lambda root: (gap(root), _info(root))[1], {8}))

    def deflate_bomb(root):
        """A real slice + a 1.5 GB private element of zeros, deflated (~1.5 MB on disk);
        the deflate stream is built chunk by chunk, never 1.5 GB in memory."""
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_file_meta_info
        from pydicom.uid import DeflatedExplicitVRLittleEndian

        ds = _slices(1)[0]
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
        meta_end = 144 + int.from_bytes(data[140:144], "little")
        n = 1500 << 20
        co = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        parts = [co.compress(data[meta_end:]),
                 co.compress(struct.pack("<HH2sHI", 0x7FE1, 0x1010, b"OB", 0, n))]
        zeros = b"\0" * (1 << 20)
        parts += [co.compress(zeros) for _ in range(n >> 20)]
        parts.append(co.flush())
        meta = ds.file_meta
        meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_file_meta_info(fp, meta, enforce_standard=True)
        (root / "in").mkdir(parents=True)
        (root / "in" / "bomb.dcm").write_bytes(data[:132] + fp.getvalue() + b"".join(parts))
        return _ingest(root)

    cases.append(Case("deflate-bomb/ingest", "bomb", "ingest", deflate_bomb, {3, 8}, slow=True))

    def nrrd_declared(root):
        return _nrrd(root / "in" / "big.nrrd", _gzip_bomb(4 << 20), sizes=(4096, 4096, 4096),
                     encoding="gzip")

    def nrrd_gzip_bomb(root):  # small declared size, huge stream
        return _nrrd(root / "in" / "bomb.nrrd", _gzip_bomb(1 << 30), sizes=(64, 64, 64),
                     encoding="gzip")

    def nii_declared(root):
        return _nifti_gz(root / "in" / "big.nii.gz", (30000, 30000, 30000), b"\0" * 4096)

    def nii_bomb(root):
        p = root / "in" / "bomb.nii.gz"
        p.parent.mkdir(parents=True)
        hdr = _nifti_gz(root / "tmp.nii.gz", (64, 64, 64))
        raw = gzip.decompress(hdr.read_bytes())
        co = zlib.compressobj(9, zlib.DEFLATED, 31)
        parts = [co.compress(raw)] + [co.compress(b"\0" * (1 << 20)) for _ in range(1024)]
        p.write_bytes(b"".join(parts) + co.flush())
        hdr.unlink()
        return p

    def mhd_declared(root):
        p = root / "in" / "v.mha"
        p.parent.mkdir(parents=True)
        p.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 100000\n"
                      b"ElementType = MET_SHORT\nElementDataFile = LOCAL\n" + b"\0" * 100)
        return p

    for name, make, exp in (("nrrd-declared-huge", nrrd_declared, {8}),
                            ("nrrd-gzip-bomb", nrrd_gzip_bomb, {2}),
                            ("nifti-declared-huge", nii_declared, {8}),
                            ("nifti-gzip-bomb", nii_bomb, {0, 2}),
                            ("mha-declared-huge", mhd_declared, {8})):
        cases.append(Case(f"{name}/info", "bomb", "info", lambda root, m=make: ["info", m(root)],
                          exp))
    for name, make, exp in (("nrrd-declared-huge", nrrd_declared, {8}),
                            ("nrrd-gzip-bomb", nrrd_gzip_bomb, {2}),
                            ("nifti-declared-huge", nii_declared, {8})):
        cases.append(Case(f"{name}/recon", "bomb", "recon",
                          lambda root, m=make: _recon(m(root), root), exp))
        cases.append(Case(f"{name}/register", "bomb", "register",
                          lambda root, m=make: _register(good_nrrd(root / "in" / "f.nrrd"),
                                                         m(root), root), exp))
    return cases


def _tiny_volume_cases() -> list[Case]:
    cases = []
    for shape, label in (((1, 1, 1), "1-voxel"), ((1, 8, 8), "1-slice"), ((2, 1, 1), "2x1x1")):
        def mk(root, s=shape):
            return good_nrrd(root / "in" / "tiny.nrrd", s)
        cases.append(Case(f"{label}/recon", "values", "recon",
                          lambda root, m=mk: _recon(m(root), root), {2, 4}))
        cases.append(Case(f"{label}/register", "values", "register",
                          lambda root, m=mk: _register(m(root), m(root), root), {2, 4}))

    def zero(root):
        return _nrrd(root / "in" / "zero.nrrd", b"", sizes=(0, 8, 8))
    cases.append(Case("0-voxel/recon", "values", "recon", lambda r: _recon(zero(r), r), {2}))
    cases.append(Case("0-voxel/register", "values", "register",
                      lambda r: _register(zero(r), zero(r), r), {2}))
    cases.append(Case("0-voxel/info", "values", "info", lambda r: ["info", zero(r)], {2}))
    cases.append(Case("full-views-2e9/recon", "values", "recon",
                      lambda r: ["recon", good_nrrd(r / "in" / "v.nrrd"), "-o", r / "out",
                                 "--full-views", "2000000000", "--views", "1",
                                 "--no-progress"], {2, 8}))
    cases.append(Case("views-0/recon", "values", "recon",
                      lambda r: ["recon", good_nrrd(r / "in" / "v.nrrd"), "-o", r / "out",
                                 "--views", "0", "--no-progress"], {2}))
    return cases


def _injection_cases() -> list[Case]:
    cases = []

    def esc_name(root):
        ds = _slices(3)
        ds[1].ImageOrientationPatient = [1, 0, 0, 0, 0, 0]  # bad IOP → error naming the file
        write_series(root / "in", ds, names=["00.dcm", "\x1b]0;pwned\x07\x1b[2J.dcm", "02.dcm"])
        return _ingest(root)

    def no_escape(root, run):
        assert "\x1b" not in run.stdout + run.stderr and "\x07" not in run.stderr

    cases.append(Case("escape-in-filename/ingest", "injection", "ingest", esc_name, {3},
                      check=no_escape))

    def esc_info(root):
        p = good_nrrd(root / "in" / "\x1b[31mred\x1b[0m.nrrd")
        return ["info", p]

    cases.append(Case("escape-in-filename/info", "injection", "info", esc_info, {0},
                      check=no_escape))

    def markup_out(root):
        p = good_nrrd(root / "in" / "v.nrrd")
        return ["recon", p, "-o", root / "out[/x]", "--method", "fbp", "--views", "4",
                "--full-views", "32", "--geometry", "parallel", "--no-progress"]

    cases.append(Case("rich-markup-in-output/recon", "injection", "recon", markup_out, {0},
                      check=lambda root, run: (root / "out[/x]" / "recon.nrrd").exists()
                      or (_ for _ in ()).throw(AssertionError("no output"))))

    def markup_in(root):
        write_series(root / "in" / "[bold]x[/y]", _slices(2))
        return ["ingest", root / "in", "-o", root / "out"]

    cases.append(Case("rich-markup-in-input/ingest", "injection", "ingest", markup_in, {0}))
    return cases


def _output_cases() -> list[Case]:
    cases = []

    def exists(root):
        write_series(root / "in", _slices(2))
        (root / "out").mkdir()
        (root / "out" / "keep.txt").write_text("x")
        return _ingest(root)

    cases.append(Case("output-exists/ingest", "concurrency", "ingest", exists, {5},
                      check=lambda root, run: (root / "out" / "keep.txt").exists()
                      or (_ for _ in ()).throw(AssertionError("replaced"))))

    def empty_exists(root):
        write_series(root / "in", _slices(2))
        (root / "out").mkdir()
        return _ingest(root)

    cases.append(Case("output-empty-dir-exists/ingest", "concurrency", "ingest", empty_exists,
                      {5}))

    def inside(root):
        write_series(root / "in", _slices(2))
        return ["ingest", root / "in", "-o", root / "in" / "out"]

    cases.append(Case("output-inside-input/ingest", "debris", "ingest", inside, {2}))

    def efbig(root):
        write_series(root / "in", _slices(3))
        return _ingest(root)

    cases.append(Case("efbig-output/ingest", "os-error", "ingest", efbig, {9},
                      run_kw={"fsize": 4096}))

    def eacces(root):
        write_series(root / "in", _slices(2))
        (root / "ro").mkdir()
        os.chmod(root / "ro", 0o555)
        return ["ingest", root / "in", "-o", root / "ro" / "out"]

    as_user = {"needs_non_root": True}
    cases.append(Case("eacces-output/ingest", "os-error", "ingest", eacces, {9}, run_kw=as_user))

    def erofs(root):
        write_series(root / "in", _slices(2))
        return ["ingest", root / "in", "-o", "/proc/medvol-out"]

    cases.append(Case("erofs-output/ingest", "os-error", "ingest", erofs, {2, 9}))

    def stale_partial(root):
        write_series(root / "in", _slices(2))
        # a partial folder left by a process that no longer exists (pid 2**22 - 1 is unused)
        (root / f".out.{2**22 - 3}.abcd.partial").mkdir()
        (root / f".out.{2**22 - 3}.abcd.partial" / "volume.nrrd").write_bytes(b"x")
        return _ingest(root)

    def check_stale(root, run):
        assert not list(root.glob(".out.*.partial")), "stale partial not removed"

    cases.append(Case("stale-partial/ingest", "debris", "ingest", stale_partial, {0},
                      check=check_stale))
    return cases


def _pipeline_cases() -> list[Case]:
    def inside(root):
        write_series(root / "in", _slices(2))
        return ["run-pipeline", root / "in", "-o", root / "in" / "out"]

    def missing(root):
        (root / "in").mkdir()
        return ["run-pipeline", root / "nope", "-o", root / "out"]

    def missing_ref(root):
        write_series(root / "in", _slices(2))
        return ["run-pipeline", root / "in", "-o", root / "out", "--register",
                "--reference", root / "none.nrrd"]

    def views0(root):
        write_series(root / "in", _slices(2))
        return ["run-pipeline", root / "in", "-o", root / "out", "--views", "0"]

    def corrupt(root):
        ds = _slices(3)
        ds[1].RescaleSlope = "inf"
        write_series(root / "in", ds)
        return ["run-pipeline", root / "in", "-o", root / "out", "--method", "fbp"]

    return [
        Case("output-inside-study/run-pipeline", "debris", "run-pipeline", inside, {2}),
        Case("missing-study/run-pipeline", "values", "run-pipeline", missing, {2}),
        Case("missing-reference/run-pipeline", "values", "run-pipeline", missing_ref, {2}),
        Case("views-0/run-pipeline", "values", "run-pipeline", views0, {2}),
        # starts Prefect's temporary server (15 s idle, up to a minute on a loaded machine)
        Case("corrupt-study/run-pipeline", "values", "run-pipeline", corrupt, {3}, slow=True,
             timeout=150),
    ]


def _weights_cases() -> list[Case]:
    """Malformed safetensors for ``recon --method pdunet`` and ``register --method micdir``: the
    metadata pass the loaders' first checks so the deeper parsing is exercised."""
    cases = []

    def st_file(path: Path, tensors: dict, meta: dict) -> Path:
        hdr = {"__metadata__": {k: (v if isinstance(v, str) else json.dumps(v))
                                for k, v in meta.items()}}
        off = 0
        blobs = []
        for name, (dtype, shape, data) in tensors.items():
            hdr[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
            off += len(data)
            blobs.append(data)
        h = json.dumps(hdr).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
        return path

    def weights(w: Path, kind: str, meta: dict, huge: dict) -> Path:
        if kind == "bf16":
            return st_file(w, {"x": ("BF16", [2], b"\0" * 4)}, meta)
        if kind == "huge-config":
            return st_file(w, {"x": ("F32", [1], b"\0" * 4)}, {**meta, "config": huge})
        if kind == "pickle":
            w.parent.mkdir(parents=True, exist_ok=True)
            w.write_bytes(b"\x80\x04\x95" + b"cos\nsystem\n(S'touch /tmp/pwned'\ntR." * 3)
            return w
        if kind == "header-len-huge":
            w.parent.mkdir(parents=True, exist_ok=True)
            w.write_bytes(struct.pack("<Q", 2**62) + b"{}")
            return w
        if kind == "truncated":
            return st_file(w, {"x": ("F32", [1000, 1000], b"\0" * 16)}, meta)
        if kind == "config-not-json":
            return st_file(w, {"x": ("F32", [1], b"\0" * 4)}, {**meta, "config": "{width: "})
        raise ValueError(kind)

    pd_meta = {"arch": "pdunet", "config": {"width": 32}, "task": {}}
    reg_meta = {"format": "medvol-registration-1", "model": "micdir", "config": {}}

    def recon_case(kind):
        def build(root):
            w = weights(root / "in" / "w.safetensors", kind, pd_meta,
                        {"width": 10**6, "n_iter": 10**6})
            vol = good_nrrd(root / "in" / "v.nrrd")
            return ["recon", vol, "-o", root / "out", "--method", "pdunet", "--weights", w,
                    "--geometry", "fan", "--views", "16", "--full-views", "360",
                    "--no-progress"]
        return build

    def reg_case(kind):
        def build(root):
            w = weights(root / "in" / "w.safetensors", kind, reg_meta,
                        {"enc_channels": [10**6] * 5, "dec_channels": 10**6})
            f = good_nrrd(root / "in" / "f.nrrd")
            return ["register", f, f, "-o", root / "out", "--method", "micdir", "--weights", w]
        return build

    for kind in ("bf16", "huge-config", "pickle", "header-len-huge", "truncated",
                 "config-not-json"):
        cases.append(Case(f"weights-{kind}/recon", "weights", "weights", recon_case(kind),
                          {2, 7}))
    for kind in ("bf16", "huge-config", "header-len-huge", "truncated"):
        cases.append(Case(f"weights-{kind}/register", "weights", "weights", reg_case(kind),
                          {2, 7}))
    return cases


def cases() -> list[Case]:
    """Every hostile case (deterministic: inputs are derived from the real data and SEED)."""
    return (_file_read_cases() + _data_loss_cases() + _values_cases() + _bomb_cases()
            + _tiny_volume_cases() + _injection_cases() + _output_cases() + _pipeline_cases()
            + _weights_cases())
