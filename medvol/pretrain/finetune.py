"""Few-label hippocampus segmentation: fine-tune a MONAI BasicUNet from an encoder init.

The downstream check of :mod:`medvol.pretrain`: a BasicUNet (3 classes: background, 1 anterior,
2 posterior) is trained for a fixed number of steps on the resized ``(32, 48, 32)`` grid with
MONAI's ``DiceCELoss``, its encoder either random or loaded from pre-trained weights (decoder
random, identical for equal seeds), and scored on the test subjects at their native 1 mm grid
(logits resampled back, Dice of labels 1 and 2 by MONAI's ``compute_dice``, averaged).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["GRID", "prepare", "finetune_seg", "evaluate_dice"]

GRID = (32, 48, 32)


def prepare(pairs, grid: Sequence[int] = GRID):
    """``[(image, labels)]`` native → tensors ``(N, 1, *grid)`` image and ``(N, 1, *grid)`` labels."""
    import torch

    from .data import resize_to

    x = np.stack([resize_to(i, grid) for i, _ in pairs])[:, None]
    y = np.stack([resize_to(l.astype(np.float32), grid, "nearest") for _, l in pairs])[:, None]
    return torch.from_numpy(x), torch.from_numpy(y)


def _augmenter(seed: int):
    """Seeded MONAI dict transform of :func:`finetune_seg`'s ``augment`` (on ``(1, *grid)``)."""
    from monai.transforms import Compose, RandFlipd, RandScaleIntensityd, RandShiftIntensityd

    t = Compose([RandFlipd(("image", "label"), prob=0.5, spatial_axis=2),
                 RandScaleIntensityd("image", factors=0.1, prob=0.5),
                 RandShiftIntensityd("image", offsets=0.1, prob=0.5)])
    t.set_random_state(seed=int(seed))
    return t


def evaluate_dice(net, pairs, grid: Sequence[int] = GRID) -> np.ndarray:
    """Per-subject Dice (mean of labels 1 and 2) at the native grid, ``(N,)``."""
    import torch
    import torch.nn.functional as F
    from monai.metrics import compute_dice

    from .data import resize_to

    out = []
    net.eval()
    with torch.no_grad():
        for img, lab in pairs:
            x = torch.from_numpy(resize_to(img, grid))[None, None]
            lg = F.interpolate(net(x), size=lab.shape, mode="trilinear", align_corners=False)
            pred = F.one_hot(lg.argmax(1), 3).permute(0, 4, 1, 2, 3)
            ref = F.one_hot(torch.from_numpy(lab.astype(np.int64))[None], 3).permute(0, 4, 1, 2, 3)
            d = compute_dice(pred, ref, include_background=False, ignore_empty=False)
            out.append(float(torch.nanmean(d)))
    return np.asarray(out)


def finetune_seg(train_pairs, test_pairs, *, encoder: dict | None = None,
                 features=(16, 16, 32, 64, 128, 16), steps: int = 150, batch: int = 2,
                 lr: float = 1e-3, seed: int = 0, run_dir=None, progress=False,
                 freeze_encoder_steps: int = 0, augment: bool = False,
                 encoder_lr_scale: float = 1.0) -> dict:
    """Fine-tune from ``encoder`` (MONAI-named tensors, e.g.
    :func:`medvol.pretrain.voco.encoder_state_dict`; ``None`` = random init) and score.

    ``freeze_encoder_steps``: the first K of the ``steps`` train the decoder only (the encoder's
    learning rate is 0), then everything — "linear probe, then fine-tune" (Kumar et al., ICLR
    2022), which keeps a pre-trained encoder from being overwritten by the gradients of a random
    decoder. Encoder = BasicUNet's ``conv_0`` and ``down_1`` … ``down_4`` (what the pre-trained
    files hold), for any init.

    ``encoder_lr_scale``: the encoder trains at ``lr * encoder_lr_scale`` (after any frozen
    steps), the decoder at ``lr`` — a discriminative learning rate (Howard & Ruder, ULMFiT 2018;
    layer-wise decay in BEiT/MAE fine-tuning), the mild form of freezing.

    ``augment``: each training sample is mirrored left–right (the last axis, x of the RAS
    crops) with p 0.5 — label maps with it — and its intensity scaled by 1 ± 10 % and shifted by
    ± 0.1, each with p 0.5 (MONAI ``RandFlipd``, ``RandScaleIntensityd``,
    ``RandShiftIntensityd``, seeded by ``seed``): the flip/intensity part of the SwinUNETR/VoCo
    downstream recipe. Flips along the other axes and in-plane rot90 of that recipe are left
    out because they swap the anterior/posterior labels' anatomy.

    Returns ``{"dice": per-subject (N,), "mean": float, "steps": int, "train_s": float,
    "model": the fine-tuned BasicUNet}``.
    """
    import tempfile

    import torch
    from monai.losses import DiceCELoss

    from medvol.models.voco import CNN_ENCODER_KEYS, basic_unet

    from ..learned.trainer import train_loop

    torch.manual_seed(seed)
    net = basic_unet(features, 1, 3)
    if encoder is not None:
        missing, unexpected = net.load_state_dict(encoder, strict=False)
        if unexpected:
            raise ValueError(f"encoder tensors not in BasicUNet: {unexpected[:3]}")
    if not 0 <= int(freeze_encoder_steps) <= int(steps):
        raise ValueError(f"freeze_encoder_steps must be in [0, steps], got {freeze_encoder_steps}")
    if not 0.0 <= float(encoder_lr_scale) <= 1.0:
        raise ValueError(f"encoder_lr_scale must be in [0, 1], got {encoder_lr_scale}")
    x, y = prepare(train_pairs)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    is_enc = [n.split(".")[0] in CNN_ENCODER_KEYS for n, _ in net.named_parameters()]
    params = [p for _, p in net.named_parameters()]
    opt = torch.optim.AdamW([{"params": [p for p, e in zip(params, is_enc) if e]},
                             {"params": [p for p, e in zip(params, is_enc) if not e]}],
                            lr=lr, weight_decay=1e-5)

    aug = _augmenter(seed) if augment else None

    def step_fn(step, rng):
        opt.param_groups[0]["lr"] = (0.0 if step < int(freeze_encoder_steps)
                                     else lr * float(encoder_lr_scale))
        idx = rng.choice(len(x), size=min(batch, len(x)), replace=False)
        xb, yb = x[idx], y[idx]
        if aug is not None:
            d = [aug({"image": xi, "label": yi}) for xi, yi in zip(xb, yb)]
            xb = torch.stack([torch.as_tensor(e["image"]) for e in d])
            yb = torch.stack([torch.as_tensor(e["label"]) for e in d])
        return {"loss": loss_fn(net(xb), yb)}

    with tempfile.TemporaryDirectory() as tmp:
        res = train_loop(run_dir or tmp, model=net, optimizer=opt, step_fn=step_fn, steps=steps,
                         seed=seed, checkpoint_every=0, progress=progress, log_every=50)
    d = evaluate_dice(net, test_pairs)
    return {"dice": d, "mean": float(np.mean(d)), "steps": res.steps_done,
            "train_s": res.train_s, "model": net}
