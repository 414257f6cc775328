"""ADMM-TV / CG solver of the diffusion samplers: checked against independent truth
(scipy least squares, closed-form soft threshold, inner-product adjointness, residual decrease)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medvol.recon.admm_tv import (ADMMState, SliceChunked, admm_init, admm_iteration,  # noqa: E402
                                  admm_tv, cg, diff, diff_adjoint, final_data_consistency,
                                  soft_threshold)


class Dense:
    """A small dense operator on (nz, n) 'volumes' (axis -3 needs 3 dims: (nz, 1, n))."""

    def __init__(self, M, nz, n):
        self.M = torch.as_tensor(M, dtype=torch.float64)
        self.nz, self.n = nz, n
        self.domain_shape, self.range_shape = (1, n), (1, self.M.shape[0])

    def __call__(self, x):
        return torch.einsum("mn,...n->...m", self.M, x)

    @property
    def T(self):
        parent = self

        class _T:
            def __call__(self, y):
                return torch.einsum("mn,...m->...n", parent.M, y)
        return _T()

    def norm(self, n_iter=50, seed=0):
        return float(np.linalg.norm(self.M.numpy(), 2))


def test_soft_threshold_known_values():
    v = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.2, 0.5, 2.5])
    out = soft_threshold(v, 0.5)
    assert torch.allclose(out, torch.tensor([-2.5, -0.5, 0.0, 0.0, 0.0, 0.0, 2.0]))


@pytest.mark.parametrize("circular", [False, True])
@pytest.mark.parametrize("axis", [-3, -2, -1])
def test_diff_adjointness(circular, axis):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 5, 6, generator=g, dtype=torch.float64)
    p = torch.randn(7, 5, 6, generator=g, dtype=torch.float64)
    lhs = float((diff(x, axis, circular=circular) * p).sum())
    rhs = float((x * diff_adjoint(p, axis, circular=circular)).sum())
    assert abs(lhs - rhs) < 1e-12 * max(1.0, abs(lhs))
    # and D is the forward difference (known values)
    ramp = torch.arange(7.0, dtype=torch.float64).view(7, 1, 1).expand(7, 5, 6)
    dz = diff(ramp, -3, circular=circular)
    assert torch.allclose(dz[:-1], torch.ones_like(dz[:-1]))
    assert float(dz[-1].abs().max()) == (6.0 if circular else 0.0)


@pytest.mark.parametrize("m", [16, 9])
def test_admm_lambda_zero_converges_to_least_squares(m):
    """λ = 0: full column rank (m=16 > n) → the unique least-squares solution (scipy lsqr);
    under-determined (m=9 < n, like sparse views) → a point of the LS set (Ax = y)."""
    from scipy.sparse.linalg import lsqr

    rng = np.random.default_rng(0)
    nz, n = 4, 12
    M = rng.standard_normal((m, n))
    A = Dense(M, nz, n)
    y = torch.as_tensor(rng.standard_normal((nz, 1, m)))
    x = admm_tv(A, y, lam=0.0, rho=0.01, n_outer=200, n_cg=30, axes=("z",), normalise=True)
    for k in range(nz):
        ref = lsqr(M, y[k, 0].numpy(), atol=1e-14, btol=1e-14, iter_lim=1000)[0]
        if m > n:
            np.testing.assert_allclose(x[k, 0].numpy(), ref, atol=1e-6)
        else:
            np.testing.assert_allclose(M @ x[k, 0].numpy(), y[k, 0].numpy(), atol=1e-6)


def test_admm_tvz_matches_dense_solution():
    """λ > 0, over-determined A: the ADMM answer is a minimiser of the convex objective (no
    random perturbation lowers it) and has less z-variation than least squares."""
    rng = np.random.default_rng(3)
    nz, n, m = 6, 5, 8
    M = rng.standard_normal((m, n))
    A = Dense(M, nz, n)
    base = rng.standard_normal((1, 1, n))
    xt = np.repeat(base, nz, 0) + 0.01 * rng.standard_normal((nz, 1, n))
    y = torch.as_tensor(xt @ M.T + 0.05 * rng.standard_normal((nz, 1, m)))
    lam = 0.5
    x = admm_tv(A, y, lam=lam, rho=2.0, n_outer=600, n_cg=20, axes=("z",), normalise=False)
    # objective at x vs. at perturbations: x is a (global, convex) minimiser
    def f(v):
        r = torch.einsum("mn,...n->...m", A.M, v) - y
        return 0.5 * float((r ** 2).sum()) + lam * float(diff(v, -3).abs().sum())
    f0 = f(x)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        d = torch.randn(x.shape, generator=g, dtype=torch.float64) * 1e-3
        assert f(x + d) >= f0 - 1e-7
    # and TV-z did its job: slices are closer to each other than in the LS solution
    ls = torch.as_tensor(np.linalg.lstsq(M, y.numpy().reshape(nz, m).T, rcond=None)[0].T)
    assert float(diff(x, -3).abs().sum()) < float(diff(ls.view(nz, 1, n), -3).abs().sum())


def test_cg_solves_spd_system():
    rng = np.random.default_rng(1)
    B = rng.standard_normal((10, 10))
    S = torch.as_tensor(B @ B.T + 10 * np.eye(10))
    b = torch.as_tensor(rng.standard_normal(10))
    x = cg(lambda v: S @ v, b, torch.zeros(10, dtype=torch.float64), 30)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(S.numpy(), b.numpy()), atol=1e-9)


def test_state_persists_across_iterations():
    rng = np.random.default_rng(2)
    A = Dense(rng.standard_normal((6, 8)), 5, 8)
    y = torch.as_tensor(rng.standard_normal((5, 1, 6)))
    st = admm_init(torch.zeros(5, 1, 8, dtype=torch.float64))
    admm_iteration(A, y, st, lam=0.1, rho=1.0, n_cg=2)
    d1 = st.d[0].clone()
    u1 = st.u[0].clone()
    assert isinstance(st, ADMMState) and st.iterations == 1
    assert float(u1.abs().sum()) > 0 or float(d1.abs().sum()) > 0
    admm_iteration(A, y, st, lam=0.1, rho=1.0, n_cg=2)
    # the dual accumulates: u2 = u1 + Dx2 - d2 (not a fresh u = Dx2 - d2)
    Dx2 = diff(st.x, -3)
    np.testing.assert_allclose(st.u[0].numpy(), (u1 + Dx2 - st.d[0]).numpy(), atol=1e-12)


def test_final_data_consistency_lowers_residual_on_projector():
    from medvol.kernels import Projector
    from medvol.phantoms import shepp_logan_2d
    from medvol.simulate import default_parallel_geometry

    n = 32
    img = torch.as_tensor(np.asarray(shepp_logan_2d(n), np.float32))
    vol = torch.stack([img * (1 + 0.05 * k) for k in range(4)])
    g = default_parallel_geometry((n, n), (1.0, 1.0), n_views=8)
    A = SliceChunked(Projector(g, (n, n), (1.0, 1.0), backend="torch", device="cpu"), chunk=3)
    y = A(vol)
    x = vol + 0.1 * torch.randn(vol.shape, generator=torch.Generator().manual_seed(0))
    r0 = float((A(x) - y).norm())
    x1 = final_data_consistency(A, y, x)
    r1 = float((A(x1) - y).norm())
    assert r1 < 0.9 * r0
    # SliceChunked equals the unchunked operator
    full = Projector(g, (n, n), (1.0, 1.0), backend="torch", device="cpu")
    assert torch.allclose(A(x), full(x), atol=1e-5)
    assert torch.allclose(A.T(y), full.T(y), atol=1e-4)


def test_matrix_slice_operator_equals_projector():
    from medvol.kernels import Projector
    from medvol.recon.admm_tv import MatrixSliceOperator
    from medvol.simulate import default_parallel_geometry

    n = 16
    g = default_parallel_geometry((n, n), (2.0, 2.0), n_views=5)
    P = Projector(g, (n, n), (2.0, 2.0), backend="torch", device="cpu")
    M = MatrixSliceOperator(P, batch=13)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, n, n, generator=gen)
    y = torch.rand(3, *P.range_shape, generator=gen)
    assert torch.allclose(M(x), P(x), rtol=1e-4, atol=1e-4 * float(P(x).abs().max()))
    assert torch.allclose(M.T(y), P.T(y), rtol=1e-4, atol=1e-4 * float(P.T(y).abs().max()))
    assert abs(M.norm() - P.norm(n_iter=200)) < 1e-3 * M.norm()
