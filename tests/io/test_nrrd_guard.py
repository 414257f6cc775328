"""The guarded NRRD reader (medvol.io.nrrd.read_nrrd) against pynrrd's own reader on
legitimate files, and its refusals on hostile ones."""
from __future__ import annotations

import numpy as np
import pytest

from medvol.errors import InputError, LimitError
from medvol.io.nrrd import read_nrrd

nrrd = pytest.importorskip("nrrd")


@pytest.fixture
def arr():
    rng = np.random.default_rng(7)
    return (rng.random((5, 6, 7)) * 1000).astype(np.int16)


@pytest.mark.parametrize("encoding", ["raw", "gzip", "bzip2", "ascii"])
@pytest.mark.parametrize("detached", [False, True])
def test_same_as_pynrrd(tmp_path, arr, encoding, detached):
    p = tmp_path / ("v.nhdr" if detached else "v.nrrd")
    nrrd.write(str(p), arr, {"encoding": encoding, "space": "left-posterior-superior"},
               detached_header=detached, index_order="C")
    ref, _ = nrrd.read(str(p), index_order="C")
    got, header = read_nrrd(p)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got, arr)
    assert header["encoding"] == encoding


def test_detached_in_subfolder_is_allowed(tmp_path, arr):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "v.raw").write_bytes(arr.astype("<i2").tobytes())
    (tmp_path / "v.nhdr").write_text(
        "NRRD0004\ntype: short\ndimension: 3\nsizes: 7 6 5\nendian: little\n"
        "encoding: raw\ndata file: data/v.raw\n")
    got, _ = read_nrrd(tmp_path / "v.nhdr")
    np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize("name", ["/etc/passwd", "../x.raw", "sub/../../x.raw", "LIST",
                                  "slice%03d.raw 1 5 1"])
def test_refused_data_files(tmp_path, name):
    (tmp_path / "x.raw").write_bytes(b"\0" * 1000)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "v.nhdr").write_text(
        "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n"
        f"data file: {name}\n")
    with pytest.raises(InputError):
        read_nrrd(tmp_path / "in" / "v.nhdr")


def test_declared_size_over_budget_is_refused_before_reading(tmp_path, monkeypatch):
    p = tmp_path / "v.nrrd"
    p.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 100000 100000 100000\n"
                  b"endian: little\nencoding: raw\n\n")
    with pytest.raises(LimitError, match="1e\\+15"):
        read_nrrd(p)


def test_truncated_raw_data(tmp_path, arr):
    p = tmp_path / "v.nrrd"
    nrrd.write(str(p), arr, {"encoding": "raw"}, index_order="C")
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(InputError, match="truncated"):
        read_nrrd(p)
