"""MICDIR building blocks against analytic answers and MONAI's reference layers."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medvol.models.micdir import (MICDIR, MICDIRConfig, SCGBlock, global_ncc, grad_l2,  # noqa: E402
                                  integrate_half_res, integrate_svf, micdir_loss, normalize_adjacency,
                                  warp)


def _smooth_image(shape=(24, 28, 20), seed=0):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.standard_normal(shape), 3).astype(np.float32)


def test_zero_velocity_is_identity():
    v = torch.zeros(1, 3, 16, 20, 12)
    u = integrate_svf(v, 7)
    assert torch.count_nonzero(u) == 0
    img = torch.as_tensor(_smooth_image((16, 20, 12)))[None, None]
    assert torch.allclose(warp(img, u), img, atol=1e-6)
    assert torch.count_nonzero(integrate_half_res(v, 7)) == 0


@pytest.mark.parametrize("shift", [(1.5, -2.0, 0.75), (0.0, 3.0, -1.25)])
def test_constant_velocity_is_translation(shift):
    from scipy.ndimage import shift as nd_shift

    shape = (24, 28, 20)
    v = torch.tensor(shift, dtype=torch.float32).view(1, 3, 1, 1, 1).expand(1, 3, *shape).clone()
    u = integrate_svf(v, 7)
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6), slice(6, -6))
    assert torch.allclose(u[inner], v[inner], atol=1e-4)
    # the warp samples moving(p + s): scipy's shift by -s is the same image (linear interpolation)
    img = _smooth_image(shape)
    w = warp(torch.as_tensor(img)[None, None], u)[0, 0].numpy()
    ref = nd_shift(img, [-s for s in shift], order=1, mode="constant")
    assert np.abs(w - ref)[6:-6, 6:-6, 6:-6].max() < 1e-4
    # half-resolution integration (MICDIR) also gives the translation away from borders
    uh = integrate_half_res(v, 7)
    assert torch.allclose(uh[inner], v[inner], atol=0.05)


def test_ncc_identity_affine_and_negation():
    x = torch.rand(2, 1, 8, 9, 10)
    assert float(global_ncc(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(global_ncc(x, 3 * x + 2)) == pytest.approx(1.0, abs=1e-5)
    assert float(global_ncc(x, -x)) == pytest.approx(-1.0, abs=1e-6)
    assert abs(float(global_ncc(x, torch.rand(2, 1, 8, 9, 10)))) < 0.2


def test_grad_l2_of_linear_ramp():
    z = torch.arange(10.0).view(1, 1, 10, 1, 1).expand(1, 3, 10, 4, 5)
    # forward difference 1 along z only, zero along y, x: mean over 3 axes = 1/3
    assert float(grad_l2(z.clone())) == pytest.approx(1 / 3)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("act", ["leaky_relu", "relu"])
def test_scg_adjacency_symmetric_finite_normalised(training, act):
    torch.manual_seed(0)
    blk = SCGBlock(32, 9, (4, 4, 4), adjacency_act=act)
    blk.train(training)
    mu, logvar, adj, z_hat, loss = blk(torch.randn(3, 32, 4, 4, 4))
    assert adj.shape == (3, 64, 64) and z_hat.shape == (3, 64, 9)
    assert torch.isfinite(adj).all() and torch.isfinite(loss)
    assert torch.allclose(adj, adj.transpose(1, 2), atol=1e-6)
    if act == "relu":  # D^-1/2 (A+I) D^-1/2 of a non-negative symmetric A: spectral radius <= 1
        ev = torch.linalg.eigvalsh(adj.double())
        assert ev.abs().max() <= 1 + 1e-6
        assert (adj >= 0).all()


def test_normalize_adjacency_known_graph():
    a = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    n = normalize_adjacency(a)
    # A + I = ones(2, 2), degrees 2: every entry 1/2
    assert torch.allclose(n, torch.full((1, 2, 2), 0.5), atol=1e-5)


def test_warp_matches_monai_warp_zero_padding():
    monai = pytest.importorskip("monai")  # noqa: F841
    import warnings

    from monai.networks.blocks import DVF2DDF, Warp

    torch.manual_seed(1)
    img = torch.rand(2, 1, 12, 14, 10)
    ddf = 3 * torch.randn(2, 3, 12, 14, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Warp(mode="bilinear", padding_mode="zeros")(img, ddf)
        v = torch.randn(1, 3, 12, 14, 10)
        ref_int = DVF2DDF(num_steps=7, mode="bilinear", padding_mode="zeros")(v)
    assert torch.allclose(warp(img, ddf), ref, atol=1e-5)
    assert torch.allclose(integrate_svf(v, 7), ref_int, atol=1e-5)


def _assert_bit_identical_to_monai(device):
    import warnings

    from monai.networks.blocks import DVF2DDF, Warp

    g = torch.Generator().manual_seed(3)
    for shape in [(9, 11, 7), (1, 6, 5)]:
        img = torch.rand(2, 2, *shape, generator=g).to(device)
        ddf = (2 * torch.randn(2, 3, *shape, generator=g)).to(device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for mode in ("bilinear", "nearest"):
                for pad in ("zeros", "border", "reflection"):
                    ref = Warp(mode=mode, padding_mode=pad)(img, ddf)
                    assert torch.equal(warp(img, ddf, mode=mode, padding_mode=pad), ref)
            v = (3 * torch.randn(1, 3, *shape, generator=g)).to(device)
            assert torch.equal(integrate_svf(v, 7),
                               DVF2DDF(num_steps=7, mode="bilinear", padding_mode="zeros")(v))
            if device != "cpu":     # CUDA grid_sample backward accumulates atomically
                continue
            grads = []
            for fn in (lambda i, d: Warp(mode="bilinear", padding_mode="zeros")(i, d), warp):
                i, d = img.clone().requires_grad_(True), ddf.clone().requires_grad_(True)
                (fn(i, d) ** 2).sum().backward()
                grads.append((i.grad, d.grad))
        assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
        assert grads[1][1].abs().sum() > 0


def test_warp_and_integration_are_bit_identical_to_monai_with_the_same_gradients():
    """warp / integrate_svf write out MONAI's Warp / DVF2DDF arithmetic (for speed and thread
    safety): the same bits forward, for every padding and interpolation mode and for grids with
    a singleton axis, and the same gradients with respect to image and field."""
    pytest.importorskip("monai")
    _assert_bit_identical_to_monai("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_warp_and_integration_are_bit_identical_to_monai_on_cuda():
    """The same forward bits on CUDA (the grid is normalised by Python numbers in MONAI's order of
    operations: a tensor divisor rounds differently there)."""
    pytest.importorskip("monai")
    _assert_bit_identical_to_monai("cuda")


def test_warp_onto_another_grid_normalises_by_the_image_size():
    """A DDF on a smaller grid than the image samples the image at the DDF grid's voxel
    positions plus the displacement, in the image's voxels (MONAI's Warp refuses this case)."""
    img = torch.arange(10 * 11 * 12, dtype=torch.float32).reshape(1, 1, 10, 11, 12)
    ddf = torch.zeros(1, 3, 4, 5, 6)
    assert torch.allclose(warp(img, ddf), img[:, :, :4, :5, :6], atol=1e-3)
    ddf[:, 0], ddf[:, 2] = 2.0, 3.0                       # +2 voxels in z, +3 in x
    assert torch.allclose(warp(img, ddf), img[:, :, 2:6, :5, 3:9], atol=1e-3)


def test_micdir_forward_shapes_and_loss_backward():
    torch.manual_seed(0)
    cfg = MICDIRConfig(enc_channels=(4, 8, 8, 8), enc_strides=(1, 2, 2, 2), dec_channels=8,
                       head_channels=(4, 4))
    m = MICDIR(cfg)
    x, y = torch.rand(2, 1, 16, 24, 16), torch.rand(2, 1, 16, 24, 16)
    oxy, oyx = m(x, y), m(y, x)
    assert oxy["ddf"].shape == (2, 3, 16, 24, 16) and oxy["ddf_half"].shape == (2, 3, 8, 12, 8)
    loss, parts = micdir_loss(oxy, oyx, x, y, w_cycle=0.1)
    loss.backward()
    assert np.isfinite(parts["loss"]) and "cycle" in parts and "sim_half" in parts
    with pytest.raises(ValueError, match="divisible"):
        m(torch.rand(1, 1, 15, 24, 16), torch.rand(1, 1, 15, 24, 16))


def _small_micdir(samples):
    cfg = MICDIRConfig(enc_channels=(4, 8, 8, 8), enc_strides=(1, 2, 2, 2), dec_channels=8,
                       head_channels=(4, 4), latent_samples=samples)
    torch.manual_seed(0)
    return MICDIR(cfg)


def test_sampled_latent_is_deterministic_eval_only_and_leaves_global_rng_alone():
    x, y = torch.rand(1, 1, 16, 24, 16), torch.rand(1, 1, 16, 24, 16)
    m8, m0 = _small_micdir(8), _small_micdir(0)
    m8.eval(), m0.eval()
    with torch.no_grad():
        state = torch.get_rng_state()
        a, b = m8(x, y)["velocity"], m8(x, y)["velocity"]
        assert torch.equal(torch.get_rng_state(), state)       # own fixed-seed generator
        assert torch.equal(a, b)
        assert not torch.allclose(a, m0(x, y)["velocity"])    # untrained σ = 1: draws matter
        m8.train(), m0.train()                                 # training: one draw, as before
        torch.manual_seed(3)
        t8 = m8(x, y)["velocity"]
        torch.manual_seed(3)
        assert torch.equal(t8, m0(x, y)["velocity"])


def test_sampled_latent_reduces_to_the_mean_when_sigma_vanishes():
    """σ = exp(logvar) → 0: every draw is z = μ, so the K-draw average equals the z = μ path."""
    x, y = torch.rand(1, 1, 16, 24, 16), torch.rand(1, 1, 16, 24, 16)
    m8, m0 = _small_micdir(8), _small_micdir(0)
    for m in (m8, m0):
        conv = m.scg.logvar[0]
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias.fill_(-30.0)
        m.eval()
    with torch.no_grad():
        assert torch.allclose(m8(x, y)["velocity"], m0(x, y)["velocity"], atol=1e-6)
    with pytest.raises(ValueError, match="latent_samples"):
        MICDIRConfig(latent_samples=65).validate()


def test_integration_resolution_option_and_velocity_only_path():
    """``int_resolution``: "half" is the released half-size integration, "full" integrates on the
    velocity's own grid; ``velocity()`` is exactly the velocity ``forward`` integrates, and
    refinement integrates with the model's own choice."""
    from medvol.registration.refine import predict_velocity

    m = _small_micdir(2).eval()
    x, y = torch.rand(1, 1, 16, 24, 16), torch.rand(1, 1, 16, 24, 16)   # after the seed
    with torch.no_grad():
        out = m(x, y)
        v = m.velocity(x, y)
        assert torch.equal(v, out["velocity"])
        assert torch.allclose(out["ddf"], integrate_half_res(v, 7), atol=1e-6)
        m.config.int_resolution = "full"
        full = m(x, y)["ddf"]
        assert torch.allclose(full, integrate_svf(v, 7), atol=1e-6)
        # a velocity with detail below the half grid's Nyquist limit: the half-size path loses it
        assert not torch.allclose(full, out["ddf"], atol=1e-3)
    v2, integrate = predict_velocity(m, x, y)
    assert torch.equal(v2, v) and torch.allclose(integrate(v2), full, atol=1e-6)
    with pytest.raises(ValueError, match="int_resolution"):
        MICDIRConfig(int_resolution="quarter").validate()


def test_voxelmorph_wrapper_swaps_to_monai_order():
    pytest.importorskip("monai")
    from medvol.models.voxelmorph import VoxelMorphNet

    net = VoxelMorphNet()
    seen = {}

    def fake(x):              # MONAI's VoxelMorph feeds its backbone cat([moving, fixed])
        seen["x"] = x
        return torch.zeros(x.shape[0], 3, *x.shape[2:])

    net.net.backbone.forward = fake
    f, m = torch.zeros(1, 1, 16, 16, 16), torch.ones(1, 1, 16, 16, 16)
    out = net(f, m)
    assert torch.equal(seen["x"][:, :1], m) and torch.equal(seen["x"][:, 1:], f)
    assert torch.equal(out["warped"], m) and not out["ddf"].any()   # zero field: identity


def test_monai_warp_and_dvf2ddf_match_the_written_out_formulas():
    """warp / integrate_svf (MONAI's Warp / DVF2DDF arithmetic): the same numbers as grid_sample
    with align_corners=True and the scaling-and-squaring loop written out independently here
    (float rounding only)."""
    import torch
    import torch.nn.functional as F

    from medvol.models.micdir import integrate_svf, warp

    def ref_warp(img, ddf):
        sp = ddf.shape[2:]
        axes = [torch.arange(n, dtype=ddf.dtype) for n in sp]
        g = torch.stack(torch.meshgrid(*axes, indexing="ij"), 0)[None] + ddf
        g = torch.stack([g[:, k] * (2.0 / (n - 1)) - 1.0 for k, n in enumerate(sp)], 1)
        return F.grid_sample(img, g.flip(1).movedim(1, -1), mode="bilinear",
                             padding_mode="zeros", align_corners=True)

    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 1, 12, 14, 16, generator=g)
    ddf = torch.randn(1, 3, 12, 14, 16, generator=g) * 2
    torch.testing.assert_close(warp(img, ddf), ref_warp(img, ddf), atol=1e-5, rtol=0)
    v = torch.randn(1, 3, 12, 14, 16, generator=g) * 3
    u = v / 2 ** 7
    for _ in range(7):
        u = u + ref_warp(u, u)
    torch.testing.assert_close(integrate_svf(v, 7), u, atol=2e-4, rtol=0)
    assert (integrate_svf(v, 7) - v).abs().max() > 0.1      # integration did something


def test_voxelmorph_forward_is_monais_forward_bit_for_bit():
    """VoxelMorphNet runs MONAI's VoxelMorph with medvol's stateless integrate/warp in place of
    its Warp layers: the same DDF, warped image and parameter gradients as MONAI's own forward."""
    pytest.importorskip("monai")
    from medvol.models.voxelmorph import VoxelMorphNet

    torch.manual_seed(0)
    net = VoxelMorphNet()
    g = torch.Generator().manual_seed(1)
    f, m = torch.rand(1, 1, 16, 24, 16, generator=g), torch.rand(1, 1, 16, 24, 16, generator=g)
    grads = []
    for run in (lambda: net(f, m), lambda: dict(zip(("warped", "ddf"), net.net(m, f)))):
        net.zero_grad()
        out = run()
        (out["warped"].square().sum() + out["ddf"].square().mean()).backward()
        grads.append((out["ddf"].detach(), out["warped"].detach(),
                      [p.grad.clone() for p in net.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    assert all(torch.equal(a, b) for a, b in zip(grads[0][2], grads[1][2]))
    assert grads[0][0].abs().max() > 0


def test_voxelmorph_without_integration_and_with_a_wrong_backbone():
    """int_steps 0: the backbone's field is the DDF (MONAI's non-diffeomorphic VoxelMorph, bit for
    bit); a backbone returning the wrong shape is refused, as MONAI's forward did."""
    pytest.importorskip("monai")
    from medvol.models.voxelmorph import VoxelMorphConfig, VoxelMorphNet

    torch.manual_seed(0)
    net = VoxelMorphNet(VoxelMorphConfig(int_steps=0))
    f, m = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    out = net(f, m)
    warped, ddf = net.net(m, f)
    assert torch.equal(out["ddf"], ddf) and torch.equal(out["warped"], warped)
    net.net.backbone.forward = lambda x: torch.zeros(x.shape[0], 3, 8, 8, 8)
    with pytest.raises(ValueError, match="backbone must return"):
        net(f, m)


def test_warp_is_safe_across_threads_and_shapes():
    """MONAI's Warp stores each call's reference grid on the layer and reads it back: one layer
    shared by threads that warp different shapes swapped it under another thread (size-mismatch
    errors with these four threads, most runs, when warp used one shared layer). warp now holds
    no state; every warp by a zero field is the identity."""
    import threading

    pytest.importorskip("monai")
    errors = []

    def work(n):
        img, zero = torch.rand(1, 1, n, n, n), torch.zeros(1, 3, n, n, n)
        try:
            for _ in range(300):
                assert torch.allclose(warp(img, zero), img, atol=1e-5)
        except Exception as e:                      # noqa: BLE001 - collected for the assert
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(n,)) for n in (6, 7, 8, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:2]

