"""``medvol ssp predict`` on small OME-TIFF stacks: physical spacing, outputs, one-line errors."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")
nrrd = pytest.importorskip("nrrd")

from medvol.cli import main  # noqa: E402
from medvol.ssp.data import read_ome_tiff  # noqa: E402

SP = {"PhysicalSizeX": 0.29, "PhysicalSizeY": 0.31, "PhysicalSizeZ": 0.5}


def _ome(path, data, axes="CZYX", names=("TL", "DNA"), **sizes):
    md = {"axes": axes, **(sizes or SP)}
    if names is not None:
        md["Channel"] = {"Name": list(names)}
    tifffile.imwrite(path, data, ome=True, photometric="minisblack", metadata=md)
    return path


def _weights(tmp_path, depth_out, ratio=2, name="w.safetensors"):
    from medvol.models.sparsessp import build_sparsessp
    from medvol.ssp.train import export_weights

    torch.manual_seed(0)
    m = build_sparsessp({"widths": [4, 8], "bottleneck": 8, "depth_in": 8, "out_channels": 1,
                         "depth_out": depth_out}).eval()
    return export_weights(m, tmp_path / name, arch="sparsessp", task="test",
                          extra={"ratio": ratio, "roi": 16, "channels": ["DNA"]})


def test_read_ome_tiff_axes_and_spacing(tmp_path):
    data = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(3, 2, 4, 5)   # Z C Y X on disk
    p = _ome(tmp_path / "s.ome.tif", data, axes="ZCYX")
    st = read_ome_tiff(p)
    assert st.data.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(st.data, np.transpose(data, (1, 0, 2, 3)))
    assert st.spacing == pytest.approx((0.5, 0.31, 0.29))
    assert st.channels == ["TL", "DNA"]


@pytest.mark.parametrize("depth_out,z", [(8, 8), (1, 6)])
def test_predict_writes_physical_spacing(tmp_path, depth_out, z):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, size=(2, z, 24, 20)).astype(np.uint16)
    stack = _ome(tmp_path / "cells.ome.tif", data)
    w = _weights(tmp_path, depth_out)
    out = tmp_path / "out"
    rc = main(["ssp", "predict", str(stack), "--ratio", "2", "--weights", str(w), "-o", str(out)])
    assert rc == 0
    with tifffile.TiffFile(out / "prediction.ome.tif") as tf:
        arr = tf.series[0].asarray()
        assert tf.is_ome
    assert arr.shape[-2:] == (24, 20)
    st = read_ome_tiff(out / "prediction.ome.tif")
    assert st.spacing == pytest.approx((0.5, 0.31, 0.29))
    assert st.data.shape == (1, z if depth_out > 1 else 1, 24, 20)
    img, hdr = nrrd.read(str(out / "prediction_DNA.nrrd"), index_order="C")
    np.testing.assert_allclose(np.diag(hdr["space directions"]), [0.29, 0.31, 0.5])
    np.testing.assert_allclose(img, st.data[0], atol=1e-6)
    man = json.loads((out / "manifest.json").read_text())
    assert man["decisions"][0]["kept"] == list(range(0, z, 2))
    assert {o["path"] for o in man["outputs"]} >= {"prediction.ome.tif", "prediction_DNA.nrrd"}


def test_sparse_input_file_spacing_is_the_dense_grid(tmp_path):
    data = np.random.default_rng(1).normal(size=(2, 4, 16, 16)).astype(np.float32)
    stack = _ome(tmp_path / "sparse.ome.tif", data, PhysicalSizeX=0.2, PhysicalSizeY=0.2,
                 PhysicalSizeZ=1.0)
    w = _weights(tmp_path, 8)
    out = tmp_path / "o"
    assert main(["ssp", "predict", str(stack), "--ratio", "2", "--weights", str(w), "-o", str(out),
                 "--sparse-input"]) == 0
    st = read_ome_tiff(out / "prediction.ome.tif")
    assert st.data.shape[1] == 7            # (4 − 1)·2 + 1 dense slices
    assert st.spacing[0] == pytest.approx(0.5)


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((4, 8, 8), np.uint16), photometric="minisblack")
    w = _weights(tmp_path, 8)
    rc = main(["ssp", "predict", str(plain), "--weights", str(w), "--ratio", "2", "-o",
               str(tmp_path / "a")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "not an OME-TIFF" in err and "\n" not in err
    stack = _ome(tmp_path / "s.ome.tif", np.zeros((2, 8, 16, 16), np.uint16))
    rc = main(["ssp", "predict", str(stack), "--weights", str(w), "--ratio", "4", "-o",
               str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "ratio 2" in err and "\n" not in err
    rc = main(["ssp", "predict", str(stack), "--weights", str(tmp_path / "none.safetensors"),
               "--ratio", "2", "-o", str(tmp_path / "c")])
    assert rc == 7
    nosize = tmp_path / "nosize.ome.tif"
    tifffile.imwrite(nosize, np.zeros((2, 8, 16, 16), np.uint16), ome=True,
                     metadata={"axes": "CZYX"})
    rc = main(["ssp", "predict", str(nosize), "--weights", str(w), "--ratio", "2", "-o",
               str(tmp_path / "d")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "PhysicalSize" in err
    assert not (tmp_path / "d").exists()


def test_train_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MEDVOL_DATA", raising=False)
    assert main(["ssp", "train", "--steps", "1", "--run-dir", str(tmp_path / "r")]) == 2
    assert "MEDVOL_DATA" in capsys.readouterr().err
    assert main(["ssp", "train", "--data", str(tmp_path), "--ratio", "3"]) == 2
    assert "--ratio" in capsys.readouterr().err
    assert main(["ssp", "train", "--data", str(tmp_path), "--steps", "1"]) == 2
    assert "isl_phase_fluorescence" in capsys.readouterr().err
    (tmp_path / "w.safetensors").write_bytes(b"x")
    assert main(["ssp", "train", "--data", str(tmp_path), "--export",
                 str(tmp_path / "w.safetensors")]) == 5
    assert main(["ssp", "train", "--task", "nope"]) == 2
