"""The reconstruction-method registry and the jobs as library functions (no CLI involved)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import medvol as mv  # noqa: E402
from medvol.errors import InputError, OutputExistsError  # noqa: E402
from medvol.recon import registry as R  # noqa: E402


def test_builtin_methods_and_unknown_name():
    assert R.available_methods()[:5] == ("fbp", "sirt", "cgls", "tv", "pdunet")
    assert R.get_method("pdunet").learned and R.get_method("tv").uses_lambda
    with pytest.raises(InputError, match="unknown reconstruction method 'magic'") as e:
        R.get_method("magic")
    assert "fbp" in (e.value.hint or "")
    with pytest.raises(InputError, match="already registered"):
        R.register_method("fbp", lambda *a, **k: None)


def test_reconstruct_by_name_equals_the_solver_and_a_new_method_registers(monkeypatch):
    from medvol.geometry import ParallelBeam2D
    from medvol.kernels import Projector
    from medvol.phantoms import shepp_logan_2d
    from medvol.recon import cgls, reconstruct

    g = ParallelBeam2D(np.linspace(0, np.pi, 30, endpoint=False), n_det=48)
    A = Projector(g, (32, 32), backend="torch")
    y = A(torch.from_numpy(shepp_logan_2d(32)).float())
    np.testing.assert_array_equal(reconstruct(A, y, "cgls", n_iter=7).numpy(),
                                  cgls(A, y, n_iter=7, progress=False).numpy())
    # a later method registers itself by a lazy "module:function" reference
    monkeypatch.setattr(R, "_METHODS", dict(R._METHODS))
    R.register_method("backproject", "medvol.recon.registry:_test_backproject",
                      description="unfiltered back-projection (test)")
    monkeypatch.setattr(R, "_test_backproject", lambda A, y, **kw: A.T(y), raising=False)
    assert "backproject" in R.available_methods()
    np.testing.assert_allclose(reconstruct(A, y, "backproject").numpy(), A.T(y).numpy())
    with pytest.raises(InputError, match="n_iter"):
        reconstruct(A, y, "sirt", n_iter=0)


def test_tv_lambda_rule_is_the_995th_percentile_scale():
    img = np.arange(1000, dtype=np.float64).reshape(10, 100) / 1000.0
    assert R.image_scale(img) == pytest.approx(np.percentile(img, 99.5))
    assert R.tv_lambda(None, img) == pytest.approx(0.02 * np.percentile(img, 99.5))
    assert R.tv_lambda(0.5, torch.from_numpy(img)) == pytest.approx(0.5 * np.percentile(img, 99.5))
    assert R.tv_lambda(0.1, np.zeros(5)) == pytest.approx(0.1)        # empty scale → 1


def test_importing_recon_loads_neither_torch_nor_learned():
    code = ("import sys, medvol.recon, medvol.mri, medvol.operators; "
            "print(any(m.startswith(('torch', 'medvol.learned')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def _ct(n=48, nz=2):
    from medvol.phantoms import shepp_logan_2d

    p = shepp_logan_2d(n)
    hu = np.where(p > 0.01, (p - 0.2) * 2000.0 + 40.0, -1000.0).astype(np.float32)
    return mv.Volume(np.stack([hu] * nz), spacing=(2.0, 2.0, 3.0), meta={"modality": "CT"})


def test_jobs_run_without_the_cli(tmp_path):
    from medvol.recon import recon_job, simulate_job

    ct = tmp_path / "ct.nrrd"
    mv.io.write(_ct(), ct)
    res = recon_job(ct, tmp_path / "rec", method="cgls", views=4, full_views=120, slices=slice(0, 1))
    man = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert man["parameters"]["slices"] == "0:1" and res.volume.shape[0] == 1
    rec, fbp = man["metrics"]["metrics"]["recon"], man["metrics"]["metrics"]["fbp"]
    assert rec["psnr_db"] > fbp["psnr_db"]
    assert {"recon.nrrd", "fbp.nrrd", "report.html", "comparison.png"} <= {
        p.name for p in (tmp_path / "rec").iterdir()}
    with pytest.raises(OutputExistsError):
        recon_job(ct, tmp_path / "rec", method="fbp")
    with pytest.raises(InputError, match="geometry"):
        recon_job(ct, tmp_path / "bad", geometry="helical")
    assert not (tmp_path / "bad").exists()
    info = simulate_job(ct, tmp_path / "sino", geometry="parallel", views=4, full_views=120)
    assert np.load(tmp_path / "sino" / "sinogram.npy").shape == (2, 30, info["geometry"]["n_det"])
    res = recon_job(tmp_path / "sino", tmp_path / "rec_tv", method="tv", n_iter=20)
    assert res.record["tv_lambda"] > 0 and res.volume.shape == (2, 48, 48)
