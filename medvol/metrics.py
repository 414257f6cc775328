"""Image-quality metrics: PSNR, SSIM, RMSE, MAE (2D and 3D; numpy or torch inputs).

All functions take the image under test first and the reference second, convert torch tensors
to numpy (``detach().cpu()``), compute in float64 and return a Python ``float``.

The data-range pitfall
----------------------
PSNR and SSIM depend on the *data range* ``L`` (the C1 = (0.01·L)², C2 = (0.03·L)² constants of
SSIM and the peak of PSNR). It is a **required keyword** here because guessing it is the most
common way published numbers become incomparable:

* The usual standard is the dynamic range of the **reference**, ``L = ref.max() − ref.min()``
  (pass ``data_range="ref"`` to say so explicitly). Never use the range of the image under
  test (it changes with the method being evaluated), and never the dtype range of a float image.
* CT images in Hounsfield units span about −1024…3071 HU; with that ``L`` a soft-tissue error of
  50 HU barely moves SSIM. Evaluate HU images in an explicit window: clip both images to the
  window (e.g. soft tissue W/L = 400/40 → [−160, 240] HU) and pass the window width as
  ``data_range`` — and report the window with the number.

SSIM is the Gaussian-window SSIM of Wang et al. (2004): σ = 1.5 px, window truncated at 3.5σ
(11 px), K1 = 0.01, K2 = 0.03, population (not sample) covariance, mean over the image with a
5-pixel border (half a window) excluded. It is computed by
``skimage.metrics.structural_similarity(x, ref, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=L)``; PSNR by
``skimage.metrics.peak_signal_noise_ratio(ref, x, data_range=L)``. This module only adds the
required, checked ``data_range``, torch/Volume inputs, shape checks with one-line errors and a
``mask`` for PSNR/MSE (scikit-image has none: the masked MSE is the one line of numpy it needs).
In 3D the window is an 11³ Gaussian.
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np

from .errors import InputError

__all__ = ["psnr", "ssim", "rmse", "mae", "mse"]

DataRange = Union[float, str]


def _np(x, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    elif hasattr(x, "array") and hasattr(x, "spacing"):  # medvol Volume
        return _np(x.array, name)
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise InputError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return a.astype(np.float64, copy=False)


def _pair(x, ref) -> tuple[np.ndarray, np.ndarray]:
    a, b = _np(x, "image"), _np(ref, "reference")
    if a.shape != b.shape:
        raise InputError(f"image shape {a.shape} does not match reference shape {b.shape}",
                         hint="resample one onto the other's grid first")
    if a.size == 0:
        raise InputError("cannot compute a metric of empty images")
    return a, b


def _range(data_range: DataRange, ref: np.ndarray) -> float:
    if isinstance(data_range, str):
        if data_range != "ref":
            raise InputError(f"data_range must be a positive number or 'ref', got {data_range!r}")
        L = float(np.nanmax(ref) - np.nanmin(ref))
    else:
        L = float(data_range)
    if not (np.isfinite(L) and L > 0):
        raise InputError(f"data_range must be a positive finite number, got {L}",
                         hint="use the reference's max − min, or the display window width for HU")
    return L


def _mask(mask, shape) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask).astype(bool)
    if m.shape != shape:
        raise InputError(f"mask shape {m.shape} does not match image shape {shape}")
    if not m.any():
        raise InputError("mask is empty: no pixels to compare")
    return m


def mse(x, ref, *, mask=None) -> float:
    """Mean squared error over all pixels (or ``mask``), in squared image units."""
    a, b = _pair(x, ref)
    m = _mask(mask, a.shape)
    d = (a - b) if m is None else (a - b)[m]
    return float(np.mean(d * d))


def rmse(x, ref, *, mask=None) -> float:
    """Root-mean-square error (image units, e.g. HU or 1/mm) over all pixels or ``mask``."""
    return math.sqrt(mse(x, ref, mask=mask))


def mae(x, ref, *, mask=None) -> float:
    """Mean absolute error (image units) over all pixels or ``mask``."""
    a, b = _pair(x, ref)
    m = _mask(mask, a.shape)
    d = (a - b) if m is None else (a - b)[m]
    return float(np.mean(np.abs(d)))


def psnr(x, ref, *, data_range: DataRange, mask=None) -> float:
    """Peak signal-to-noise ratio in dB: ``10·log10(L² / MSE)``.

    Parameters
    ----------
    x, ref : arrays of equal shape (any dimension), numpy or torch.
    data_range : float or "ref"
        ``L``; required (see the module docstring: the reference's max − min is the standard,
        HU images need an explicit window).
    mask : optional boolean array — restrict the MSE to these pixels.

    Returns ``inf`` for identical images.
    """
    a, b = _pair(x, ref)
    L = _range(data_range, b)
    e = mse(a, b, mask=mask)
    if e == 0:
        return float("inf")
    if mask is not None:          # scikit-image has no mask: PSNR from the masked MSE
        return float(10.0 * math.log10(L * L / e))
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(b, a, data_range=L))


def ssim(x, ref, *, data_range: DataRange, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03, full: bool = False):
    """Gaussian-window structural similarity (Wang et al. 2004), 2D or 3D.

    Parameters
    ----------
    x, ref : ``(ny, nx)`` or ``(nz, ny, nx)`` arrays of equal shape, numpy or torch. Every axis
        must be at least one window (``2·int(3.5σ + 0.5) + 1`` = 11 px for σ = 1.5) long.
    data_range : float or "ref"
        Required; see the module docstring (reference max − min; explicit window width for HU).
    sigma : Gaussian window σ in pixels.
    full : also return the SSIM map (same shape as the input; the border half a window wide is
        excluded from the mean).

    Returns
    -------
    float, or ``(float, np.ndarray)`` with ``full=True``.
    """
    a, b = _pair(x, ref)
    if a.ndim not in (2, 3):
        raise InputError(f"ssim needs a 2D or 3D image, got shape {a.shape}",
                         hint="compute it per slice/channel for other layouts")
    truncate = 3.5
    win = 2 * int(truncate * sigma + 0.5) + 1
    if min(a.shape) < win:
        raise InputError(f"image shape {a.shape} is smaller than the {win}-pixel SSIM window")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise InputError("ssim inputs contain NaN or infinity")
    L = _range(data_range, b)

    from skimage.metrics import structural_similarity

    val, smap = structural_similarity(a, b, data_range=L, gaussian_weights=True, sigma=sigma,
                                      use_sample_covariance=False, K1=k1, K2=k2, full=True)
    val = float(val)
    return (val, smap) if full else val


# Registration metrics live beside the registration code; re-exported here so that
# ``medvol.metrics`` is the one place for every image/registration score.
from .registration.metrics import (  # noqa: E402
    dice_per_structure, folding_percent, inverse_consistency_error, jacobian_determinant,
    jacobian_stats, mean_dice, target_registration_error,
)

__all__ += ["dice_per_structure", "mean_dice", "jacobian_determinant", "folding_percent",
            "jacobian_stats", "inverse_consistency_error", "target_registration_error"]
