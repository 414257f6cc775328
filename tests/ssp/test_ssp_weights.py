"""Weights round trip; shipped weights reproduce the model card's fixed-tile Pearson r."""
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medvol.errors import WeightsError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
WEIGHTS = REPO / "models" / "weights"
#: the card's tile Pearson r are printed to 3 decimals; CPU float32 reruns agree to ~1e-5
TILE_TOL = 2e-3


@pytest.mark.parametrize("arch", ["sparsessp", "fnet3d"])
def test_weights_round_trip(tmp_path, arch):
    from medvol.models.sparsessp import build_fnet, build_sparsessp
    from medvol.ssp.train import export_weights, load_ssp_model

    build = build_sparsessp if arch == "sparsessp" else build_fnet
    torch.manual_seed(3)
    m = build({"widths": [4, 8], "bottleneck": 8, "depth_in": 8, "out_channels": 2}).eval()
    with torch.no_grad():          # make BN running stats non-trivial
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2)
    p = export_weights(m, tmp_path / "w.safetensors", arch=arch, task="t",
                       extra={"ratio": 2, "channels": ["a", "b"]}, metrics={"x": 1.0})
    m2, info = load_ssp_model(p)
    assert info["arch"] == arch and info["extra"]["ratio"] == 2
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_corrupt_and_foreign_weights_are_weights_errors(tmp_path):
    from medvol.ssp.train import load_ssp_model

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError):
        load_ssp_model(bad)
    other = sorted(WEIGHTS.glob("pdunet*.safetensors")) or sorted(WEIGHTS.glob("*.safetensors"))
    other = [p for p in other if not p.name.startswith("sparsessp")]
    if other:
        with pytest.raises(WeightsError):
            load_ssp_model(other[0])


SHIPPED_ISL = ["sparsessp_fnet_isl_dense", "sparsessp_isl_r2", "sparsessp_isl_r4",
               "sparsessp_isl_r8"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED_ISL)
def test_shipped_weights_reproduce_card_tile_pearson(name):
    p = WEIGHTS / f"{name}.safetensors"
    if not p.exists():
        pytest.skip(f"{p.name} not shipped")
    if not (DATA / "microscopy" / "isl_phase_fluorescence").is_dir():
        pytest.skip("shared ISL data not present")
    from medvol.ssp import train as T

    model, info = T.load_ssp_model(p)
    want = info["metrics"]["test_tile"]
    assert [list(v) for v in want["rows_cols"]] == [list(v) for v in T.TEST_TILE]
    prep = T.prepare_isl(DATA, int(info["extra"]["ratio"]))
    got = T.tile_metrics(model, prep)
    card = (WEIGHTS / "SPARSESSP_MODEL_CARD.md").read_text()
    for ch in ("DAPI", "MAP2", "NFH"):
        assert got[ch]["pearson"] == pytest.approx(want[ch]["pearson"], abs=TILE_TOL)
    # the card prints the same DAPI tile value (3 decimals)
    assert f"{want['DAPI']['pearson']:.3f}" in card
    assert np.isfinite(got["DAPI"]["ssim"])
