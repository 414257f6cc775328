"""In-process checks of the issue-13 policies that a subprocess cannot stage (root ignores
file permissions; races need exact timing)."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from medvol._atomic import _rename_noreplace, atomic_dir, remove_stale_partials
from medvol.errors import InputError, LimitError, OutputError, OutputExistsError

from . import generate as G

pytestmark = pytest.mark.hostile


def test_rename_onto_empty_folder_that_appeared_is_refused(tmp_path):
    """os.rename would silently replace an empty folder: the later run must fail instead."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_text("new")
    dst.mkdir()  # appeared after the check
    with pytest.raises(OutputExistsError):
        _rename_noreplace(src, dst)
    assert (src / "a").exists() and list(dst.iterdir()) == []


def test_atomic_dir_refuses_a_target_created_meanwhile(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputExistsError):
        with atomic_dir(out) as tmp:
            (tmp / "x").write_text("mine")
            out.mkdir()          # a concurrent run published first
            (out / "theirs").write_text("theirs")
    assert (out / "theirs").read_text() == "theirs"
    assert not list(tmp_path.glob(".out.*.partial"))


def test_lock_keeps_two_writers_apart(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "x").write_text("1")
        with pytest.raises(OutputExistsError, match="another medvol process"):
            with atomic_dir(out):
                pass
    assert (out / "x").read_text() == "1"


def test_stale_partials_of_dead_processes_are_removed(tmp_path):
    out = tmp_path / "out"
    dead = tmp_path / f".out.{2**22 - 5}.zz.partial"
    alive = tmp_path / f".out.{os.getppid()}.zz.partial"
    dead.mkdir()
    alive.mkdir()
    assert remove_stale_partials(out) == [dead]
    assert alive.exists() and not dead.exists()


def test_os_errors_on_outputs_are_user_errors(tmp_path, monkeypatch):
    out = tmp_path / "out"

    def enospc(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    with pytest.raises(OutputError, match="No space left") as ei:
        with atomic_dir(out) as tmp:
            (tmp / "half.nrrd").write_bytes(b"x")
            enospc()
    assert ei.value.exit_code == 9
    assert not list(tmp_path.iterdir())


def test_unreadable_slice_is_an_error_and_never_interpolated(tmp_path, monkeypatch):
    from medvol.io import ingest_study
    from medvol.io.dicom import scan as S

    G.write_series(tmp_path / "in", G._slices(3))
    real = S._looks_like_dicom

    def denied(p):
        if p.name == "01.dcm":
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real(p)

    monkeypatch.setattr(S, "_looks_like_dicom", denied)
    with pytest.raises(InputError, match="01.dcm"):
        ingest_study(tmp_path / "in", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    res = ingest_study(tmp_path / "in", tmp_path / "out", skip_unreadable=True)
    assert res.skipped and any("unreadable" in k for k in res.skipped)
    import json

    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert any("01.dcm" in w for w in man["warnings"])


def test_unreadable_folder_is_an_error(tmp_path, monkeypatch):
    from medvol.io.dicom import scan as S

    G.write_series(tmp_path / "in" / "a", G._slices(2))
    (tmp_path / "in" / "b").mkdir()
    real_walk = os.walk

    def walk(top, onerror=None, **kw):
        for item in real_walk(top, onerror=onerror, **kw):
            if Path(item[0]).name == "b":
                onerror(PermissionError(errno.EACCES, "Permission denied", item[0]))
                continue
            yield item

    monkeypatch.setattr(S.os, "walk", walk)
    with pytest.raises(InputError, match="/b"):
        S.scan_dicom(tmp_path / "in")


def test_memory_error_is_never_retried():
    pytest.importorskip("prefect")
    from medvol.flows.tasks import is_transient

    assert is_transient(MemoryError()) is False
    assert is_transient(OSError(errno.ENOSPC, "full")) is False


def test_budget_env_and_flag(monkeypatch, tmp_path):
    from medvol.io import read
    from medvol.io.budget import check_volume

    p = G.good_nrrd(tmp_path / "v.nrrd", (16, 32, 32))
    monkeypatch.setenv("MEDVOL_MAX_VOXELS", "1000")
    with pytest.raises(LimitError, match="32×32×16"):
        read(p)
    monkeypatch.setenv("MEDVOL_MAX_VOXELS", "abc")
    with pytest.raises(InputError, match="MEDVOL_MAX_VOXELS"):
        check_volume((2, 2), 1, what="x")
    monkeypatch.delenv("MEDVOL_MAX_VOXELS")
    assert read(p).shape == (16, 32, 32)


def test_gzip_nrrd_stops_at_declared_size(tmp_path):
    """A 1 GiB gzip stream under a 64³ header: refused after ~declared bytes, not inflated."""
    import tracemalloc

    from medvol.io import read

    p = G._nrrd(tmp_path / "b.nrrd", G._gzip_bomb(256 << 20), sizes=(64, 64, 64),
                encoding="gzip")
    tracemalloc.start()
    with pytest.raises(InputError, match="more than"):
        read(p)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 << 20


def test_sanitize_escapes_terminal_controls():
    from medvol._text import escape_markup, one_line

    assert one_line("a\x1b]0;t\x07b\nc") == "a\\x1b]0;t\\x07b\\nc"
    assert escape_markup("out[/x]") == "out\\[/x]"


def test_weights_config_width_is_bounded_before_allocation():
    from medvol.errors import MedvolError
    from medvol.learned.registry import build_model

    with pytest.raises(MedvolError, match="width"):
        build_model("pdunet", {"width": 10**6})


def test_values_are_finite_after_rescale(tmp_path):
    from medvol.errors import DicomError
    from medvol.io import read_dicom_series

    ds = G._slices(3)
    for d in ds:
        G._raw_elem("RescaleSlope", b"1e10")(d, 0)
    G.write_series(tmp_path / "in", ds)
    with pytest.raises(DicomError, match="RescaleSlope"):
        read_dicom_series(tmp_path / "in")


def test_huge_view_counts_are_refused_before_allocation(tmp_path, capsys):
    """``--full-views 2e9``: the angle list alone would be 16 GB; refused by the size budget
    (exit 8), not by running out of memory."""
    import numpy as np

    from medvol.cli import main
    from medvol.io import write
    from medvol.volume import Volume

    vol = tmp_path / "v.nrrd"
    write(Volume(np.zeros((2, 32, 32), np.float32), spacing=(1.0, 1.0, 1.0)), vol)
    code = main(["recon", str(vol), "-o", str(tmp_path / "out"), "--method", "fbp",
                 "--geometry", "parallel", "--views", "16", "--full-views", "2000000000"])
    assert code == 8
    err = capsys.readouterr().err
    assert "angle list" in err and "budget" in err, err        # the budget, not a MemoryError
    assert not (tmp_path / "out").exists()
