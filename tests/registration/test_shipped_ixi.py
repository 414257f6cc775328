"""Known answers of the IXI-trained registration weights on held-out subjects (guards retrains).

``micdir_ixi`` / ``voxelmorph_ixi`` register the first two ordered pairs of the three IXI test
subjects (never in training, ``medvol/registration/splits.json``) through the public path
``register_learned(..., prealign=True, task="ixi", refine=0)``: SimpleITK affine pre-alignment,
then the net on its 64×80×64 grid at 2.5 mm. The moving parcellation is warped with the field
(nearest neighbour) and scored against the fixed subject's own parcellation (the independent
truth, DLMUSE labels with ≥ 20 voxels). The Dice is pinned to the values measured for the
shipped files and must beat the affine pre-alignment alone by a margin.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

DATA = Path("../shared/data")
# mean Dice of pairs 0 and 1 (net only; measured with the shipped 500-step files, 1 torch thread,
# 2026-12-03); the issue-5 ``*_intra`` weights score about 0.06 lower here, so a swap fails
PINNED = {"micdir": [0.5745, 0.5580], "voxelmorph": [0.5750, 0.5561]}
AFFINE = [0.5068, 0.4445]


def _labels(lab) -> list[int]:
    v, c = np.unique(np.asarray(lab), return_counts=True)
    return [int(k) for k, n in zip(v, c) if k > 0 and n >= 20]


@pytest.fixture(scope="module")
def ixi_pairs():
    from medvol.registration.datasets import ixi_test_pairs, load_ixi

    if not (DATA / "mri" / "ixi10").is_dir():
        pytest.skip("IXI data not available (../shared/data)")
    subs = load_ixi(DATA, "test")
    return [(subs[a], subs[b]) for a, b in ixi_test_pairs(subs)[:2]]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["micdir", "voxelmorph"])
def test_ixi_weights_known_dice_on_held_out_subjects(method, ixi_pairs):
    from medvol.registration.classical import affine_transform, transform_to_field
    from medvol.registration.learned import load_model, register_learned
    from medvol.registration.metrics import mean_dice
    from medvol.registration.run import warp_volume

    torch.set_num_threads(1)
    model, info = load_model(method, "ixi")
    assert info.task["grid_shape"] == [64, 80, 64] and info.task["modality"] == "intra"
    got, aff_only = [], []
    for (f, fl), (m, ml) in ixi_pairs:
        labels = _labels(fl.array)
        r = register_learned(f, m, method=method, model=model, meta=info, prealign=True,
                             refine=0)
        mlf = ml.with_array(np.asarray(ml.array, np.float32))
        got.append(mean_dice(warp_volume(mlf, r.disp_mm, f, interp="nearest").array, fl.array,
                             labels=labels))
        u_aff = transform_to_field(affine_transform(f, m, metric="ncc", seed=0), f)
        aff_only.append(mean_dice(warp_volume(mlf, u_aff, f, interp="nearest").array, fl.array,
                                  labels=labels))
    np.testing.assert_allclose(aff_only, AFFINE, atol=5e-3)
    np.testing.assert_allclose(got, PINNED[method], atol=5e-3)
    assert np.mean(got) > np.mean(aff_only) + 0.05


# the same two pairs through ``--task ixi``'s default refinement (20 full-resolution Adam steps,
# lr 0.3, no IC term; TASK_REFINE / TASK_SETTINGS), measured 2026-12-04 with the shipped
# micdir_ixi file, 1 torch thread (deterministic: two runs identical to 4 decimals; the earlier
# 8-step default gave 0.6705 / 0.6606)
PINNED_REFINED = [0.6845, 0.6675]


@pytest.mark.slow
def test_ixi_default_refinement_known_dice_on_held_out_subjects(ixi_pairs):
    """``register_learned(task="ixi")`` with the task's own budget runs its settings and lifts
    the net's Dice on held-out subjects to the pinned values (≈ +0.10 over the net alone)."""
    from medvol.registration.learned import load_model, register_learned
    from medvol.registration.metrics import mean_dice
    from medvol.registration.refine import default_refine
    from medvol.registration.run import warp_volume

    torch.set_num_threads(1)
    model, info = load_model("micdir", "ixi")
    steps, full = default_refine("ixi")
    got = []
    for (f, fl), (m, ml) in ixi_pairs:
        r = register_learned(f, m, method="micdir", model=model, meta=info, prealign=True,
                             task="ixi", refine=steps, refine_full=full)
        assert (r.refine_settings["lr"], r.refine_settings["w_ic"]) == (0.3, 0.0)
        mlf = ml.with_array(np.asarray(ml.array, np.float32))
        got.append(mean_dice(warp_volume(mlf, r.disp_mm, f, interp="nearest").array, fl.array,
                             labels=_labels(fl.array)))
    np.testing.assert_allclose(got, PINNED_REFINED, atol=5e-3)
    assert np.mean(got) > np.mean(PINNED["micdir"]) + 0.05
