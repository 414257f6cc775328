"""No patient identifiers in anything medvol writes or prints (issue 20).

One marked study is shared by every command that reads DICOM: four slices of the bundled GE head
CT copied to a temporary folder, with recognisable markers written into the patient fields
(PatientName, PatientID, PatientBirthDate, PatientAddress), free-text tags (StudyDescription,
SeriesDescription, InstitutionName/Address, ReferringPhysicianName, PerformingPhysicianName,
OperatorsName, AccessionNumber, StudyID, ImageComments), the UIDs (Study/Series/SOP/FrameOfReference
UIDs all contain ``4242424242``) and the input FILE NAMES.

Each command runs (``ingest``, ``recon DICOM_DIR``, ``run-pipeline``, and the watch-folder flow
``medvol.flows.watch.watch_inbox`` that ``medvol serve --inbox`` deploys), then every output byte
is scanned for every marker (case-insensitive): file and folder names; raw bytes; gzip payloads
decompressed (``.nii.gz``, NRRD ``encoding: gzip`` data after the header, any gzip file); PNG
text chunks (tEXt, zTXt, iTXt, decompressed); base64 ``data:`` URIs inside HTML/JSON, decoded;
HDF5 attributes and string datasets; plus stdout/stderr and log records. The Prefect commands run
in a subprocess with a temporary ``PREFECT_HOME``, whose whole content (the SQLite database of the
temporary API server, holding flow/task runs, logs and artifacts, and any persisted results) is
scanned as well.
"""
from __future__ import annotations

import base64
import gzip
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

pydicom = pytest.importorskip("pydicom")

from medvol.cli import main  # noqa: E402

UID_MARK = "4242424242"
ROOT_UID = f"1.2.826.0.1.3680043.8.498.{UID_MARK}"
TAGS = {
    "PatientName": "ZQPHINAME^ZQPHIGIVEN",
    "PatientID": "ZQPHIID90210",
    "PatientBirthDate": "19230417",
    "PatientAddress": "ZQPHIPATADDR",
    "StudyDescription": "ZQPHISTUDYDESC",
    "SeriesDescription": "ZQPHISERDESC",
    "InstitutionName": "ZQPHIINSTITUTE",
    "InstitutionAddress": "ZQPHIINSTADDR",
    "ReferringPhysicianName": "ZQPHIREFDOC",
    "PerformingPhysicianName": "ZQPHIPERFDOC",
    "OperatorsName": "ZQPHIOPERATOR",
    "AccessionNumber": "ZQPHIACC4711",
    "StudyID": "ZQPHISID",
    "ImageComments": "ZQPHICOMMENT",
}
FILE_MARK = "ZQPHIFILENAME"
#: every string that must never appear in any output
MARKERS = sorted({"ZQPHINAME", "ZQPHIGIVEN", "ZQPHIID90210", "19230417", "1923-04-17",
                  "ZQPHIPATADDR", "ZQPHISTUDYDESC", "ZQPHISERDESC", "ZQPHIINSTITUTE",
                  "ZQPHIINSTADDR", "ZQPHIREFDOC", "ZQPHIPERFDOC", "ZQPHIOPERATOR", "ZQPHIACC4711",
                  "ZQPHISID", "ZQPHICOMMENT", UID_MARK, FILE_MARK})


def make_marked_study(src_files: list[Path], dest: Path) -> Path:
    """Copy DICOM files to ``dest`` with PHI markers in tags, UIDs and file names."""
    dest.mkdir(parents=True)
    for k, f in enumerate(src_files):
        ds = pydicom.dcmread(f)
        for tag, value in TAGS.items():
            setattr(ds, tag, value)
        ds.StudyInstanceUID = f"{ROOT_UID}.1"
        ds.SeriesInstanceUID = f"{ROOT_UID}.2"
        ds.FrameOfReferenceUID = f"{ROOT_UID}.4"
        ds.SOPInstanceUID = f"{ROOT_UID}.3.{k + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(dest / f"{FILE_MARK}_{k:03d}.dcm")
    return dest


# ----------------------------------------------------------------------------- the scanner
def _png_texts(data: bytes) -> list[bytes]:
    out, pos = [], 8
    while pos + 8 <= len(data):
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if typ == b"tEXt":
            out.append(body)
        elif typ == b"zTXt":
            key, _, rest = body.partition(b"\0")
            out.append(key + b"\0" + zlib.decompress(rest[1:]))
        elif typ == b"iTXt":
            key, _, rest = body.partition(b"\0")
            flag = rest[0]
            _lang, _, rest2 = rest[2:].partition(b"\0")
            _tkey, _, text = rest2.partition(b"\0")
            out.append(key + b"\0" + (zlib.decompress(text) if flag else text))
        pos += 12 + n
    return out


def _decoded_views(name: str, data: bytes) -> list[bytes]:
    """The raw bytes plus every decoded/decompressed view of them."""
    views = [data]
    if data[:2] == b"\x1f\x8b":
        views += _decoded_views(name[:-3] if name.endswith(".gz") else name, gzip.decompress(data))
    if data[:4] == b"NRRD":
        head, sep, payload = data.partition(b"\n\n")
        if sep and re.search(rb"(?m)^encoding:\s*(gzip|gz)\s*$", head):
            views.append(zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload))
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        views += _png_texts(data)
    if b"data:" in data:
        for m in re.finditer(rb"data:[\w/+.-]+;base64,([A-Za-z0-9+/=]+)", data):
            blob = base64.b64decode(m.group(1))
            views += _decoded_views("inline", blob)
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        views += _h5_strings(name)
    return views


def _h5_strings(path: str) -> list[bytes]:
    import h5py
    import numpy as np

    out: list[bytes] = []
    if not os.path.isfile(path):
        return out

    def visit(_name, obj):
        for k, v in obj.attrs.items():
            out.append(f"{k}={v!r}".encode("utf-8", "replace"))
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "SOUV" and obj.size < 10**6:
            out.append(repr(np.asarray(obj[()])).encode("utf-8", "replace"))

    with h5py.File(path, "r") as f:
        visit("/", f)
        f.visititems(visit)
    return out


def find_markers(root: Path, *texts: str) -> list[str]:
    """``["<where>: <marker>", ...]`` for every marker found under ``root`` or in ``texts``."""
    hits: list[str] = []
    lowered = [(m, m.lower().encode()) for m in MARKERS]

    def check(where: str, blob: bytes):
        low = blob.lower()
        hits.extend(f"{where}: {m}" for m, lm in lowered if lm in low)

    for i, t in enumerate(texts):
        check(f"console/log #{i}", t.encode("utf-8", "replace"))
    for p in sorted(Path(root).rglob("*")):
        rel = str(p.relative_to(root))
        check(f"name {rel}", rel.encode("utf-8", "replace"))
        if p.is_file() and not p.is_symlink():
            for view in _decoded_views(str(p), p.read_bytes()):
                check(rel, view)
    return sorted(set(hits))


def assert_no_phi(hits: list[str]) -> None:
    """No marker anywhere: tags, UIDs and the input FILE NAMES (manifests record input files by
    position and hash only)."""
    assert hits == [], hits


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def marked_study(ge_ct_dir, tmp_path_factory) -> Path:
    files = sorted(ge_ct_dir.glob("*.dcm"))[10:14]
    assert len(files) == 4
    return make_marked_study(files, tmp_path_factory.mktemp("phi") / "study")


def test_the_marked_study_really_carries_the_markers(marked_study):
    """The scanner finds every marker in the input itself (so a clean output means something)."""
    found = find_markers(marked_study)
    for m in MARKERS:
        if m == "1923-04-17":
            continue                        # DICOM stores DA as 19230417
        assert any(h.endswith(": " + m) for h in found), m


def test_scanner_sees_inside_compressed_payloads(tmp_path):
    import numpy as np

    from PIL import Image, PngImagePlugin

    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(b"xx ZQPHIID90210 yy"))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "ZQPHINAME", zip=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "p.png", pnginfo=info)
    hdr = b"NRRD0004\ntype: uint8\ndimension: 1\nsizes: 3\nencoding: gzip\n\n"
    (tmp_path / "v.nrrd").write_bytes(hdr + gzip.compress(b"1923-04-17"))
    found = find_markers(tmp_path)
    assert {"a.txt.gz: ZQPHIID90210", "p.png: ZQPHINAME", "v.nrrd: 1923-04-17"} <= set(found)


# ----------------------------------------------------------------------------- commands
def test_ingest_writes_no_phi(marked_study, tmp_path, capsys, caplog):
    out = tmp_path / "ingest_out"
    with caplog.at_level(logging.DEBUG):
        code = main(["ingest", str(marked_study), "-o", str(out)])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert list(out.rglob("*.nrrd")), "ingest wrote no volume"
    assert_no_phi(find_markers(out, cap.out, cap.err, caplog.text))


def test_ingest_nifti_writes_no_phi(marked_study, tmp_path, capsys, caplog):
    out = tmp_path / "ingest_nii"
    with caplog.at_level(logging.DEBUG):
        code = main(["ingest", str(marked_study), "-o", str(out), "--format", "nii.gz"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert list(out.rglob("*.nii.gz"))
    assert_no_phi(find_markers(out, cap.out, cap.err, caplog.text))


def test_recon_dicom_dir_writes_no_phi(marked_study, tmp_path, capsys, caplog):
    out = tmp_path / "recon_out"
    with caplog.at_level(logging.DEBUG):
        code = main(["recon", str(marked_study), "-o", str(out), "--method", "fbp",
                     "--downsample", "4", "--slices", "0:2", "--no-progress"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert (out / "recon.nrrd").is_file() and (out / "report.html").is_file()
    assert_no_phi(find_markers(out, cap.out, cap.err, caplog.text))


def test_run_pipeline_and_watch_folder_write_no_phi(marked_study, tmp_path):
    """``medvol run-pipeline`` (console script) and the watch-folder flow, each in a subprocess
    with its own temporary Prefect home; outputs, the Prefect database and the console scanned."""
    exe = Path(sys.executable).with_name("medvol")
    assert exe.exists(), f"medvol console script not installed: {exe}"
    home = tmp_path / "prefect_home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180", OMP_NUM_THREADS="1",
               MPLBACKEND="Agg")
    out = tmp_path / "pipe_out"
    quick = ["--method", "fbp", "--downsample", "4", "--slices", "0:2"]
    r1 = subprocess.run([str(exe), "run-pipeline", str(marked_study), "-o", str(out), *quick],
                        capture_output=True, text=True, env=env, timeout=900)
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert (out / "report" / "report.html").is_file()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copytree(marked_study, inbox / "drop1")
    wout = tmp_path / "watch_out"
    script = textwrap.dedent(f"""
        from medvol.flows.watch import watch_inbox
        r = watch_inbox({str(inbox)!r}, {str(wout)!r}, settle_seconds=0, method="fbp",
                        downsample=4, slices="0:2")
        assert r["processed"] == ["drop1"], r
    """)
    r2 = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                        timeout=900)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert (wout / "drop1" / "report" / "report.html").is_file()
    assert list(home.rglob("*.db")), "no Prefect database to scan"
    hits = (find_markers(out, r1.stdout, r1.stderr) + find_markers(wout, r2.stdout, r2.stderr)
            + find_markers(home))
    assert_no_phi(hits)
