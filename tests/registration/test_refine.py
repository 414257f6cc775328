"""Instance optimisation (``--refine``) and the demons baseline, against known deformations."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sitk = pytest.importorskip("SimpleITK")
pytest.importorskip("monai")

from medvol import Volume  # noqa: E402

DATA = Path("../shared/data")
STROKE = DATA / "mri" / "stroke" / "T1.nii.gz"


def _known_pair(tmp_path, amp_mm=5.0, seed=3):
    """The stroke T1 (real MRI, 2 mm) as moving; fixed = moving resampled through a known smooth
    field ``u`` (fixed(x) = moving(x + u(x))), so a perfect registration returns ``u``."""
    from scipy.ndimage import gaussian_filter

    from medvol import io as mio
    from medvol.registration.run import warp_volume

    if not STROKE.is_file():
        pytest.skip("stroke MRI not available (../shared/data)")
    src = mio.read(STROKE)
    img = sitk.Shrink(src.to_sitk(), [2, 2, 2])
    mov = Volume.from_sitk(sitk.Cast(img, sitk.sitkFloat32))
    rng = np.random.default_rng(seed)
    u = np.stack([gaussian_filter(rng.standard_normal(mov.shape), 6) for _ in range(3)], -1)
    u = u / np.abs(u).max() * amp_mm
    fixed = warp_volume(mov, u, mov)
    mask = np.asarray(fixed.array) > 0.2 * float(np.asarray(fixed.array).max())
    pf, pm = tmp_path / "fixed.nrrd", tmp_path / "moving.nrrd"
    mio.write(fixed, pf)
    mio.write(mov, pm)
    return pf, pm, u, mask


def _written_field(out: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(out / "displacement.nrrd"))).astype(float)


@pytest.mark.slow
def test_refinement_recovers_known_deformation_better(tmp_path):
    """The field written by ``run_register`` (micdir, shipped intra weights) is closer to the known
    deformation with ``refine=40`` than with ``refine=0``, and refinement keeps it fold-free."""
    from medvol.registration.learned import weights_path
    from medvol.registration.metrics import folding_percent
    from medvol.registration.run import run_register

    if not weights_path("micdir", "intra").is_file():
        pytest.skip("shipped MICDIR weights missing")
    pf, pm, u, mask = _known_pair(tmp_path)
    err = {}
    for n in (0, 40):
        out = run_register(pf, pm, tmp_path / f"r{n}", method="micdir", prealign=False, refine=n)
        got = _written_field(out)
        err[n] = float(np.linalg.norm(got - u, axis=-1)[mask].mean())
        if n:
            assert folding_percent(got, (2.0, 2.0, 2.0)) < 0.5
    base = float(np.linalg.norm(u, axis=-1)[mask].mean())
    assert err[40] < 0.8 * err[0], err
    assert err[40] < 0.6 * base, (err, base)


def test_refine_zero_steps_is_the_net_prediction():
    """``refine_pair(steps=0)`` integrates the net's own velocity exactly as its forward does."""
    from medvol.learned.registry import build_model
    from medvol.registration.refine import refine_pair

    cfg = {"enc_channels": [4, 8, 8], "enc_strides": [1, 2, 2], "dec_channels": 8,
           "head_channels": [4], "nodes": [2, 2, 2]}
    torch.manual_seed(0)
    for name, c in (("micdir", cfg), ("voxelmorph", {"channels": [4, 8, 8, 8]})):
        net, _ = build_model(name, c)
        net.eval()
        x, y = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
        with torch.no_grad():
            ref = net(x, y)["ddf"]
        ddf, _ = refine_pair(net, x, y, steps=0)
        assert torch.allclose(ddf, ref, atol=1e-5), name


@pytest.mark.slow
def test_demons_recovers_known_deformation(tmp_path):
    from medvol import io as mio
    from medvol.registration.demons import register_demons
    from medvol.errors import InputError

    pf, pm, u, mask = _known_pair(tmp_path)
    fixed, moving = mio.read(pf), mio.read(pm)
    got, settings = register_demons(fixed, moving)
    err = float(np.linalg.norm(got - u, axis=-1)[mask].mean())
    assert err < 0.6 * float(np.linalg.norm(u, axis=-1)[mask].mean())
    assert settings["shrink"] == [4, 2, 1]
    with pytest.raises(InputError, match="intramodal"):
        register_demons(fixed, moving, metric="mi")


def test_full_res_steps_split():
    """``--refine N --refine-full K``: K steps at full resolution (default the second half)."""
    from medvol.registration.refine import full_res_steps

    assert full_res_steps(40) == 20 and full_res_steps(5) == 3 and full_res_steps(0) == 0
    assert full_res_steps(10, 0) == 0 and full_res_steps(10, 4) == 4 and full_res_steps(10, 99) == 10


def test_default_refine_per_task_and_caller_values_win():
    """No --refine: the hippocampus task takes its validated budget (1 step, half resolution),
    other tasks DEFAULT_REFINE with half at full resolution; the caller's values always win."""
    from medvol.registration.refine import DEFAULT_REFINE, default_refine

    assert default_refine("hippocampus") == (1, 0)
    assert default_refine("hippocampus", full_steps=1) == (1, 1)
    assert default_refine("hippocampus", 10) == (10, 5)
    assert default_refine(None) == default_refine("intra") == (DEFAULT_REFINE, DEFAULT_REFINE // 2)
    assert default_refine("synth", 0) == (0, 0) and default_refine("inter", 8, 0) == (8, 0)
    assert default_refine("ixi") == (20, 20) and default_refine("ixi", 8) == (8, 4)


def test_task_refine_settings_and_caller_settings_win():
    """--task ixi's own budget (20 full-resolution steps) and --task hippocampus's (1 half-res
    step) run with their Adam step and no IC term;
    any other budget, and other tasks, keep the RefineSettings defaults; settings passed by the
    caller are used unchanged."""
    from medvol.registration.refine import RefineSettings, default_refine_settings

    for budget in [(None, None), (20, 20)]:
        s = default_refine_settings("ixi", *budget)
        assert (s.lr, s.w_ic) == (0.3, 0.0) and s.w_smooth == RefineSettings().w_smooth
    # --refine 20 alone is 10 half + 10 full steps: not the task's budget
    assert default_refine_settings("ixi", 20) == default_refine_settings("ixi", 40) == RefineSettings()
    assert default_refine_settings("ixi", 8, 8) == RefineSettings()    # the earlier default
    h = default_refine_settings("hippocampus")
    assert (h.lr, h.w_ic) == (0.01, 0.0) and default_refine_settings("hippocampus", 1, 0) == h
    assert default_refine_settings("hippocampus", 2, 0) == default_refine_settings(None) == RefineSettings()
    mine = RefineSettings(lr=0.05)
    assert default_refine_settings("ixi", settings=mine) is mine


def test_register_volumes_uses_and_records_the_task_default_refine():
    """``register_volumes`` without refine arguments runs the hippocampus task's validated budget
    and says so in its info (what the manifest records); an explicit ``refine=0`` wins."""
    pytest.importorskip("torch")
    from medvol import Volume
    from medvol.registration.run import register_volumes

    z, y, x = np.meshgrid(*[np.linspace(-1, 1, 24)] * 3, indexing="ij")
    f = Volume(np.exp(-(z ** 2 + y ** 2 + x ** 2) / 0.2).astype(np.float32), spacing=(1.5,) * 3)
    m = Volume(np.exp(-(z ** 2 + y ** 2 + (x - 0.1) ** 2) / 0.2).astype(np.float32),
               spacing=(1.5,) * 3)
    r = register_volumes(f, m, method="micdir", task="hippocampus", prealign=False)
    assert (r.info["refine_steps"], r.info["refine_full_res_steps"]) == (1, 0)
    assert r.info["refine_settings"]["lr"] == 0.01 and r.info["refine_settings"]["w_ic"] == 0.0
    r0 = register_volumes(f, m, method="micdir", task="hippocampus", prealign=False, refine=0)
    assert (r0.info["refine_steps"], r0.info["refine_full_res_steps"]) == (0, 0)
    assert r0.info["refine_settings"] is None
    ri = register_volumes(f, m, method="micdir", task="ixi", prealign=False)
    assert (ri.info["refine_steps"], ri.info["refine_full_res_steps"]) == (20, 20)
    assert ri.info["refine_settings"]["lr"] == 0.3 and ri.info["refine_settings"]["w_ic"] == 0.0


@pytest.mark.parametrize("similarity", ["lncc", "mind"])
def test_half_resolution_budget_moves_towards_known_shift(similarity):
    """``full_steps=0`` (all steps at half resolution, the fast budget) still recovers a known
    smooth displacement: a blob moved by 2 voxels along x; the refined field's x component at
    the blob is much closer to the truth than the untrained net's prediction. With MIND the
    moving blob also has the inverted contrast (an intermodal pair)."""
    from medvol.learned.registry import build_model
    from medvol.registration.refine import refine_pair

    cfg = {"enc_channels": [4, 8, 8], "enc_strides": [1, 2, 2], "dec_channels": 8,
           "head_channels": [4], "nodes": [2, 2, 2]}
    torch.manual_seed(0)
    net, _ = build_model("micdir", cfg)
    z, y, x = torch.meshgrid(*[torch.arange(32.0)] * 3, indexing="ij")
    blob = lambda cx: torch.exp(-((z - 16) ** 2 + (y - 16) ** 2 + (x - cx) ** 2) / (2 * 4.0 ** 2))  # noqa: E731
    fixed, moving = blob(15.0)[None, None], blob(17.0)[None, None]   # fixed(p) = moving(p + 2 x̂)
    if similarity == "mind":
        moving = 1.0 - moving
    core = blob(15.0) > 0.5
    err = {}
    for n in (0, 30):
        ddf, warped = refine_pair(net, fixed, moving, steps=n, full_steps=0, similarity=similarity)
        err[n] = float((ddf[0, 2][core] - 2.0).abs().mean())
    assert err[30] < 0.5 * err[0] and err[30] < 0.8, err


def test_mind_ssc_known_answers():
    """MIND-SSC: 12 channels in (0, 1]; the 12 offset pairs are the orthogonal pairs of the
    six-neighbourhood; invariant to an intensity inversion and to a ·I + b (a > 0) — the
    property that makes it a multimodal similarity; a shifted image's descriptor is the shifted
    descriptor (away from the border)."""
    from medvol.registration.refine import _SSC_PAIRS, mind_ssc

    assert len(_SSC_PAIRS) == 12 and len(set(_SSC_PAIRS)) == 12
    assert all(sum(p * q for p, q in zip(a, b)) == 0 and sum(abs(v) for v in a + b) == 2
               for a, b in _SSC_PAIRS)
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.avg_pool3d(torch.rand(1, 1, 28, 28, 28, generator=g), 3, 1, 1)
    d = mind_ssc(img)
    assert d.shape == (1, 12, 28, 28, 28) and float(d.min()) > 0 and float(d.max()) <= 1.0
    torch.testing.assert_close(mind_ssc(1.0 - img), d, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mind_ssc(3.0 * img + 0.7), d, atol=1e-4, rtol=1e-4)
    shifted = mind_ssc(torch.roll(img, 3, dims=4))
    inner = (slice(None), slice(None), slice(5, -5), slice(5, -5), slice(8, -5))
    torch.testing.assert_close(shifted[inner], torch.roll(d, 3, dims=4)[inner], atol=1e-4,
                               rtol=1e-4)
    assert float(((mind_ssc(torch.roll(img, 2, dims=4)) - d) ** 2).mean()) > 1e-3


def test_inference_grid_covers_the_fixed_image_within_the_model_fov():
    """``grid_mm``: an isotropic grid over the fixed image's extent, capped at the model grid's
    field of view, sizes rounded up to the net's divisor; too fine a spacing is refused; the
    task defaults (synth: 2 mm) and the caller's 0 (= the model grid)."""
    from types import SimpleNamespace

    from medvol.errors import InputError
    from medvol.registration.learned import inference_grid
    from medvol.registration.refine import default_grid_mm

    meta = SimpleNamespace(task={"grid_shape": [48, 64, 48], "grid_spacing_mm": 3.2})
    net = SimpleNamespace(divisor=16)
    small = Volume(np.ones((62, 80, 70), np.float32), spacing=(2.0, 2.0, 2.0))
    g = inference_grid(small, net, meta, 2.0)
    assert g.shape == (64, 80, 80) and np.allclose(g.spacing, 2.0)
    big = Volume(np.ones((200, 200, 200), np.float32), spacing=(1.0, 1.0, 1.0))
    assert inference_grid(big, net, meta, 2.0).shape == (80, 112, 80)   # FOV 153.6/204.8/153.6 mm
    g0 = inference_grid(small, net, meta, None)
    assert g0.shape == (48, 64, 48) and np.allclose(g0.spacing, 3.2)
    with pytest.raises(InputError, match="finer than half"):
        inference_grid(small, net, meta, 1.5)
    assert default_grid_mm("synth") == 2.0 and default_grid_mm("synth", 0) is None
    assert default_grid_mm(None) is None and default_grid_mm("hippocampus", 2.5) == 2.5


def test_demons_task_settings_reach_the_run_and_manifest(tmp_path, monkeypatch):
    """``--method demons --task ixi`` runs the IXI-tuned settings (DEMONS_TASK) and records them
    in manifest.json; no task or another task keeps the general default."""
    import json

    from medvol import io as mio
    from medvol.registration import demons as D
    from medvol.registration.run import run_register

    seen = []

    def spy(fixed, moving, *, metric="ncc", seed=0, settings=None, initial=None):
        seen.append(settings)
        return np.zeros(fixed.shape + (3,)), {"method": "spy", **settings.to_dict()}

    monkeypatch.setattr(D, "register_demons", spy)
    a = np.random.default_rng(0).random((12, 14, 16)).astype(np.float32)
    vol = Volume(a, spacing=(2.0, 2.0, 2.0))
    pf = tmp_path / "f.nrrd"
    mio.write(vol, pf)
    for task, out in (("ixi", "o1"), (None, "o2"), ("hippocampus", "o3")):
        run_register(pf, pf, tmp_path / out, method="demons", task=task)
    assert seen[0] == D.DemonsSettings(**D.DEMONS_TASK["ixi"])
    assert seen[1] == seen[2] == D.DemonsSettings() and seen[1].field_sigma == 0.75
    man = json.loads((tmp_path / "o1" / "manifest.json").read_text())
    assert man["parameters"]["demons_settings"]["iterations"] == list(D.DEMONS_TASK["ixi"]["iterations"])


def test_hippo_box_ddf_runs_the_task_settings_only_for_the_task_budget(monkeypatch):
    """The benchmark's hippocampus rows go through hippo_box_ddf: its task budget (1 half-res
    step) runs with the task's Adam step and no IC term, like `medvol register --task
    hippocampus`; other budgets, and explicit settings, are passed on unchanged."""
    import medvol.registration.refine as refine
    from medvol.registration.datasets import hippo_box_ddf
    from medvol.registration.refine import RefineSettings

    seen = []

    def fake(model, fixed, moving, *, steps, similarity, full_steps, settings):
        seen.append((steps, full_steps, settings))
        return torch.zeros(1, 3, *fixed.shape[2:]), None

    torch = pytest.importorskip("torch")
    monkeypatch.setattr(refine, "refine_pair", fake)
    a = np.zeros((64, 64, 64), np.float32)
    hippo_box_ddf(None, a, a, steps=1, full_steps=0)
    hippo_box_ddf(None, a, a, steps=2, full_steps=0)
    mine = RefineSettings(lr=0.5)
    hippo_box_ddf(None, a, a, steps=1, full_steps=0, settings=mine)
    assert (seen[0][2].lr, seen[0][2].w_ic) == (0.01, 0.0)
    assert seen[1][2] == RefineSettings() and seen[2][2] is mine


def test_refinement_adam_is_torch_adam_bit_for_bit():
    """The refinement's one-tensor Adam (hand-written so that a single registration does not
    import torch._dynamo) takes exactly torch.optim.Adam's steps."""
    torch = pytest.importorskip("torch")
    from medvol.registration.refine import _Adam

    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 3, 5, 6, 7, generator=g)
    start = torch.randn(2, 3, 5, 6, 7, generator=g)
    paths = []
    for make in (lambda p: torch.optim.Adam([p], lr=0.07), lambda p: _Adam(p, lr=0.07)):
        p = start.clone().requires_grad_(True)
        opt = make(p)
        for _ in range(6):
            opt.zero_grad()
            ((p - target) ** 4).sum().backward()
            opt.step()
        paths.append(p.detach())
    assert torch.equal(paths[0], paths[1]) and not torch.equal(paths[1], start)


def test_lncc_loss_is_monais_bit_for_bit_with_gradients():
    """lncc_loss (written out so that MICDIR's refinement needs no MONAI import) equals MONAI's
    LocalNormalizedCrossCorrelationLoss, values and gradients, for kernels 3 and 5, two
    channels and a batch of two; identical images give -1 where the window has contrast."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    from monai.losses import LocalNormalizedCrossCorrelationLoss

    from medvol.registration.refine import lncc_loss

    g = torch.Generator().manual_seed(0)
    t = torch.rand(2, 2, 9, 10, 11, generator=g)
    for k in (3, 5):
        out = []
        for fn in (LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=k),
                   lambda a, b: lncc_loss(a, b, k)):
            p = torch.rand(2, 2, 9, 10, 11, generator=torch.Generator().manual_seed(k))
            p.requires_grad_(True)
            loss = fn(p, t)
            loss.backward()
            out.append((loss.detach(), p.grad))
        assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    img = torch.rand(1, 1, 12, 12, 12, generator=g)
    assert abs(float(lncc_loss(img, img)) + 1.0) < 1e-3
