"""PD-UNet job (medvol.recon.pdunet): resume equals an uninterrupted run; data split; shipped
weights beat FBP. Data: the bundled head CT (sample_data/dicom/ct_head_ge_tilt) passed explicitly."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("finufft")

from pathlib import Path  # noqa: E402

from medvol.recon.pdunet_data import (apply_augmentation, ct_slices, get_task,  # noqa: E402
                                 sample_augmentation, simulate_sparse)
from medvol.learned.weights import shipped_weights, shipped_weights_names  # noqa: E402
from medvol.recon.pdunet import PRETRAINED, load_pdunet, task_operator  # noqa: E402

TINY = dict(width=4, depth=2, n_primal=4, n_dual=5, n_iter=2, dual_width=4)
DATA = Path(__file__).resolve().parents[2] / "sample_data"   # bundled: dicom/ct_head_ge_tilt


@pytest.mark.slow
def test_resume_matches_uninterrupted(tmp_path):
    from medvol.recon.pdunet import train_pdunet

    # the bundled head CT only (the many-patient cohort lives in ../shared/data)
    quiet = dict(progress=False, log_every=1, checkpoint_every=1000,
                 images=ct_slices("train", data=DATA))
    a = train_pdunet("ct_x16", "pdunet", steps=3, batch=1, config=TINY, run_dir=tmp_path / "a",
                     **quiet)
    r1 = train_pdunet("ct_x16", "pdunet", steps=3, batch=1, config=TINY, run_dir=tmp_path / "b",
                      time_limit_s=0.0, **quiet)
    assert r1.steps_done == 1 and not r1.finished
    r2 = train_pdunet("ct_x16", "pdunet", steps=3, batch=1, config=TINY, run_dir=tmp_path / "b",
                      export=tmp_path / "b.safetensors", **quiet)
    assert r2.finished and (tmp_path / "b" / "loss_curve.png").stat().st_size > 1000
    la = np.array([h["loss"] for h in a.history])
    lb = np.array([h["loss"] for h in r2.history])
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    from medvol.learned import load_weights
    m, meta = load_weights(tmp_path / "b.safetensors")
    assert meta.task["name"] == "ct_x16" and m.config == TINY


def test_ct_split_is_disjoint_and_in_attenuation_units():
    tr, te = ct_slices("train", data=DATA), ct_slices("test", data=DATA)
    assert len(tr) == 22 and len(te) == 6
    # no test slice appears in training
    for t in te:
        assert min(float(np.abs(t - x).mean()) for x in tr) > 1e-4
    water = np.median(np.concatenate([x.ravel() for x in tr])[
        np.concatenate([x.ravel() for x in tr]) > 0.01])
    assert 0.015 < water < 0.025          # soft tissue/brain ≈ μ_water ≈ 0.019 /mm


def test_augmentation_is_deterministic_given_params():
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    p = sample_augmentation(np.random.default_rng(5))
    np.testing.assert_array_equal(apply_augmentation(img, p), apply_augmentation(img, p))
    rot = apply_augmentation(img, {"angle_deg": 90.0, "flip": False})
    np.testing.assert_allclose(rot[2:-2, 2:-2], np.rot90(img)[2:-2, 2:-2], atol=1e-5)


def _shipped(name):
    assert name in shipped_weights_names(), f"shipped weights missing: {name}"
    return load_pdunet(name)


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_shipped_weights_load(name):
    model, meta = _shipped(name)
    assert shipped_weights(name).is_file()
    assert meta.task["image_size"] == 128 and meta.task["sparsity"] == 16
    assert float(model.image_scale) > 0


def test_shipped_ct_pdunet_beats_fbp_on_held_out_slice():
    from medvol.metrics import ssim
    from medvol.recon.pdunet import pdunet_reconstruct

    _shipped("pdunet_ct_x16")
    task = get_task("ct_x16")
    gt = ct_slices("test", data=DATA)[2]
    op = task_operator(task)
    y = simulate_sparse(task, gt[None], op)[0]
    rec = pdunet_reconstruct(op, y, weights="pdunet_ct_x16")
    fbp = op.fbp(torch.from_numpy(y)).numpy()
    dr = float(gt.max() - gt.min())
    assert ssim(np.clip(rec, 0, None), gt, data_range=dr) > ssim(np.clip(fbp, 0, None), gt,
                                                                  data_range=dr) + 0.1


def test_shipped_mri_pdunet_from_kspace_beats_gridding():
    from medvol.recon.pdunet_data import mri_slices
    from medvol.recon.pdunet import pdunet_reconstruct_kspace
    from medvol.metrics import ssim
    from medvol.mri import gridding_recon, nufft_forward

    _shipped("pdunet_mri_x16")
    gt = mri_slices("test")[50]      # nilearn's MNI152 template (inside the nilearn wheel)
    tr = get_task("mri_x16").sparse_trajectory()
    k = nufft_forward(gt, tr)
    rec = pdunet_reconstruct_kspace(k, tr, weights="pdunet_mri_x16")
    grid = gridding_recon(k, tr, gt.shape)
    assert rec.shape == gt.shape == (128, 128)
    assert ssim(np.clip(rec, 0, None), gt, data_range=1.0) > ssim(grid, gt, data_range=1.0) + 0.1


@pytest.mark.slow
def test_train_pdunet_cli_function(tmp_path, shared_data):
    import typer
    from typer.testing import CliRunner

    from medvol.commands.train_pdunet import train_pdunet

    app = typer.Typer()
    app.command()(train_pdunet)
    app.command("noop")(lambda: None)         # keep "train-pdunet" as a named subcommand
    out = tmp_path / "w.safetensors"
    r = CliRunner().invoke(app, ["train-pdunet", "--data", str(shared_data), "--steps", "1",
                                 "--batch", "1",
                                 "--run-dir", str(tmp_path / "run"), "--export", str(out)])
    assert r.exit_code == 0, r.output
    assert "finished at step 1" in r.output and out.exists()
    r = CliRunner().invoke(app, ["train-pdunet", "--steps", "1", "--export",
                                 str(tmp_path / "w.pt")])
    assert r.exit_code != 0
    from medvol.errors import InputError
    assert isinstance(r.exception, InputError)


@pytest.mark.slow
def test_ssim_weight_adds_the_benchmark_ssim_term_and_joins_the_run_config(tmp_path):
    """--ssim-weight: the logged loss is L1 + w (1 - SSIM); that SSIM is the benchmark's
    (skimage, Gaussian sigma 1.5); a run resumes only with its own weight."""
    from monai.losses import SSIMLoss
    from skimage.metrics import structural_similarity

    from medvol.errors import InputError
    from medvol.recon.pdunet import train_pdunet

    quiet = dict(progress=False, log_every=1, checkpoint_every=1000,
                 images=ct_slices("train", data=DATA))
    r = train_pdunet("ct_x16", "pdunet", steps=2, batch=1, config=TINY, run_dir=tmp_path / "s",
                     ssim_weight=0.5, export=tmp_path / "s.safetensors", **quiet)
    for h in r.history:
        assert 0.0 < h["one_minus_ssim"] < 2.0
        assert h["loss"] == pytest.approx(h["l1"] + 0.5 * h["one_minus_ssim"], rel=1e-5)
    from medvol.learned import load_weights
    _, meta = load_weights(tmp_path / "s.safetensors")
    assert meta.extra["ssim_weight"] == 0.5
    assert meta.metrics["final_l1"] == pytest.approx(r.history[-1]["l1"])
    with pytest.raises(InputError):      # same run folder, other loss: refused, not mixed
        train_pdunet("ct_x16", "pdunet", steps=3, batch=1, config=TINY,
                     run_dir=tmp_path / "s", ssim_weight=1.0, **quiet)
    # the loss's SSIM is the benchmark's SSIM (skimage, Gaussian window sigma 1.5)
    rng = np.random.default_rng(3)
    a = ct_slices("train", data=DATA)[0]
    a = a / a.max()
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, None).astype(np.float32)
    ours = 1.0 - float(SSIMLoss(spatial_dims=2, data_range=1.0, win_size=11, kernel_sigma=1.5)(
        torch.from_numpy(b)[None, None], torch.from_numpy(a.astype(np.float32))[None, None]))
    ref = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert abs(ours - ref) < 1e-3 and ref < 0.9


@pytest.mark.slow
def test_sources_restrict_the_ct_training_cohort_and_are_recorded(tmp_path, shared_data):
    """--sources: only those cohort sources are read (the PET/CT subject: its 20 slices) and the
    choice is in the run config and the weights' metadata; MRI and unknown sources are refused."""
    from medvol.errors import InputError
    from medvol.learned import load_weights
    from medvol.recon.pdunet import train_pdunet

    quiet = dict(progress=False, log_every=1, checkpoint_every=1000, config=TINY, batch=1)
    r = train_pdunet("ct_x16", "pdunet", data=shared_data, steps=1, sources=["petct"],
                     run_dir=tmp_path / "p", export=tmp_path / "p.safetensors", **quiet)
    assert r.finished
    _, meta = load_weights(tmp_path / "p.safetensors")
    assert meta.data["sources"] == ["petct"] and meta.data["n_train_slices"] == 20
    assert [row["source"] for row in meta.data["subjects"]] == ["petct"]
    assert meta.data["read"] == ["ct/totalseg/petct_dicom"]       # what was read, not all sources
    with pytest.raises(InputError):      # same run folder, other data: refused, not mixed
        train_pdunet("ct_x16", "pdunet", data=shared_data, steps=2, run_dir=tmp_path / "p",
                     sources=["petct", "chest_cta"], **quiet)
    with pytest.raises(InputError, match="unknown CT source"):
        train_pdunet("ct_x16", "pdunet", data=shared_data, steps=1, sources=["lungs"],
                     run_dir=tmp_path / "u", **quiet)
    with pytest.raises(InputError, match="MRI"):
        train_pdunet("mri_x16", "pdunet", data=shared_data, steps=1, sources=["petct"],
                     run_dir=tmp_path / "m", **quiet)
