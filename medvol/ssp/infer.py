"""Gaussian-weighted sliding-window inference with 50 % overlap (MONAI).

``monai.inferers.sliding_window_inference`` with ``mode="gaussian"``, ``sigma_scale=0.125``
(σ = window/8, as SparseSSP) and ``overlap=0.5`` does the tiling and stitching; medvol only adapts
the 2D-output case: a network with ``depth_out = 1`` returns one plane per window, which is
repeated over the window depth so MONAI's weighting applies unchanged, and the stitched result's
first plane is returned.
"""
from __future__ import annotations

import numpy as np

__all__ = ["sliding_predict"]


def sliding_predict(model, volume: np.ndarray, roi: tuple, *, depth_out: int, overlap: float = 0.5,
                    sw_batch_size: int = 4, device: str = "cpu") -> np.ndarray:
    """Predict ``(C_out, D', Y, X)`` from a network input ``volume`` of shape ``(C_in, D, Y, X)``.

    ``roi`` is the network window ``(d, h, w)``. If ``depth_out == 1`` the window depth must equal
    ``D`` and the result has ``D' = 1``; otherwise ``depth_out`` must equal ``d`` and ``D' = D``.
    Windows cover every voxel; edges are handled by shifting the last window inward (MONAI).
    """
    import torch
    from monai.inferers import sliding_window_inference

    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 4:
        raise ValueError(f"volume must be (C, D, Y, X), got {vol.shape}")
    d, h, w = (int(v) for v in roi)
    if depth_out == 1 and vol.shape[1] != d:
        raise ValueError(f"a 2D-output network needs the whole depth {d} in one window, "
                         f"got {vol.shape[1]}")
    if depth_out not in (1, d):
        raise ValueError(f"depth_out {depth_out} must be 1 or the window depth {d}")
    pad = [(0, 0), (0, 0), (0, max(0, h - vol.shape[2])), (0, max(0, w - vol.shape[3]))]
    if any(p[1] for p in pad):
        vol = np.pad(vol, pad, mode="reflect" if min(vol.shape[2:]) > 1 else "edge")

    def predictor(x):
        y = model(x)
        if depth_out == 1:
            y = y.expand(-1, -1, x.shape[2], -1, -1).contiguous()
        return y

    x = torch.from_numpy(vol)[None].to(device)
    with torch.no_grad():
        out = sliding_window_inference(x, (d, h, w), sw_batch_size, predictor, overlap=overlap,
                                       mode="gaussian", sigma_scale=0.125, padding_mode="replicate")
    out = out[0].float().cpu().numpy()
    out = out[:, :, :volume.shape[2], :volume.shape[3]]
    return out[:, :1] if depth_out == 1 else out
