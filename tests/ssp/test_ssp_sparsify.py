"""Sparsification: the global slice set and prefix (nearest) upsampling."""
import numpy as np
import pytest

from medvol.errors import InputError
from medvol.ssp.sparsify import kept_slices, prefix_upsample, sparse_input, sparsify


@pytest.mark.parametrize("depth,r", [(32, 2), (32, 4), (32, 8), (13, 4), (13, 2), (13, 8), (60, 4)])
def test_sparse_keeps_every_rth_slice_from_zero(depth, r):
    # each slice holds its own z index, so the kept z can be read back from the data
    stack = np.broadcast_to(np.arange(depth, dtype=float)[:, None, None], (depth, 5, 6)).copy()
    sp = sparsify(stack, r)
    assert sp.shape[0] == -(-depth // r)            # ceil(D / r); D / r when r divides D
    if depth % r == 0:
        assert sp.shape[0] == depth // r
    np.testing.assert_array_equal(sp[:, 0, 0], np.arange(0, depth, r))
    np.testing.assert_array_equal(kept_slices(depth, r), np.arange(0, depth, r))


@pytest.mark.parametrize("r", [2, 4, 8])
def test_prefix_upsampling_repeats_each_kept_slice(r):
    depth = 32
    stack = np.arange(depth, dtype=float)[:, None, None] * np.ones((1, 3, 3))
    up = prefix_upsample(sparsify(stack, r), r, depth)
    assert up.shape == stack.shape
    # output slice k is sparse slice floor(k / r), i.e. original slice r * floor(k / r)
    np.testing.assert_array_equal(up[:, 1, 1], (np.arange(depth) // r) * r)


def test_sparse_input_pads_to_network_depth_with_last_plane():
    stack = np.arange(13, dtype=float)[:, None, None] * np.ones((1, 2, 2))
    x, kept = sparse_input(stack, 4, 16)
    np.testing.assert_array_equal(kept, [0, 4, 8, 12])
    assert x.shape == (16, 2, 2)
    np.testing.assert_array_equal(x[:, 0, 0], [0] * 4 + [4] * 4 + [8] * 4 + [12] * 4)
    # only the kept planes' values ever reach the network
    assert set(np.unique(x)) == {0, 4, 8, 12}


def test_dense_ratio_is_identity_plus_pad():
    stack = np.random.default_rng(0).normal(size=(13, 4, 4))
    x, kept = sparse_input(stack, 1, 16)
    np.testing.assert_array_equal(x[:13], stack)
    np.testing.assert_array_equal(x[13:], np.repeat(stack[-1:], 3, axis=0))


@pytest.mark.parametrize("bad", [3, 0, 16, 2.0])
def test_bad_ratio_is_an_input_error(bad):
    with pytest.raises(InputError):
        kept_slices(32, bad)


def test_too_deep_stack_is_refused():
    with pytest.raises(InputError, match="at most 16"):
        sparse_input(np.zeros((20, 2, 2)), 2, 16)
