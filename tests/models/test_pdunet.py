"""PD-UNet / LPD: reference parameter counts, FBP-identity at init, padding, gradients, weights."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medvol.errors import GeometryError, WeightsError  # noqa: E402
from medvol.geometry import ParallelBeam2D  # noqa: E402
from medvol.learned import load_weights, save_weights  # noqa: E402
from medvol.models.pdunet import (DualBlock, LearnedPrimalDual, PDUNet, UNet,  # noqa: E402
                                  _znorm, count_parameters, pad_sinogram, unet_flops)
from medvol.phantoms import shepp_logan_2d  # noqa: E402
from medvol.recon.pdunet import pdunet_operator, pdunet_reconstruct  # noqa: E402


@pytest.fixture(scope="module")
def small_op():
    g = ParallelBeam2D(angles=np.linspace(0, np.pi, 12, endpoint=False), n_det=46)
    return pdunet_operator(g, (32, 32), (1.0, 1.0))


def _data(op, b=2):
    x = torch.from_numpy(np.stack([shepp_logan_2d(32)] * b).astype(np.float32))
    x[1:] = torch.flip(x[1:], dims=(-1,))
    return op(x), x


def test_parameter_counts_match_reference():
    # phernst/pd-unet layer shapes: one UNet primal block 1,800,068 parameters; one dual block
    # 12,810 including its 5 gate weights
    assert count_parameters(UNet(5, 4, 32, 4)) == 1_800_068
    assert count_parameters(DualBlock(7, 5, 32)) + 5 == 12_810
    m = PDUNet()
    assert count_parameters(m) == 2 * (1_800_068 + 4) + 2 * 12_810
    assert 0.24e6 < count_parameters(LearnedPrimalDual()) < 0.26e6


def test_unet_flops_against_torch_counter():
    from torch.utils.flop_counter import FlopCounterMode

    net = UNet(5, 4, 16, 3).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.zeros(1, 5, 64, 64))
    assert abs(fc.get_total_flops() / unet_flops(16, 3, 64) - 1) < 0.01
    assert abs(unet_flops(32, 4, 256) / 1e9 - 18.5) < 0.1       # the figure


def test_untrained_pdunet_returns_fbp(small_op):
    y, _ = _data(small_op)
    model = PDUNet(width=8, depth=3, image_scale=0.5).eval()
    with torch.no_grad():
        out = model(y, small_op)
    ref = small_op.fbp(y)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_pad_sinogram_wraps_angles_and_replicates_detector():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    p = pad_sinogram(x)
    assert p.shape == (1, 1, 5, 6)
    torch.testing.assert_close(p[0, 0, 0, 1:-1], x[0, 0, -1])     # last view before the first
    torch.testing.assert_close(p[0, 0, -1, 1:-1], x[0, 0, 0])     # first view after the last
    torch.testing.assert_close(p[0, 0, 1:-1, 0], x[0, 0, :, 0])   # detector edge replicated


def test_znorm_roundtrip():
    g = torch.randn(3, 7, 9) * 5 + 2
    n, mu, sd = _znorm(g)
    torch.testing.assert_close(n * sd + mu, g)
    assert torch.allclose(n.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5)


def test_gradients_flow_through_operator(small_op):
    y, x = _data(small_op)
    for model in (PDUNet(width=8, depth=3), LearnedPrimalDual(n_iter=2, width=8)):
        model.train()
        if isinstance(model, PDUNet):
            with torch.no_grad():
                model.gate_primal.fill_(0.1)
        loss = torch.nn.functional.l1_loss(model(y, small_op), x)
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        first_dual = next(model.dual[0].parameters()).grad
        assert float(first_dual.abs().sum()) > 0       # reached through A and the FBP


def test_lpd_output_shape(small_op):
    y, _ = _data(small_op, 3)
    out = LearnedPrimalDual(n_iter=3, width=8)(y, small_op)
    assert out.shape == (3, 32, 32)


def test_weights_roundtrip_and_errors(tmp_path, small_op):
    m = PDUNet(width=8, depth=3, image_scale=0.25)
    with torch.no_grad():
        m.gate_primal.fill_(0.3)
    p = save_weights(tmp_path / "m.safetensors", m, arch="pdunet", config=m.config,
                     task={"image_size": 32})
    m2, meta = load_weights(p)
    assert meta.config == m.config and float(m2.image_scale) == 0.25
    y, _ = _data(small_op)
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(y, small_op), m2(y, small_op))
    # the safetensors file is not pickle and refuses to be overwritten silently
    from medvol.errors import OutputExistsError
    with pytest.raises(OutputExistsError):
        save_weights(p, m, arch="pdunet", config=m.config, task={})
    # corrupted
    bad = tmp_path / "bad.safetensors"
    raw = p.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(WeightsError, match="corrupted"):
        load_weights(bad)
    # mismatched: metadata says width 16, tensors are width 8
    from safetensors.torch import load_file, save_file
    import json
    st = load_file(str(p))
    cfg = dict(m.config, width=16)
    save_file(st, str(tmp_path / "mis.safetensors"),
              metadata={"format": "medvol-pdunet-1", "arch": "pdunet", "config": json.dumps(cfg),
                        "task": "{}"})
    with pytest.raises(WeightsError, match="do not match"):
        load_weights(tmp_path / "mis.safetensors")
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "none.safetensors")
    with pytest.raises(WeightsError, match="expected 'lpd'"):
        load_weights(p, arch="lpd")
    # inference wrapper on a path; wrong sinogram shape is a GeometryError
    out = pdunet_reconstruct(small_op, y.numpy(), weights=str(p))
    assert out.shape == (2, 32, 32) and isinstance(out, np.ndarray)
    with pytest.raises(GeometryError):
        pdunet_reconstruct(small_op, y.numpy()[:, :5], weights=str(p))
