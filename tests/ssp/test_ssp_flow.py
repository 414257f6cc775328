"""The Prefect flow module calls the library (flow bodies run without a server via ``.fn``)."""
import numpy as np
import pytest

pytest.importorskip("prefect")
tifffile = pytest.importorskip("tifffile")


def test_predict_flow_body_calls_library(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from medvol.flows import ssp as F
    from medvol.ssp.data import read_ome_tiff

    from test_ssp_cli import _ome, _weights

    stack = _ome(tmp_path / "c.ome.tif", np.zeros((2, 8, 16, 16), np.uint16))
    w = _weights(tmp_path, 8)
    out = tmp_path / "o"
    summary = F._predict_task.fn(str(stack), str(out), 2, str(w), None, False, False)
    assert summary["kept_z"] == [0, 2, 4, 6]
    assert read_ome_tiff(out / "prediction.ome.tif").spacing == pytest.approx((0.5, 0.31, 0.29))
    assert callable(F.ssp_train.fn) and callable(F.ssp_predict.fn)
