"""Gaussian sliding-window stitching (MONAI) as used by SparseSSP."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medvol.ssp.infer import sliding_predict  # noqa: E402


class _Const(torch.nn.Module):
    def __init__(self, value, c_out=2, depth_out=1):
        super().__init__()
        self.value, self.c_out, self.depth_out = value, c_out, depth_out

    def forward(self, x):
        b, _, d, h, w = x.shape
        return torch.full((b, self.c_out, self.depth_out, h, w), self.value)


class _Ident(torch.nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("shape", [(16, 100, 77), (16, 64, 64), (16, 40, 200)])
def test_constant_model_gives_constant_full_coverage(shape):
    vol = np.random.default_rng(1).normal(size=(1,) + shape).astype(np.float32)
    out = sliding_predict(_Const(3.25), vol, (16, 32, 32), depth_out=1)
    assert out.shape == (2, 1) + shape[1:]            # covers the whole image
    np.testing.assert_allclose(out, 3.25, rtol=1e-5)  # normalised Gaussian weights


def test_constant_model_3d_windows_cover_depth():
    vol = np.zeros((1, 40, 50, 50), np.float32)
    out = sliding_predict(_Const(-1.5, c_out=1, depth_out=16), vol, (16, 32, 32), depth_out=16)
    assert out.shape == (1, 40, 50, 50)
    np.testing.assert_allclose(out, -1.5, rtol=1e-5)


def test_identity_model_reproduces_the_input():
    # a translation-equivariant model stitched with any weights returns its input exactly
    vol = np.random.default_rng(2).normal(size=(1, 16, 70, 90)).astype(np.float32)
    out = sliding_predict(_Ident(), vol, (16, 32, 32), depth_out=16)
    np.testing.assert_allclose(out, vol, atol=1e-5)


def test_2d_model_needs_the_whole_depth_in_one_window():
    with pytest.raises(ValueError, match="whole depth"):
        sliding_predict(_Const(1.0), np.zeros((1, 20, 32, 32), np.float32), (16, 32, 32),
                        depth_out=1)
