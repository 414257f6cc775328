"""VoCo (v1 recipe): base grid, overlap labels, losses at their limits, EMA, MONAI round trips, CLI.

Labels are checked against an independent rasterisation (count the voxels of the crop mask that
fall in each base mask), the losses against their closed-form values.
"""
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from medvol.cli import main  # noqa: E402
from medvol.errors import InputError  # noqa: E402
from medvol.pretrain.voco import (VoCoPair, VoCoSettings, assign_logits, base_boxes,  # noqa: E402
                                  check_shape, crop_views, ema_update, encoder_state_dict,
                                  overlap_labels, voco_losses, voco_step)

TINY = {"features": [4, 4, 8, 8, 16, 4], "proj_hidden": 16, "proj_out": 8}


def _raster_labels(y0, x0, h, w, region, n):
    """Independent truth: pixel masks of the crop and of each base, counted."""
    crop = np.zeros(region, bool)
    crop[y0:y0 + h, x0:x0 + w] = True
    ch, cw = region[0] // n, region[1] // n
    out = []
    for i in range(n):
        for j in range(n):
            base = np.zeros(region, bool)
            base[i * ch:(i + 1) * ch, j * cw:(j + 1) * cw] = True
            out.append((crop & base).sum() / crop.sum())
    return np.array(out)


@pytest.mark.parametrize("region,n", [((48, 32), 2), ((48, 48), 3), ((64, 64), 4)])
def test_bases_tile_without_overlap(region, n):
    count = np.zeros(region, int)
    for y0, y1, x0, x1 in base_boxes(region, n):
        count[y0:y1, x0:x1] += 1
    assert len(base_boxes(region, n)) == n * n
    assert np.all(count == 1)          # covers every voxel exactly once
    with pytest.raises(ValueError):
        base_boxes((50, 32), 3)


@pytest.mark.parametrize("region,n", [((48, 32), 2), ((48, 48), 3)])
def test_crop_aligned_with_base_is_one_hot(region, n):
    ch, cw = region[0] // n, region[1] // n
    for k, (y0, _, x0, _) in enumerate(base_boxes(region, n)):
        lab = overlap_labels((y0, x0), (ch, cw), region, n)
        np.testing.assert_allclose(lab, np.eye(n * n)[k])


def test_crop_centred_on_corner_of_four_bases():
    region, n = (48, 32), 2
    ch, cw = 24, 16
    lab = overlap_labels((24 - ch / 2, 16 - cw / 2), (ch, cw), region, n)
    np.testing.assert_allclose(lab, [0.25] * 4)
    # 3×3 grid: the corner shared by bases 4, 5, 7, 8
    region, n = (48, 48), 3
    lab = overlap_labels((32 - 8, 32 - 8), (16, 16), region, n)
    want = np.zeros(9)
    want[[4, 5, 7, 8]] = 0.25
    np.testing.assert_allclose(lab, want)


def test_labels_sum_to_one_and_match_rasterisation():
    rng = np.random.default_rng(3)
    region, n = (48, 32), 2
    for _ in range(50):
        y0, x0 = int(rng.integers(0, 25)), int(rng.integers(0, 17))
        lab = overlap_labels((y0, x0), (24, 16), region, n)
        assert lab.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(lab, _raster_labels(y0, x0, 24, 16, region, n))
    with pytest.raises(ValueError):
        overlap_labels((30, 0), (24, 16), region, n)   # leaves the grid


def test_crop_views_shapes_and_labels_sum_to_one():
    s = VoCoSettings(region=(16, 32, 32), grid=2, n_crops=5)
    vol = torch.rand(1, 16, 32, 32)
    crops, bases, labels = crop_views(vol, np.random.default_rng(0), s, augment=False)
    assert crops.shape == (5, 1, 16, 16, 16) and bases.shape == (4, 1, 16, 16, 16)
    torch.testing.assert_close(labels.sum(1), torch.ones(5))
    torch.testing.assert_close(bases[3], vol[:, :, 16:, 16:])   # k = i·n + j, i along y


def _emb(*rows):
    return torch.tensor(rows, dtype=torch.float32)[None]


def test_logits_are_relu_cosine():
    c = _emb([1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0])
    b = _emb([2.0, 0, 0], [0, 0, 3.0])
    lg = assign_logits(c, b)[0]
    torch.testing.assert_close(lg, torch.tensor([[1.0, 0], [0, 0], [0, 0]]))


def test_losses_at_their_limits():
    labels = torch.tensor([[[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25], [0.5, 0, 0.5, 0]]])
    orth_bases = torch.eye(4)[None]                      # pairwise orthogonal
    same_bases = torch.ones(1, 4, 4)                     # identical
    # logits equal to the labels: pos = -log(1 + 1e-6) ≈ 0, neg = 0
    out = voco_losses(labels.clone(), labels, orth_bases)
    assert abs(float(out["pos"])) < 1e-5 and float(out["neg"]) == 0.0
    assert float(out["reg"]) == 0.0                      # orthogonal bases
    assert float(voco_losses(labels, labels, same_bases)["reg"]) == pytest.approx(1.0)
    # orthogonal crop/base embeddings: logits 0 → pos = -Σ y log(1 - y + 1e-6), neg = 0
    zero = torch.zeros_like(labels)
    out = voco_losses(zero, labels, orth_bases)
    want = np.mean([-math.log(1e-6), -math.log(0.75 + 1e-6), -math.log(0.5 + 1e-6)])
    assert float(out["pos"]) == pytest.approx(want, rel=1e-5)
    assert float(out["neg"]) == 0.0
    # identical embeddings everywhere: logits 1 → neg = 1 on the non-overlapped bases
    ones = torch.ones_like(labels)
    out = voco_losses(ones, labels, same_bases)
    assert float(out["neg"]) == pytest.approx(1.0)
    assert float(out["loss"]) == pytest.approx(float(out["pos"] + out["neg"] + out["reg"]))


def test_ema_update_and_teacher_gets_no_gradient():
    from medvol.learned import build_model

    student, _ = build_model("voco_cnn", TINY)
    pair = VoCoPair(student)
    with torch.no_grad():
        for p in pair.student.parameters():
            p.add_(1.0)
    t0 = [p.clone() for p in pair.teacher.parameters()]
    s0 = [p.clone() for p in pair.student.parameters()]
    ema_update(pair.teacher, pair.student, 0.9)
    for t, a, b in zip(pair.teacher.parameters(), t0, s0):
        torch.testing.assert_close(t, 0.9 * a + 0.1 * b)
    s = VoCoSettings(region=(32, 32, 32), grid=2)
    vols = [crop_views(torch.rand(1, 32, 32, 32), np.random.default_rng(i), s) for i in range(2)]
    c, b, y = (torch.stack(v) for v in zip(*vols))
    out = voco_step(pair, c, b, y)
    out["loss"].backward()
    assert all(p.grad is None for p in pair.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pair.student.parameters())


def test_cnn_encoder_round_trips_into_monai_basicunet(tmp_path):
    from monai.networks.nets import BasicUNet

    from medvol.learned import build_model, load_weights, save_weights
    from medvol.models.voco import CNN_ENCODER_KEYS

    torch.manual_seed(0)
    m, cfg = build_model("voco_cnn", TINY)
    p = save_weights(tmp_path / "v.safetensors", m, arch="voco_cnn", config=cfg)
    sd = encoder_state_dict(p)
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=3, features=tuple(TINY["features"]))
    enc = torch.nn.ModuleDict({k: getattr(net, k) for k in CNN_ENCODER_KEYS})
    enc.load_state_dict(sd, strict=True)                   # every encoder tensor, nothing else
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.split(".")[0] not in CNN_ENCODER_KEYS for k in missing)
    for k, v in m.encoder.state_dict().items():
        torch.testing.assert_close(net.state_dict()[k], v)
    m2, info = load_weights(p, arch="voco_cnn")
    assert info.arch == "voco_cnn"
    x = torch.rand(3, 1, 32, 16, 16)
    m.eval(); m2.eval()
    torch.testing.assert_close(m(x), m2(x))


def test_swin_encoder_round_trips_into_monai_swinunetr(tmp_path):
    pytest.importorskip("einops")
    from monai.networks.nets import SwinUNETR

    from medvol.learned import build_model, save_weights
    from medvol.models.voco import SWIN_ENCODER_KEYS

    cfg = {"feature_size": 12, "window_size": 4, "depths": [1, 1, 1, 1],
           "num_heads": [1, 1, 1, 1], "proj_hidden": 16, "proj_out": 8}
    m, c = build_model("voco_swin", cfg)
    assert m.embed(torch.rand(2, 1, 64, 32, 32)).shape == (2, 24 * 12)
    p = save_weights(tmp_path / "s.safetensors", m, arch="voco_swin", config=c)
    net = SwinUNETR(in_channels=1, out_channels=3, feature_size=12, window_size=4,
                    depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), use_v2=True)
    enc = torch.nn.ModuleDict({k: getattr(net, k) for k in SWIN_ENCODER_KEYS})
    enc.load_state_dict(encoder_state_dict(p), strict=True)


def test_swin_refuses_sizes_not_divisible_by_32():
    with pytest.raises(InputError, match="divisible by 32"):
        check_shape("voco_swin", VoCoSettings(region=(32, 48, 32), grid=2))
    check_shape("voco_swin", VoCoSettings(region=(64, 64, 64), grid=2))
    with pytest.raises(InputError, match="too small"):
        check_shape("voco_cnn", VoCoSettings(region=(16, 32, 32), grid=2))
    with pytest.raises(InputError):
        VoCoSettings(region=(32, 48, 32), grid=3).validate()    # 32 not divisible by 3


def test_config_bounds_refused_before_allocation():
    from medvol.learned import build_model

    with pytest.raises(InputError):
        build_model("voco_cnn", {"features": [4, 4, 8, 8, 100000, 4]})
    with pytest.raises(InputError):
        build_model("voco_swin", {"feature_size": 50})


def _fake_root(tmp_path, names):
    nib = pytest.importorskip("nibabel")
    d = tmp_path / "data" / "mri" / "hippocampus" / "images"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in names:
        a = rng.random((30, 40, 28)).astype(np.float32) + 0.5
        nib.save(nib.Nifti1Image(a, np.eye(4)), str(d / f"{n}.nii.gz"))
    return tmp_path / "data"


def test_pretrain_resumes_and_leaves_out_test_subjects(tmp_path):
    from medvol.pretrain.data import splits
    from medvol.pretrain.voco import pretrain_voco

    sp = splits()["hippocampus"]
    assert not set(sp["test"]) & set(sp["pretrain"]) and len(sp["test"]) >= 40
    assert set(sp["finetune_5"]) <= set(sp["finetune_20"]) and not set(sp["finetune_20"]) & set(sp["test"])
    root = _fake_root(tmp_path, sp["pretrain"][:3] + sp["test"][:2])
    kw = dict(sources=["hippocampus"], model_config=TINY, settings={"region": [32, 32, 32]},
              run_dir=tmp_path / "run", progress=False)
    r1 = pretrain_voco(root, steps=2, **kw)
    assert r1["volumes"] == 3 and r1["steps"] == 2
    r2 = pretrain_voco(root, steps=4, **kw)
    assert r2["steps"] == 4
    hist = json.loads((tmp_path / "run" / "checkpoint.json").read_text())["history"]
    assert [h["step"] for h in hist] == [1, 2, 3, 4]


def _cli(argv, capsys):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def test_cli_refuses_bad_input_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MEDVOL_DATA", raising=False)
    out = str(tmp_path / "w.safetensors")
    rc, err = _cli(["pretrain", "voco", "-o", out], capsys)
    assert rc == 2 and len(err) == 1 and "MEDVOL_DATA" in err[0]
    rc, err = _cli(["pretrain", "voco", "--data", str(tmp_path / "nope"), "-o", out], capsys)
    assert rc == 2 and len(err) == 1 and "--data" in err[0]
    rc, err = _cli(["pretrain", "voco", "--data", str(tmp_path), "--grid", "3", "-o", out], capsys)
    assert rc == 2 and len(err) == 1 and "grid" in err[0]
    rc, err = _cli(["pretrain", "voco", "--data", str(tmp_path), "--region", "a,b", "-o", out],
                   capsys)
    assert rc == 2 and len(err) == 1 and "--region" in err[0]
    rc, err = _cli(["pretrain", "voco", "--data", str(tmp_path), "--arch", "voco_swin", "-o", out],
                   capsys)
    assert rc == 2 and len(err) == 1 and "32" in err[0]
    rc, err = _cli(["pretrain", "voco", "--data", str(tmp_path), "--sources", "mars", "-o", out],
                   capsys)
    assert rc == 2 and len(err) == 1 and "mars" in err[0]
    (tmp_path / "w.safetensors").write_bytes(b"x")
    rc, err = _cli(["pretrain", "voco", "--data", str(tmp_path), "-o", out], capsys)
    assert rc == 5 and len(err) == 1 and "--overwrite" in err[0]


def test_shipped_voco_weights_predict_overlap_on_held_out_volumes(shared_data):
    """The shipped student predicts the crop/base overlap of the 50 never-seen test subjects
    better than the uniform guess (labels by rasterisation-checked geometry, no stored numbers)."""
    from medvol.learned import load_weights, shipped_weights
    from medvol.models.voco import CNN_ENCODER_KEYS, basic_unet
    from medvol.pretrain.data import heldout_images
    from medvol.pretrain.voco import pretext_error

    p = shipped_weights("voco_hippocampus")
    model, info = load_weights(p, arch="voco_cnn")
    s = VoCoSettings(**{k: tuple(v) if isinstance(v, list) else v
                        for k, v in info.extra["settings"].items()})
    held = heldout_images(shared_data, s.region)
    assert len(held) == 50
    r = pretext_error(model, held, s, seed=1)
    assert r["pretext_mae"] < 0.75 * r["uniform_mae"]
    net = basic_unet(info.config["features"])
    enc = torch.nn.ModuleDict({k: getattr(net, k) for k in CNN_ENCODER_KEYS})
    enc.load_state_dict(encoder_state_dict(p), strict=True)


def test_one_crop_per_step_refused_before_training():
    """The projector's batch norm needs two embeddings: batch × n_crops = 1 is refused by
    validate (MONAI/torch would otherwise fail inside the first step)."""
    with pytest.raises(InputError, match="at least 2"):
        VoCoSettings(region=(32, 48, 32), n_crops=1, batch=1).validate()
    VoCoSettings(region=(32, 48, 32), n_crops=1, batch=2).validate()


def test_preloaded_pool_and_device_checks(tmp_path):
    """``volumes=`` trains without a data folder (the speed benchmark's path); a pool of the
    wrong region and an unknown device are refused before training."""
    from medvol.errors import BackendError
    from medvol.pretrain.voco import pretrain_voco

    pool = np.random.default_rng(0).random((3, 32, 32, 32)).astype(np.float32)
    kw = dict(model_config=TINY, settings={"region": [32, 32, 32]}, progress=False)
    r = pretrain_voco(None, steps=2, run_dir=tmp_path / "a", volumes=pool, device="cpu", **kw)
    assert r["steps"] == 2 and r["volumes"] == 3 and r["device"] == "cpu"
    assert "peak_gpu_mib" not in r and np.isfinite(r["final_loss"])
    with pytest.raises(InputError, match="volumes must be"):
        pretrain_voco(None, steps=1, run_dir=tmp_path / "b", volumes=pool[:, :16], **kw)
    with pytest.raises(InputError, match="unknown device"):
        pretrain_voco(None, steps=1, run_dir=tmp_path / "c", volumes=pool, device="tpu", **kw)
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="CUDA"):
            pretrain_voco(None, steps=1, run_dir=tmp_path / "d", volumes=pool, device="cuda",
                          **kw)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_swin_pretrains_on_cuda_and_exports_for_monai(tmp_path):
    """The GPU config's path: voco_swin trained on CUDA (student, EMA teacher and losses on the
    device), checkpoint resumed, export loaded into MONAI's SwinUNETR on the CPU."""
    pytest.importorskip("einops")
    from monai.networks.nets import SwinUNETR

    from medvol.models.voco import SWIN_ENCODER_KEYS
    from medvol.pretrain.voco import pretrain_voco

    cfg = {"feature_size": 12, "window_size": 4, "depths": [1, 1, 1, 1],
           "num_heads": [1, 1, 1, 1], "proj_hidden": 16, "proj_out": 8}
    pool = np.random.default_rng(0).random((2, 64, 64, 64)).astype(np.float32)
    kw = dict(arch="voco_swin", model_config=cfg, settings={"region": [64, 64, 64]},
              run_dir=tmp_path / "run", volumes=pool, device="cuda", progress=False)
    assert pretrain_voco(None, steps=2, **kw)["steps"] == 2
    r = pretrain_voco(None, steps=4, export=tmp_path / "s.safetensors", **kw)
    assert r["steps"] == 4 and r["device"] == "cuda" and r["peak_gpu_mib"] > 0
    net = SwinUNETR(in_channels=1, out_channels=3, feature_size=12, window_size=4,
                    depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), use_v2=True)
    enc = torch.nn.ModuleDict({k: getattr(net, k) for k in SWIN_ENCODER_KEYS})
    enc.load_state_dict(encoder_state_dict(tmp_path / "s.safetensors"), strict=True)
