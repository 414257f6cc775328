"""Every shipped weights file loads through the one loader and predicts exactly what it did
through the loaders it replaced.

``shipped_reference.json`` holds the outputs of the old per-model loaders (``medvol.learned``'s
PD-UNet loader with ``TomoOperator``; ``medvol.registration.learned.load_model``) at commit
98515b5 on fixed inputs (a Shepp–Logan slice through the task's sparse geometry; two Gaussian
blobs on the weights' registration grid): sum, absolute sum and seven values of each output.
The ``pdunet_ct_x16`` / ``lpd_ct_x16`` entries were regenerated when those weights were retrained
on many patients (issue 14; ``pdunet_ct_x16`` again after its third, fifth and sixth stages), the
``pdunet_mri_x16`` / ``lpd_mri_x16`` entries when those were retrained on many subjects, and
the ``*_hippocampus`` / ``*_synth`` / ``*_ixi`` entries were made when those weights were first
shipped (issue 15); they pin the new files the same way. ``micdir_hippocampus`` was
regenerated when that file's config moved to full-resolution integration (tensors unchanged:
:func:`test_micdir_hippocampus_tensors_are_the_trained_ones` pins its half-resolution output to
the earlier entry); ``voxelmorph_hippocampus`` when that file was continued 1 500 steps
(2026-12-04).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medvol.learned.weights import load_weights, read_weights_info, shipped_weights  # noqa: E402

REF = json.loads((Path(__file__).parent / "shipped_reference.json").read_text())
SINO = [n for n in REF if n.startswith(("pdunet", "lpd"))]
REG = [n for n in REF if n.startswith(("micdir", "voxelmorph"))]


def _compare(name, out, rtol_sum=1e-6):
    """Equal to the old loaders' outputs; bit-identical on the machine that made the reference
    (float32 summation order may differ elsewhere, hence the 1e-6 relative slack)."""
    ref = REF[name]
    a = np.asarray(out, dtype=np.float64)
    assert list(a.shape) == ref["shape"]
    flat = a.ravel()
    scale = float(np.abs(flat).max())
    np.testing.assert_allclose(flat[ref["idx"]], ref["values"], rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(flat.sum(), ref["sum"], rtol=rtol_sum)
    np.testing.assert_allclose(np.abs(flat).sum(), ref["abs_sum"], rtol=rtol_sum)


def test_reference_covers_the_pdunet_and_registration_files():
    from medvol.learned.weights import shipped_weights_names

    names = shipped_weights_names()
    assert set(REF) <= set(names)
    assert not [n for n in names if n.startswith(("pdunet", "lpd", "micdir", "voxelmorph"))
                and n not in REF]


def _all_shipped():
    from medvol.learned.weights import shipped_weights_names

    return shipped_weights_names()


@pytest.mark.parametrize("name", _all_shipped())
def test_every_shipped_file_loads_through_the_one_loader(name):
    if name.startswith("voxelmorph"):
        pytest.importorskip("monai")
    model, info = load_weights(shipped_weights(name))
    assert not model.training and info.arch and isinstance(info.config, dict)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", SINO)
def test_pdunet_lpd_shipped_outputs_unchanged(name):
    pytest.importorskip("finufft")
    from medvol.recon.pdunet_data import get_task
    from medvol.phantoms import shepp_logan_2d
    from medvol.recon.pdunet import pdunet_reconstruct, task_operator

    info = read_weights_info(shipped_weights(name))
    assert info.arch in ("pdunet", "lpd") and info.task["sparsity"] == 16
    model, info2 = load_weights(shipped_weights(name), arch=info.arch)
    task = get_task(info.task["name"])
    img = shepp_logan_2d(128).astype(np.float32)
    img = img / img.max() * (0.02 if task.modality == "ct" else 1.0)
    op = task_operator(task)
    y = torch.as_tensor(np.asarray(op(img[None]), dtype=np.float32))
    with torch.inference_mode():                 # the call the reference numbers were made with
        out = model(y, op).numpy()
    _compare(name, out)
    # the public wrapper gives the same images (batching may change the last float bits)
    np.testing.assert_allclose(pdunet_reconstruct(op, y.numpy(), weights=name, refine=0), out,
                               rtol=0, atol=1e-6 * float(np.abs(out).max()))


def _blobs(shape=(64, 80, 64)):
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    f = np.exp(-((z / 0.5) ** 2 + (y / 0.6) ** 2 + (x / 0.5) ** 2)).astype(np.float32)
    m = np.exp(-(((z - 0.1) / 0.5) ** 2 + ((y + 0.05) / 0.55) ** 2
                 + ((x - 0.08) / 0.5) ** 2)).astype(np.float32)
    return f, m


@pytest.mark.slow
@pytest.mark.parametrize("name", REG)
def test_registration_shipped_outputs_unchanged(name):
    pytest.importorskip("monai")
    from medvol.registration.learned import run_net

    arch, task = name.split("_", 1)
    model, info = load_weights(shipped_weights(name), arch=arch)
    grid = {"intra": [64, 80, 64], "inter": [64, 80, 64], "hippocampus": [32, 48, 48],
            "ixi": [64, 80, 64], "synth": [48, 64, 48]}[task]
    assert info.task["grid_shape"] == grid
    assert info.task["modality"] == {"hippocampus": "intra", "ixi": "intra",
                                     "synth": "inter"}.get(task, task)
    f, m = _blobs(tuple(grid))
    ddf, _ = run_net(model, f, m)
    # MICDIR's warp and velocity integration compute MONAI's Warp / DVF2DDF arithmetic (since
    # 2026-12-03; bit-identical to those layers since 2026-12-04): float32 rounding
    # moves the sum of the 1 M-voxel field by 1.35e-6 relative (measured); the seven values
    # stay within 1e-6 of the field's maximum
    _compare(name, ddf, rtol_sum=5e-6)


@pytest.mark.slow
def test_micdir_hippocampus_tensors_are_the_trained_ones():
    """Integrated at half resolution, as trained, the file still gives the field it gave before
    its config moved to ``int_resolution = "full"`` (the earlier reference entry)."""
    from medvol.registration.learned import run_net

    model, _ = load_weights(shipped_weights("micdir_hippocampus"), arch="micdir")
    assert model.config.int_resolution == "full"
    model.config.int_resolution = "half"
    ddf, _ = run_net(model, *_blobs((32, 48, 48)))
    a = np.asarray(ddf, np.float64)
    np.testing.assert_allclose([a.sum(), np.abs(a).sum()], [6163.403312324339, 181016.84015812096],
                               rtol=5e-6)
