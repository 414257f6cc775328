"""The issue-15 training step (medvol.registration.train_tasks): learning-rate schedule and loss.

The schedule is computed from the absolute step inside the step function, so a run resumed from
a checkpoint follows exactly the schedule a single uninterrupted run would have.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medvol.errors import InputError  # noqa: E402
from medvol.registration import train_tasks as T  # noqa: E402


class _Pairs:
    """Two 16³ blobs shifted by two voxels, with their labels (1 inside, 0 outside)."""

    def __init__(self):
        self.gen = torch.Generator().manual_seed(0)
        z, y, x = np.mgrid[:16, :16, :16]
        a = (((z - 8) ** 2 + (y - 8) ** 2 + (x - 7) ** 2) < 20).astype(np.float32)
        b = np.roll(a, 2, axis=2)
        t = lambda v: torch.from_numpy(v)[None, None]  # noqa: E731
        self.out = (t(a), t(b), t(a.astype(np.int64)), t(b.astype(np.int64)))

    def sample(self, b=1):
        return self.out


def _run(cfg):
    from medvol.learned.registry import build_model

    net, _ = build_model("voxelmorph")
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    return T._Run("voxelmorph", net, opt, _Pairs(), cfg, None, 0, 2)


def test_lr_drop_follows_the_absolute_step():
    cfg = {**T.TASKS["hippocampus"], "lr": 1e-3, "lr_drop": 5, "lr_drop_factor": 0.2}
    r = _run(cfg)
    rng = np.random.default_rng(0)
    lrs = []
    for step in (0, 4, 5, 9, 3):  # a resumed run may start at any step: no hidden counter
        parts = r.step_fn(step, rng)
        assert np.isfinite(float(parts["loss"].detach()))
        assert 0 <= parts["dice_loss"] <= 1
        lrs.append(r.opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1e-3, 1e-3, 2e-4, 2e-4, 1e-3])


def test_without_lr_drop_the_rate_is_constant():
    r = _run({**T.TASKS["hippocampus"], "lr": 5e-4})
    rng = np.random.default_rng(0)
    for step in (0, 10_000):
        r.step_fn(step, rng)
        assert r.opt.param_groups[0]["lr"] == 5e-4


@pytest.mark.parametrize("drop,factor", [(-1, 0.2), (10, 0.0), (10, 1.5)])
def test_bad_lr_drop_is_one_clear_error(drop, factor, tmp_path):
    with pytest.raises(InputError, match="lr_drop"):
        T.train_task("hippocampus", data=tmp_path, steps=1, runs=tmp_path, lr_drop=drop,
                     lr_drop_factor=factor, progress=False)


def test_ixi_pairs_draw_labels_renumbered_and_flip_images_with_labels():
    """IXIPairs: K labels present in the fixed map are renumbered 1..K (others 0), the same ids in
    fixed and moving; a left-right flip moves images and labels together."""
    from medvol.registration.datasets import IXIPairs

    rng = np.random.default_rng(0)
    lab = rng.integers(0, 60, (1, 4, 5, 6)).astype(np.int16)     # 59 foreground ids + background
    img = (lab.astype(np.float32) / 60.0)                          # image = a function of its label
    pairs = {"fixed": img, "moving": img.copy(), "fixed_labels": lab, "moving_labels": lab.copy()}
    s = IXIPairs(pairs, seed=3, n_labels=8, p_flip=0.5)
    flips = 0
    for _ in range(20):
        f, m, lf, lm = s.sample(1)
        assert f.shape == (1, 1, 4, 5, 6) and lf.dtype == torch.int64
        assert sorted(torch.unique(lf).tolist()) == list(range(9))   # background + 1..8
        assert torch.equal(lf, lm)                                    # same renumbering
        # every kept label still sits where the image says it is (flip applied to both)
        orig = torch.from_numpy(lab[0].astype(np.int64))
        flipped = not torch.equal(f[0, 0], torch.from_numpy(img[0]))
        flips += flipped
        ref = orig.flip(-1) if flipped else orig
        for k in range(1, 9):
            ids = torch.unique(ref[lf[0, 0] == k])
            assert ids.numel() == 1 and ids.item() > 0
    assert 0 < flips < 20


def test_ixi_task_metadata_is_the_intramodal_grid():
    meta = T.task_meta("ixi")
    assert meta["grid_shape"] == [64, 80, 64] and meta["grid_spacing_mm"] == 2.5
    assert meta["dataset"] == "ixi10" and meta["modality"] == "intra"


def test_micdir_trains_at_half_resolution_and_exports_the_task_integration(tmp_path, monkeypatch):
    """Warm-started from the shipped hippocampus file (exported with ``"full"``), MICDIR trains
    with the released half-resolution integration; the export writes the task's validated
    choice (``EXPORT_INT_RESOLUTION``) or the caller's."""
    from medvol.learned.weights import read_weights_info

    seen = []

    class Pairs(_Pairs):
        def __init__(self):
            super().__init__()
            z = torch.zeros(1, 1, 32, 48, 48)
            self.out = (z + 0.5, z + 0.25, z.long(), z.long())

    monkeypatch.setattr(T, "_sampler", lambda *a, **k: (Pairs(), 2))
    orig = T._Run.step_fn

    def spy(self, *a, **k):
        seen.append(getattr(self.model.config, "int_resolution", None))
        return orig(self, *a, **k)

    monkeypatch.setattr(T._Run, "step_fn", spy)
    for arg, want in ((None, "full"), ("half", "half")):
        out = tmp_path / str(arg)
        T.train_task("hippocampus", steps=1, runs=tmp_path / f"runs{arg}", models=["micdir"],
                     init="hippocampus", export=out, ckpt_every=1, progress=False,
                     int_resolution=arg)
        info = read_weights_info(out / "micdir_hippocampus.safetensors")
        assert info.config["int_resolution"] == want
        assert "train_int_resolution" not in info.extra["train"]
    assert seen and set(seen) == {"half"}
    # train_int_resolution="full": trains on the full-resolution field and records it
    seen.clear()
    out = tmp_path / "trainfull"
    T.train_task("hippocampus", steps=1, runs=tmp_path / "runsfull", models=["micdir"],
                 init="hippocampus", export=out, ckpt_every=1, progress=False,
                 train_int_resolution="full")
    info = read_weights_info(out / "micdir_hippocampus.safetensors")
    assert seen == ["full"] and info.extra["train"]["train_int_resolution"] == "full"
    # ... for MICDIR only: VoxelMorph's run (same call) keeps the config it always had
    out = tmp_path / "trainfull_vm"
    T.train_task("hippocampus", steps=1, runs=tmp_path / "runsfull_vm", models=["voxelmorph"],
                 init="hippocampus", export=out, ckpt_every=1, progress=False,
                 train_int_resolution="full")
    info = read_weights_info(out / "voxelmorph_hippocampus.safetensors")
    assert "train_int_resolution" not in info.extra["train"]
    with pytest.raises(InputError):
        T.train_task("hippocampus", steps=1, runs=tmp_path / "bad", models=["micdir"],
                     train_int_resolution="quarter")
