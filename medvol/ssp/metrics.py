"""Image-to-image metrics for fluorescence prediction: Pearson r, MSE, MAE, R², SSIM.

SSIM is scikit-image's ``structural_similarity`` with ``data_range`` = the target's max − min
(targets are z-scored, so no natural range exists; this choice is stated in every report).
"""
from __future__ import annotations

import numpy as np

__all__ = ["pearson", "mse", "mae", "r2", "ssim", "all_metrics"]


def _pair(pred, target):
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and target {t.shape} differ in shape")
    return p, t


def pearson(pred, target) -> float:
    p, t = _pair(pred, target)
    p = p.ravel() - p.mean()
    t = t.ravel() - t.mean()
    den = np.sqrt((p * p).sum() * (t * t).sum())
    return float((p * t).sum() / den) if den > 0 else 0.0


def mse(pred, target) -> float:
    p, t = _pair(pred, target)
    return float(np.mean((p - t) ** 2))


def mae(pred, target) -> float:
    p, t = _pair(pred, target)
    return float(np.mean(np.abs(p - t)))


def r2(pred, target) -> float:
    """Coefficient of determination 1 − SS_res/SS_tot (as sklearn's ``r2_score`` on the voxels)."""
    p, t = _pair(pred, target)
    ss_tot = float(((t - t.mean()) ** 2).sum())
    return float(1 - ((t - p) ** 2).sum() / ss_tot) if ss_tot > 0 else 0.0


def ssim(pred, target) -> float:
    from skimage.metrics import structural_similarity

    p, t = _pair(pred, target)
    rng = float(t.max() - t.min())
    return float(structural_similarity(t, p, data_range=rng if rng > 0 else 1.0))


def all_metrics(pred, target) -> dict:
    """``{"pearson", "mse", "mae", "r2", "ssim"}`` of one channel (2D or 3D)."""
    return {"pearson": pearson(pred, target), "mse": mse(pred, target), "mae": mae(pred, target),
            "r2": r2(pred, target), "ssim": ssim(pred, target)}
