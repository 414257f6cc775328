"""Many-patient PD-UNet data (issue 14): split by patient, no identifiers, augmentation and noise
against known answers. Real data from ``../shared/data`` (``shared_data`` fixture)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from medvol.recon.pdunet_data import add_poisson_noise, apply_augmentation


@pytest.fixture(scope="module")
def ct_cohort(shared_data):
    from medvol.recon.pdunet_cohort import ct_subjects

    return ct_subjects(shared_data)


def test_ct_cohort_split_by_patient(ct_cohort, shared_data):
    import pydicom

    from medvol.recon.pdunet_cohort import N_TCGA_TEST, split_table

    keys = [s.key for s in ct_cohort]
    assert len(keys) == len(set(keys))                 # one entry, one split per patient
    tcga = [s for s in ct_cohort if s.source == "tcga_luad"]
    # the patients behind the 100 slices, counted from the DICOM headers themselves
    pids = {str(pydicom.dcmread(f, stop_before_pixels=True).PatientID)
            for f in (shared_data / "ct" / "tcga_luad_slices").glob("*.dcm")}
    assert len(tcga) == len(pids) == 54
    assert sum(len(s.slices) for s in tcga) == 100          # every slice kept (≤ 6 per patient)
    test = [s for s in ct_cohort if s.split == "test"]
    assert len([s for s in test if s.source == "tcga_luad"]) == N_TCGA_TEST
    assert len(test) >= 10 and len({s.region for s in test}) >= 2
    # no identifier leaves the module: neither in keys nor in the split table
    table = split_table(ct_cohort)
    for pid in pids:
        assert pid not in table and all(pid not in k for k in keys)
    # no test slice appears among the training slices (different patients, different images)
    train = np.stack([x for s in ct_cohort if s.split == "train" for x in s.slices])
    for s in test:
        for x in s.slices:
            assert np.abs(train - x).mean(axis=(1, 2)).min() > 1e-4
    # attenuation units: soft tissue near μ_water = 0.0192 /mm
    allpix = np.concatenate([x.ravel() for s in ct_cohort for x in s.slices])
    assert 0.015 < np.median(allpix[allpix > 0.01]) < 0.025


def test_synthetic_head_ct_has_the_ct_numbers_of_its_tissue_classes():
    from medvol.recon.pdunet_cohort import _TISSUE_HU, synth_head_hu

    lab = np.zeros((64, 64), np.int16)
    lab[8:56, 8:56] = 511                   # skin
    lab[12:52, 12:52] = 515                 # skull
    lab[18:46, 18:46] = 24                  # CSF
    lab[22:42, 22:42] = 2                   # white matter
    lab[28:36, 28:36] = 4                   # ventricle (CSF class)
    lab[2:6, 2:6] = 999                     # a label the table does not list: soft tissue
    hu = synth_head_hu(lab, np.random.default_rng(0))
    assert hu.shape == lab.shape and hu.dtype == np.float32
    assert np.all(hu[lab == 0] == -1000.0)                     # air stays air (no texture)
    lo, hi = _TISSUE_HU["soft"]
    assert lo - 20 < hu[lab == 999].mean() < hi + 20
    for label, cls, tol in ((2, "wm", 20), (24, "csf", 20), (511, "skin", 20)):
        lo, hi = _TISSUE_HU[cls]
        v = hu[lab == label]
        assert lo - tol < v.mean() < hi + tol and v.std() > 1.0     # textured, in range
    bone = hu[lab == 515]
    assert 700 * 0.6 < bone.mean() < 1600 * 1.4 and bone.std() > 20
    # one value per class: the ventricle and the CSF share the class value (texture aside)
    assert abs(np.median(hu[lab == 4]) - np.median(hu[lab == 24])) < 15
    # seeded: same generator state, same image; another state, another image
    assert np.array_equal(hu, synth_head_hu(lab, np.random.default_rng(0)))
    assert not np.allclose(hu, synth_head_hu(lab, np.random.default_rng(1)))


def test_synthetic_heads_are_training_only_and_the_test_split_reads_none(shared_data, tmp_path):
    from medvol.recon.pdunet_cohort import CT_SOURCES, CT_TRAIN_ONLY, SYNTH_HEAD_SLICES, ct_subjects
    from medvol.simulate import MU_WATER_70KEV

    syn = ct_subjects(shared_data, split="train", sources=("synth_head",))
    n_maps = len(list((shared_data / "mri" / "synthseg_label_maps").glob("*.nii.gz")))
    assert len(syn) == n_maps == 20 and len({s.key for s in syn}) == 20
    assert all(s.split == "train" and s.region == "head" for s in syn)
    for s in syn:
        assert len(s.slices) == SYNTH_HEAD_SLICES
        for x in s.slices:
            assert x.shape == (128, 128)
            # a head: soft tissue near water, bone well above it, air around
            assert x.max() > 1.5 * MU_WATER_70KEV and x[0].max() == 0.0
            assert 0.15 < (x > 0.5 * MU_WATER_70KEV).mean() < 0.8
    assert not ct_subjects(shared_data, split="test", sources=("synth_head",))
    # a data root holding only the test sources is enough for the test split
    root = tmp_path / "data"
    for src, rel in CT_SOURCES.items():
        if src not in CT_TRAIN_ONLY:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).symlink_to(shared_data / rel)
    test = ct_subjects(root, split="test")
    assert {s.source for s in test} == {"tcga_luad", "head_ct", "abdomen_ct"}


def test_mri_cohort_split_follows_ixi_split(shared_data):
    from medvol.recon.pdunet_cohort import mri_subjects

    subs = mri_subjects(shared_data)
    by = {s.split: [x for x in subs if x.split == s.split] for s in subs}
    assert {x.source for x in by["test"]} == {"ixi", "mni"} and len(by["test"]) == 4
    assert len([x for x in by["train"] if x.source == "ixi"]) == 7
    for s in subs:
        assert all(x.shape == (128, 128) and 0 <= x.min() and x.max() <= 1.0 + 1e-6
                   for x in s.slices)


def test_zoom_flip_and_intensity_are_what_they_say():
    n = 64
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    disk = (np.hypot(yy, xx) < 10).astype(np.float32)
    big = apply_augmentation(disk, {"zoom": 2.0})
    assert big.sum() == pytest.approx(4 * disk.sum(), rel=0.05)     # radius ×2 → area ×4
    ramp = np.tile(np.arange(n, dtype=np.float32), (n, 1)).T       # grows down the rows
    np.testing.assert_array_equal(apply_augmentation(ramp, {"flip_ud": True}), ramp[::-1])
    np.testing.assert_allclose(apply_augmentation(disk, {"intensity": 1.1}), 1.1 * disk,
                               rtol=1e-6)


def test_poisson_noise_has_transmission_statistics():
    y = np.full((200, 200), 2.0, np.float32)
    i0 = 1e5
    z = add_poisson_noise(y, i0, np.random.default_rng(0))
    # −ln(N/I0) with N ~ Poisson(I0 e^{−y}): mean ≈ y, variance ≈ e^{y}/I0 (delta method)
    assert z.mean() == pytest.approx(2.0, abs=2e-3)
    assert z.var() == pytest.approx(np.exp(2.0) / i0, rel=0.05)


def test_weights_for_modality():
    from medvol.recon.pdunet import weights_for_modality

    assert weights_for_modality("CT") == "pdunet_ct_x16"
    assert weights_for_modality("MR") == "pdunet_mri_x16"
    assert weights_for_modality("MR", "lpd") == "lpd_mri_x16"


def test_mismatched_grid_warns_once_with_what_to_do(caplog):
    pytest.importorskip("torch")
    from medvol.recon.pdunet import pdunet_operator, pdunet_reconstruct
    from medvol.simulate import default_fan_geometry

    g = default_fan_geometry((96, 96), (2.0, 2.0), 360).subsample(16)
    A = pdunet_operator(g, (96, 96), (2.0, 2.0))
    y = np.zeros(g.sino_shape, np.float32)
    with caplog.at_level(logging.WARNING, logger="medvol.recon.pdunet"):
        out = pdunet_reconstruct(A, y, weights="pdunet_ct_x16", modality="MR")
    assert out.shape == (96, 96)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("trained on 128x128" in m and "96x96" in m and "medvol train pdunet" in m
               for m in msgs)
    assert any("pdunet_mri_x16" in m for m in msgs)              # modality → the MRI weights
    assert all("\n" not in m for m in msgs)
