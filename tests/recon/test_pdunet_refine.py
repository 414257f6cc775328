"""PD-UNet + TV refinement (``medvol recon --method pdunet --refine N``, issue 14).

Truth used: the TV objective ½‖Ax − y‖² + λ·TV(x) and the data residual ‖Ax − y‖ (computed
here from the operator and the data, not from the refinement's own bookkeeping), and the
ground-truth slice of the bundled head CT (a test patient of the shipped weights)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("finufft")

from medvol.errors import InputError  # noqa: E402
from medvol.recon.pdunet import (REFINE_DEFAULTS, default_refine, pdunet_reconstruct,  # noqa: E402
                                 task_operator)
from medvol.recon.pdunet_data import ct_slices, get_task, simulate_sparse  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "sample_data"   # bundled head CT (held out)


@pytest.fixture(scope="module")
def case():
    task = get_task("ct_x16")
    op = task_operator(task)
    gt = np.stack(ct_slices("test", data=DATA)[1:3])
    y = simulate_sparse(task, gt, op)
    return op, gt, y


def test_defaults_are_stated_per_weights():
    assert default_refine("pdunet_ct_x16") == (20, 0.1) == REFINE_DEFAULTS["pdunet_ct_x16"]
    for other in ("lpd_ct_x16", "pdunet_mri_x16", "lpd_mri_x16", "/some/own.safetensors"):
        assert default_refine(other)[0] == 0


def test_refinement_lowers_tv_objective_and_residual(case):
    from medvol.recon.iterative import tv_objective
    from medvol.recon.registry import tv_lambda

    op, gt, y = case
    net = pdunet_reconstruct(op, y, weights="pdunet_ct_x16", refine=0)
    ref = pdunet_reconstruct(op, y, weights="pdunet_ct_x16")          # default: 20 iterations
    np.testing.assert_allclose(ref, pdunet_reconstruct(op, y, weights="pdunet_ct_x16",
                                                       refine=20, refine_lam=0.1), atol=1e-6)
    lam = tv_lambda(0.1, op.fbp(torch.from_numpy(y)))
    f_net = tv_objective(op, y, net.astype(np.float32), lam)
    f_ref = tv_objective(op, y, ref.astype(np.float32), lam)
    assert np.all(f_ref < 0.9 * f_net), (f_net, f_ref)
    res = [float(np.linalg.norm((op(torch.from_numpy(x.astype(np.float32))).numpy() - y)))
           for x in (net, ref)]
    assert res[1] < res[0]
    assert ref.min() >= 0.0                                            # x ≥ 0 kept
    # and closer to the truth on this held-out patient (PSNR over the slice range)
    from skimage.metrics import peak_signal_noise_ratio as psnr

    gain = np.mean([psnr(g, np.clip(r, 0, None), data_range=float(g.max() - g.min()))
                    - psnr(g, np.clip(n, 0, None), data_range=float(g.max() - g.min()))
                    for g, r, n in zip(gt, ref, net)])
    assert gain > 0.5, gain


def test_refine_zero_is_the_network_and_bad_values_refused(case):
    from medvol.recon.registry import reconstruct

    op, _, y = case
    a = pdunet_reconstruct(op, y[:1], weights="pdunet_ct_x16", refine=0)
    b = reconstruct(op, torch.from_numpy(y[:1]), "pdunet", refine=0).numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(InputError, match="refine"):
        pdunet_reconstruct(op, y[:1], weights="pdunet_ct_x16", refine=-1)
    with pytest.raises(InputError, match="no refinement"):
        reconstruct(op, torch.from_numpy(y[:1]), "tv", refine=5)


def test_cli_refine_recorded_and_refused_for_other_methods(tmp_path):
    import json

    import medvol as mv
    from medvol.cli import main
    from medvol.phantoms import shepp_logan_2d

    p = shepp_logan_2d(128)
    hu = np.where(p > 0.01, (p - 0.2) * 2000.0 + 40.0, -1000.0).astype(np.float32)
    vol = tmp_path / "ct.nrrd"
    mv.io.write(mv.Volume(hu[None], spacing=(1.953125, 1.953125, 3.0), meta={"modality": "CT"}),
                vol)
    out = tmp_path / "r"
    assert main(["recon", str(vol), "-o", str(out), "--method", "pdunet", "--refine", "5",
                 "--lam", "0.2", "--no-progress"]) == 0
    prm = json.loads((out / "manifest.json").read_text())["parameters"]
    assert prm["refine"] == 5 and prm["refine_lam"] == 0.2
    assert main(["recon", str(vol), "-o", str(tmp_path / "bad"), "--method", "tv",
                 "--refine", "5"]) == InputError.exit_code
    assert not (tmp_path / "bad").exists()
