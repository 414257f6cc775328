"""The VoCo Prefect flow module calls the library (task body runs without a server via ``.fn``)."""
import pytest

pytest.importorskip("prefect")
pytest.importorskip("nibabel")


def test_pretrain_flow_body_calls_library(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from medvol.flows import pretrain as F
    from medvol.learned import read_weights_info
    from medvol.pretrain.data import splits

    from test_voco import TINY, _fake_root  # noqa: F401

    root = _fake_root(tmp_path, splits()["hippocampus"]["pretrain"][:2])
    # the flow's task builds the default model; a tiny one keeps the test fast
    import medvol.pretrain.voco as V

    real = V.pretrain_voco
    monkeypatch.setattr(V, "pretrain_voco", lambda *a, **k: real(*a, model_config=TINY, **k))
    out = tmp_path / "w.safetensors"
    s = F._pretrain_task.fn(str(root), ["hippocampus"], "voco_cnn", {"region": [32, 32, 32]}, 2,
                            str(tmp_path / "run"), None, str(out), False, 0, device="cpu")
    assert s["steps"] == 2 and s["device"] == "cpu" and read_weights_info(out).arch == "voco_cnn"
    assert callable(F.voco_pretrain.fn)
