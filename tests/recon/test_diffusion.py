"""DDS / DiffusionMBIR-style samplers: seeded determinism, shapes, data consistency, registry,
schedule identities (against MONAI's DDPMScheduler) — with a small untrained ε-network (the
samplers' mechanics do not depend on the weights' quality)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("einops")


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    from medvol.learned.registry import build_model
    from medvol.learned.weights import save_weights
    from medvol.recon.diffusion import load_prior

    torch.manual_seed(0)
    cfg = {"channels": [8, 8], "norm_num_groups": 8}
    model, c = build_model("diffusion", cfg)
    with torch.no_grad():                 # MONAI zero-initialises the output conv: make ε̂ ≠ 0
        for prm in model.parameters():
            if not bool(prm.abs().sum()):
                prm.normal_(0.0, 0.02)
    p = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(p, model, arch="diffusion", config=c)
    return load_prior(str(p), chunk=3)


@pytest.fixture(scope="module")
def problem():
    from medvol.phantoms import shepp_logan_3d
    from medvol.recon.diffusion import parallel_operator

    vol = torch.as_tensor(np.asarray(shepp_logan_3d(16), np.float32))[4:12]   # (8, 16, 16)
    vol = vol.clamp(0, 1)
    A = parallel_operator(vol.shape, (1.0, 1.0, 1.0), 8, chunk=3)
    return A, A(vol), vol


def test_alphas_cumprod_matches_monai():
    from monai.networks.schedulers import DDPMScheduler

    from medvol.models.diffusion import DiffusionConfig, alphas_cumprod

    s = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta", beta_start=1e-4,
                      beta_end=0.02)
    np.testing.assert_allclose(alphas_cumprod(DiffusionConfig()).numpy(),
                               s.alphas_cumprod.double().numpy(), rtol=1e-5)


@pytest.mark.parametrize("name", ["dds", "mbir"])
def test_sampler_deterministic_under_seed(prior, problem, name):
    from medvol.recon import diffusion as D

    A, y, vol = problem
    f = getattr(D, name)
    a = f(A, y, prior, steps=4, seed=3)
    b = f(A, y, prior, steps=4, seed=3)
    c = f(A, y, prior, steps=4, seed=4)
    assert a.shape == vol.shape and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_dds_output_is_data_consistent(prior, problem):
    """Even with an untrained prior, the ADMM/CG step makes x̂₀ fit the data: the residual
    is far below that of the prior's own (data-free) output."""
    from medvol.recon.diffusion import dds

    A, y, vol = problem
    x = dds(A, y, prior, steps=5, n_cg=10, seed=0)
    r = float((A(x) - y).norm() / y.norm())
    r_zero = 1.0                                   # x = 0
    assert r < 0.2 * r_zero


def test_dds_tv_axes_reach_the_admm_state(prior, problem, monkeypatch):
    """``tv_axes`` sets the TV axes of the ADMM state (z only by default, as the paper), and
    in-plane TV changes the result."""
    from medvol.recon import admm_tv
    from medvol.recon.diffusion import dds

    A, y, _ = problem
    seen = []
    real = admm_tv.admm_init

    def spy(x0, **kw):
        seen.append(tuple(kw["axes"]))
        return real(x0, **kw)

    monkeypatch.setattr(admm_tv, "admm_init", spy)
    a = dds(A, y, prior, steps=3, seed=0, lam=1e-2)
    b = dds(A, y, prior, steps=3, seed=0, lam=1e-2, tv_axes=("z", "y", "x"))
    assert seen == [("z",), ("z", "y", "x")]
    assert not torch.allclose(a, b)


def test_mbir_keeps_persistent_state_and_final_dc(prior, problem, monkeypatch):
    """The ADMM state is created once per run (split/dual persist across steps) and the final
    data-consistency step runs."""
    from medvol.recon import admm_tv
    from medvol.recon.diffusion import mbir

    A, y, vol = problem
    calls = {"init": 0, "iter": 0, "dc": 0}
    real_init, real_iter, real_dc = admm_tv.admm_init, admm_tv.admm_iteration, \
        admm_tv.final_data_consistency

    def init(*a, **k):
        calls["init"] += 1
        return real_init(*a, **k)

    def it(*a, **k):
        calls["iter"] += 1
        return real_iter(*a, **k)

    def dc(*a, **k):
        calls["dc"] += 1
        return real_dc(*a, **k)

    monkeypatch.setattr(admm_tv, "admm_init", init)
    monkeypatch.setattr(admm_tv, "admm_iteration", it)
    monkeypatch.setattr(admm_tv, "final_data_consistency", dc)
    mbir(A, y, prior, steps=6, seed=0)
    assert calls == {"init": 1, "iter": 6, "dc": 1}


def test_registered_methods():
    from medvol.recon.registry import available_methods, get_method

    assert {"dds", "mbir"} <= set(available_methods())
    assert get_method("dds").learned and get_method("dds").resolve("run") is not None
    assert get_method("mbir").resolve("task")("parallel", 1, 8)[1] > 0


@pytest.mark.gpu
def test_dds_runs_on_cuda(prior, problem):  # pragma: no cover - no GPU here
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    import copy

    from medvol.recon.diffusion import dds, parallel_operator

    A, y, vol = problem
    Ag = parallel_operator(vol.shape, (1.0, 1.0, 1.0), 8, device="cuda")
    pg = copy.deepcopy(prior)
    pg.model.to("cuda")
    pg.device = torch.device("cuda")
    x = dds(Ag, y.cuda(), pg, steps=3, seed=0)
    assert x.is_cuda and x.shape == vol.shape
    assert float((Ag(x) - y.cuda()).norm() / y.norm()) < 0.5


def test_shipped_prior_output_unchanged():
    """The shipped diffusion_ct weights predict the recorded ε̂ on a fixed input
    (tests/learned/shipped_reference.json)."""
    import json
    from pathlib import Path

    from medvol.learned.weights import load_weights, shipped_weights

    ref = json.loads((Path(__file__).parents[1] / "learned" / "shipped_reference.json")
                     .read_text())["diffusion_ct"]
    m, info = load_weights(shipped_weights("diffusion_ct"), arch="diffusion")
    assert info.data["held_out"].endswith("chest_cta.nii.gz")
    x = torch.from_numpy(np.sin(np.arange(64 * 64, dtype=np.float32).reshape(1, 1, 64, 64)
                                * 0.01)).float()
    with torch.no_grad():
        out = m.eval()(x, timesteps=torch.tensor([500])).numpy().astype(np.float64).ravel()
    np.testing.assert_allclose(out[ref["idx"]], ref["values"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.sum(), ref["sum"], rtol=1e-4, atol=1e-3)
