"""Each shipped learned-reconstruction model, pinned on a fixed held-out case (issue 20).

The reconstruction runs through ``medvol recon`` (the CLI entry point) and SSIM / PSNR are
recomputed with scikit-image from the written ``recon.nrrd`` against a reference built here,
independently of medvol's data code:

* CT (``pdunet_ct_x16``, ``lpd_ct_x16``): 6 slices (instance numbers 16–21) of the bundled GE
  head CT — a test patient of the many-patient weights (no head CT in their training) — read
  with pydicom, 4×4 block-averaged to 128² (1.953 mm), written as a
  volume; ``medvol recon VOLUME --method pdunet`` simulates the 23-view fan-beam data and
  reconstructs. Scored in attenuation units μ = 0.0192·(1 + HU/1000) /mm clipped at 0, Gaussian
  SSIM (σ 1.5), data range = ground-truth range — the model card's rule.
* MRI (``pdunet_mri_x16``, ``lpd_mri_x16``): three slices of nilearn's MNI152 T1 template
  (held out from training), 16 radial spokes × 256 samples simulated with
  :func:`medvol.mri.nufft_forward`, reconstructed by ``medvol recon spokes.npz --method pdunet``.

The pinned values are the measured means on these cases; tolerance ±0.02 SSIM and ±0.5 dB PSNR,
so swapping PD-UNet for the LPD weights or a broken loader fails.
"""
from __future__ import annotations

import numpy as np
import pytest

from medvol.cli import main

nrrd = pytest.importorskip("nrrd")

SSIM_TOL, PSNR_TOL = 0.02, 0.5
#: name -> (pinned mean SSIM, pinned mean PSNR dB); model card values in the comments
PINNED = {
    "pdunet_ct_x16": (0.9740, 35.63),   # many-patient weights (stage 6); head CT never trained on
    "pdunet_ct_x16+refine": (0.9819, 37.11),  # recon's default: + 20 TV iterations (λ 0.1)
    "lpd_ct_x16": (0.8846, 26.51),      # many-patient weights (600 steps)
    "pdunet_mri_x16": (0.9032, 28.52),  # many-subject weights (IXI train + stroke)
    "lpd_mri_x16": (0.8803, 27.60),     # many-subject weights
}


def _scores(gts, recs) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    s, p = [], []
    for g, r in zip(gts, recs):
        dr = float(g.max() - g.min())
        s.append(structural_similarity(g, r, data_range=dr, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))
        p.append(peak_signal_noise_ratio(g, r, data_range=dr))
    return float(np.mean(s)), float(np.mean(p))


@pytest.fixture(scope="module")
def ct_case(ge_ct_dir, tmp_path_factory):
    import pydicom

    from medvol import Volume
    import medvol.io as mio

    hu = {}
    for f in sorted(ge_ct_dir.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        hu[int(ds.InstanceNumber)] = (ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope)
                                      + float(ds.RescaleIntercept))
    a = np.stack([hu[i] for i in range(16, 22)])                 # held-out slab
    a = a.reshape(6, 128, 4, 128, 4).mean((2, 4))
    path = tmp_path_factory.mktemp("ct") / "heldout.nrrd"
    mio.write(Volume(a.astype(np.float32), spacing=(1.953125, 1.953125, 5.0)), path)
    return path, np.clip(0.0192 * (1 + a / 1000.0), 0, None)


@pytest.fixture(scope="module")
def mri_case(tmp_path_factory):
    from nilearn import datasets
    from skimage.transform import resize

    from medvol.mri import nufft_forward, uniform_trajectory

    img = datasets.load_mni152_template(resolution=1)
    arr = np.asarray(img.get_fdata(), np.float32).transpose(2, 1, 0)[:, ::-1, :]
    arr = np.clip(arr, 0, None) / float(arr.max())
    brain = [z for z in range(arr.shape[0]) if (arr[z] > 0.05).mean() >= 0.2]
    gts = []
    for z in (brain[20], brain[50], brain[80]):
        sl = arr[z]
        n = max(sl.shape)
        pad = np.zeros((n, n), np.float32)
        oy, ox = (n - sl.shape[0]) // 2, (n - sl.shape[1]) // 2
        pad[oy:oy + sl.shape[0], ox:ox + sl.shape[1]] = sl
        gts.append(np.clip(resize(pad, (128, 128), order=1, anti_aliasing=True,
                                  preserve_range=True), 0, None).astype(np.float32))
    tr = uniform_trajectory(256, 256).subsample(16)
    d = tmp_path_factory.mktemp("mri")
    files = []
    for i, g in enumerate(gts):
        files.append(d / f"spokes{i}.npz")
        np.savez(files[i], kspace=nufft_forward(g, tr), angles=tr.angles)
    return files, gts


def _check(name, ssim, psnr):
    s0, p0 = PINNED[name]
    assert abs(ssim - s0) <= SSIM_TOL, f"{name}: SSIM {ssim:.4f}, pinned {s0:.4f}"
    assert abs(psnr - p0) <= PSNR_TOL, f"{name}: PSNR {psnr:.2f} dB, pinned {p0:.2f} dB"


@pytest.mark.parametrize("name", ["pdunet_ct_x16", "pdunet_ct_x16+refine", "lpd_ct_x16"])
def test_shipped_ct_model_on_held_out_slab(name, ct_case, tmp_path):
    """The networks alone (``--refine 0``; LPD has no default refinement) and ``pdunet_ct_x16``
    as ``medvol recon --method pdunet`` runs it by default (network + 20 TV iterations)."""
    path, mu = ct_case
    out = tmp_path / name
    weights, _, refined = name.partition("+")
    extra = [] if refined else ["--refine", "0"]
    assert main(["recon", str(path), "--method", "pdunet", "--weights", weights, "-o", str(out),
                 "--no-progress"] + extra) == 0
    m = __import__("json").loads((out / "manifest.json").read_text())["parameters"]
    assert m["refine"] == (20 if refined else 0)
    hu, _ = nrrd.read(str(out / "recon.nrrd"), index_order="C")
    assert hu.shape == mu.shape
    rec = np.clip(0.0192 * (1 + hu.astype(np.float64) / 1000.0), 0, None)
    _check(name, *_scores(mu, rec))


@pytest.mark.parametrize("name", ["pdunet_mri_x16", "lpd_mri_x16"])
def test_shipped_mri_model_on_held_out_slices(name, mri_case, tmp_path):
    files, gts = mri_case
    recs = []
    for i, f in enumerate(files):
        out = tmp_path / f"{name}_{i}"
        assert main(["recon", str(f), "--method", "pdunet", "--weights", name, "-o", str(out),
                     "--no-progress"]) == 0
        x, _ = nrrd.read(str(out / "recon.nrrd"), index_order="C")
        recs.append(np.clip(x.reshape(gts[i].shape), 0, None))
    _check(name, *_scores(gts, recs))
