"""Training job of the diffusion prior: resumable through the learned stack, held-out volume
never read, export writes weights + metadata that load back as the registered arch."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("einops")
nib = pytest.importorskip("nibabel")


@pytest.fixture()
def data_root(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "data" / "ct" / "totalseg"
    d.mkdir(parents=True)
    hu = rng.normal(0, 200, (40, 36, 6)).astype(np.float32)      # x, y, z (NIfTI order)
    nib.save(nib.Nifti1Image(hu, np.diag([3.0, 3.0, 3.0, 1.0])), d / "abdomen_ct.nii.gz")
    (d / "chest_cta.nii.gz").write_bytes(b"not a nifti: must never be read")
    return tmp_path / "data"


def test_train_resume_export(data_root, tmp_path):
    from medvol.learned.weights import load_weights
    from medvol.recon.diffusion_data import load_training_slices, train_diffusion

    sl = load_training_slices(data_root)
    assert len(sl) == 3 and all(0.0 <= float(s.min()) and float(s.max()) <= 1.0 for s in sl)
    cfg = {"channels": [8, 8], "norm_num_groups": 8}
    r1 = train_diffusion(data_root, runs=tmp_path / "runs", steps=2, batch=2, crop=16,
                         config=cfg, progress=False, ckpt_every=1)
    r2 = train_diffusion(data_root, runs=tmp_path / "runs", steps=3, batch=2, crop=16,
                         config=cfg, progress=False, ckpt_every=1,
                         export=tmp_path / "out")
    assert r1.steps_done == 2 and r2.resumed_from == 2 and r2.steps_done == 3
    model, info = load_weights(tmp_path / "out" / "diffusion_ct.safetensors", arch="diffusion")
    assert info.data["held_out"].endswith("chest_cta.nii.gz")
    assert info.extra["steps"] == 3
    assert set(info.metrics["denoise_psnr_val"]) == {"50", "100", "200", "400", "700"}
    assert (tmp_path / "out" / "diffusion_ct_samples.png").stat().st_size > 0


def test_init_continues_from_weights(data_root, tmp_path):
    """--init starts from the given weights (not random), keeps their config and adds their
    step count to the exported one; a conflicting config is refused."""
    from medvol.errors import InputError
    from medvol.learned.weights import load_weights
    from medvol.recon.diffusion_data import train_diffusion

    cfg = {"channels": [8, 8], "norm_num_groups": 8}
    train_diffusion(data_root, runs=tmp_path / "a", steps=2, batch=2, crop=16, config=cfg,
                    progress=False, export=tmp_path / "w")
    first = tmp_path / "w" / "diffusion_ct.safetensors"
    m0, _ = load_weights(first)
    # zero learning rate: the continued run must keep the init weights exactly
    train_diffusion(data_root, runs=tmp_path / "b", steps=3, batch=2, crop=16, lr=0.0,
                    progress=False, init=first, seed=5, export=tmp_path / "w2")
    m1, info = load_weights(tmp_path / "w2" / "diffusion_ct.safetensors")
    assert info.extra["steps"] == 5 and info.extra["steps_this_run"] == 3
    assert info.extra["init_steps"] == 2
    for (k, a), b in zip(m0.state_dict().items(), m1.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(InputError, match="config differs"):
        train_diffusion(data_root, runs=tmp_path / "c", steps=1, batch=2, crop=16,
                        config={"channels": [16, 16], "norm_num_groups": 8}, progress=False,
                        init=first)
