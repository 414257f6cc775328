"""Few-label fine-tuning harness (medvol.pretrain.finetune): the frozen-encoder phase really
leaves the loaded encoder untouched and trains the decoder; without it both change."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from medvol.pretrain.finetune import finetune_seg  # noqa: E402

FEAT = (4, 4, 8, 8, 16, 4)
ENC = ("conv_0", "down_1", "down_2", "down_3", "down_4")   # BasicUNet's encoder blocks


def _pairs(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        z, y, x = np.meshgrid(*[np.linspace(-1, 1, k) for k in (20, 30, 20)], indexing="ij")
        c = rng.uniform(-0.2, 0.2, 3)
        r = np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
        lab = np.where(r < 0.35, np.where(y < c[1], 1, 2), 0).astype(np.uint8)
        img = (0.2 + 0.6 * (lab > 0) + 0.05 * rng.standard_normal(lab.shape)).astype(np.float32)
        out.append((img, lab))
    return out


def _encoder_state(seed=3):
    from medvol.models.voco import basic_unet

    torch.manual_seed(seed)
    net = basic_unet(FEAT, 1, 3)
    return {k: v.clone() for k, v in net.state_dict().items()
            if k.split(".")[0] in ENC}



def test_frozen_encoder_phase_keeps_the_encoder_and_trains_the_decoder():
    tr, te = _pairs(3, 0), _pairs(2, 1)
    enc = _encoder_state()
    r = finetune_seg(tr, te, encoder=enc, features=FEAT, steps=3, seed=0, freeze_encoder_steps=3)
    sd = r["model"].state_dict()
    for k, v in enc.items():                      # every encoder tensor exactly as loaded
        if v.is_floating_point() and "running" not in k:
            assert torch.equal(sd[k], v), k
    torch.manual_seed(0)                           # the decoder as finetune_seg initialised it
    from medvol.models.voco import basic_unet

    init = basic_unet(FEAT, 1, 3).state_dict()
    dec = [k for k in sd if k.split(".")[0] not in ENC and sd[k].is_floating_point()]
    assert any(not torch.equal(sd[k], init[k]) for k in dec)
    assert r["dice"].shape == (2,) and np.all((r["dice"] >= 0) & (r["dice"] <= 1))


def test_without_freezing_the_encoder_moves_and_bad_values_refused():
    tr, te = _pairs(3, 0), _pairs(1, 1)
    enc = _encoder_state()
    r = finetune_seg(tr, te, encoder=enc, features=FEAT, steps=2, seed=0)
    sd = r["model"].state_dict()
    assert any(not torch.equal(sd[k], v) for k, v in enc.items() if "weight" in k)
    with pytest.raises(ValueError, match="freeze_encoder_steps"):
        finetune_seg(tr, te, encoder=enc, features=FEAT, steps=2, freeze_encoder_steps=3)


def test_encoder_lr_scale_scales_the_first_adamw_step_of_the_encoder_only():
    """AdamW's first step is lr * (g / (|g| + eps) + wd * p): linear in lr for a given gradient.
    Same seed, same batch, so the encoder's first-step change at scale 0.1 is 0.1 x that at 1;
    the decoder's is the same."""
    tr, te = _pairs(3, 0), _pairs(1, 1)
    enc = _encoder_state()
    moved = {}
    for s in (1.0, 0.1):
        sd = finetune_seg(tr, te, encoder=enc, features=FEAT, steps=1, seed=0,
                          encoder_lr_scale=s)["model"].state_dict()
        moved[s] = {k: sd[k] - v for k, v in enc.items() if "weight" in k}
        moved[s]["dec"] = sd["final_conv.weight"]
    for k in moved[1.0]:
        if k == "dec":
            assert torch.equal(moved[1.0][k], moved[0.1][k])
        else:
            assert moved[1.0][k].abs().max() > 1e-4, k
            torch.testing.assert_close(moved[0.1][k], 0.1 * moved[1.0][k], rtol=1e-3, atol=1e-7)
    with pytest.raises(ValueError, match="encoder_lr_scale"):
        finetune_seg(tr, te, encoder=enc, features=FEAT, steps=1, encoder_lr_scale=1.5)


def test_augmenter_flips_image_and_labels_together_left_right_only():
    from medvol.pretrain.finetune import _augmenter

    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.random((1, 6, 8, 10), dtype=np.float32))
    lab = torch.from_numpy(rng.integers(0, 3, (1, 6, 8, 10)).astype(np.float32))
    aug, flips, kept = _augmenter(4), 0, 0
    for _ in range(40):
        d = aug({"image": img.clone(), "label": lab.clone()})
        xi, yi = torch.as_tensor(d["image"]), torch.as_tensor(d["label"])
        flipped = torch.equal(yi, lab.flip(-1))
        assert flipped or torch.equal(yi, lab)     # labels: only a mirror along x, never values
        src = img.flip(-1) if flipped else img
        a, b = np.polyfit(src.flatten().numpy(), xi.flatten().numpy(), 1)
        assert 0.9 - 1e-4 <= a <= 1.1 + 1e-4 and -0.1 - 1e-4 <= b <= 0.1 + 1e-4
        assert torch.allclose(xi, a * src + b, atol=1e-5)   # intensity: scale + shift only
        flips += flipped
        kept += torch.equal(xi, img)
    assert 8 <= flips <= 32 and kept >= 1          # p 0.5 flip; some samples left untouched
    d1 = _augmenter(4)({"image": img.clone(), "label": lab.clone()})
    d2 = _augmenter(4)({"image": img.clone(), "label": lab.clone()})
    assert torch.equal(torch.as_tensor(d1["image"]), torch.as_tensor(d2["image"]))  # seeded


def test_augmented_finetuning_is_deterministic_and_differs_from_plain():
    tr, te = _pairs(3, 0), _pairs(1, 1)
    a = finetune_seg(tr, te, features=FEAT, steps=3, seed=0, augment=True)
    b = finetune_seg(tr, te, features=FEAT, steps=3, seed=0, augment=True)
    c = finetune_seg(tr, te, features=FEAT, steps=3, seed=0)
    sa, sb, sc = (r["model"].state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
