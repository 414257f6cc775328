"""SparseSSP hybrid network and the fnet-style baseline."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medvol.models.sparsessp import (  # noqa: E402
    FNetConfig, SparseSSPConfig, build_fnet, build_sparsessp, fold_depth, unfold_depth)

SMALL = {"widths": [4, 8], "bottleneck": 8, "depth_in": 8}


def test_fold_unfold_exact_inverse():
    x = torch.randn(2, 5, 8, 6, 7, dtype=torch.float64)
    f = fold_depth(x)
    assert f.shape == (2, 40, 6, 7)
    assert torch.equal(unfold_depth(f, 8), x)
    # C-major: folded channel c*D + d is channel c at depth d
    assert torch.equal(f[:, 3 * 8 + 5], x[:, 3, 5])
    y = torch.randn(2, 40, 6, 7)
    assert torch.equal(fold_depth(unfold_depth(y, 8)), y)


@pytest.mark.parametrize("d_out", [1, 8, 3])
def test_sparsessp_output_shape(d_out):
    m = build_sparsessp({**SMALL, "out_channels": 2, "depth_out": d_out}).eval()
    y = m(torch.randn(1, 1, 8, 16, 20))
    assert y.shape == (1, 2, d_out, 16, 20)


@pytest.mark.parametrize("d_out", [1, 8])
def test_fnet_output_shape(d_out):
    m = build_fnet({**SMALL, "out_channels": 3, "depth_out": d_out}).eval()
    assert m(torch.randn(1, 1, 8, 16, 16)).shape == (1, 3, d_out, 16, 16)


def test_wrong_depth_is_a_clear_error():
    m = build_sparsessp(SMALL)
    with pytest.raises(ValueError, match="expects"):
        m(torch.randn(1, 1, 12, 16, 16))


@pytest.mark.parametrize("bad", [{"widths": [4096]}, {"widths": [8] * 9}, {"depth_in": 12},
                                 {"depth_out": 0}, {"kernel": 4}, {"bottleneck": 10 ** 6},
                                 {"widths": [512], "depth_in": 64}])
def test_hostile_configs_refused_before_allocation(bad):
    with pytest.raises(ValueError):
        SparseSSPConfig.from_dict(bad).validate()
    if "depth_out" not in bad and bad.get("depth_in") != 64:   # fold bound is SparseSSP's
        with pytest.raises(ValueError):
            FNetConfig.from_dict(bad).validate()


def test_hybrid_decoder_has_fewer_flops_than_3d_decoder():
    from torch.utils.flop_counter import FlopCounterMode

    cfg = {"widths": [8, 16, 32], "bottleneck": 64, "depth_in": 16, "out_channels": 3}
    x = torch.randn(1, 1, 16, 32, 32)
    flops = {}
    for name, m in (("ssp", build_sparsessp(cfg)), ("fnet", build_fnet(cfg))):
        with FlopCounterMode(display=False) as fc:
            m.eval()(x)
        flops[name] = fc.get_total_flops()
    assert flops["fnet"] / flops["ssp"] > 1.5


def test_registry_entries_when_available():
    from medvol.learned import registry
    from medvol.ssp.models import register

    assert register()
    assert {"sparsessp", "fnet3d"} <= set(registry.available_models())
    model, cfg = registry.build_model("sparsessp", {**SMALL, "out_channels": 1})
    assert cfg.depth_in == 8 and model.config.out_channels == 1
    from medvol.errors import InputError
    with pytest.raises(InputError):
        registry.build_model("fnet3d", {"widths": [10 ** 5]})
