"""Intensity scaling of the registration nets: percentiles to [0, 1], computed by hand here."""
from __future__ import annotations

import numpy as np

from medvol.registration.data import normalize_intensity
from medvol.registration.datasets import hippocampus_intensity


def test_normalize_matches_the_percentile_formula_on_a_random_image():
    a = np.random.default_rng(0).gamma(2.0, 50.0, (12, 14, 10)).astype(np.float32)
    a[:2] = 0
    lo, hi = np.percentile(a[a > 0], [0.01, 99.99])
    want = np.clip(a, 0.0, hi) / hi                      # lo is taken as min(lo, 0) = 0 unmasked
    np.testing.assert_allclose(normalize_intensity(a), want, rtol=0, atol=1e-6)
    m = a > 40
    want_m = np.clip((a - np.percentile(a[m], 0.01)) / np.ptp(np.percentile(a[m], [0.01, 99.99])),
                     0, 1) * m
    np.testing.assert_allclose(normalize_intensity(a, mask=m), want_m, rtol=0, atol=1e-6)
    assert normalize_intensity(a).dtype == np.float32


def test_hippocampus_scaling_of_a_near_constant_image_keeps_the_bright_voxel_at_one():
    # 99.99 % of the positive voxels share one value, so hi - lo < 1e-6: the bright voxel is
    # above hi and maps to 1, the background (<= 0) to 0, the rest to 0 (at lo)
    a = np.zeros((30, 30, 30), np.float32)
    a[2:28, 2:28, 2:28] = 5.0
    a[15, 15, 15] = 9.0
    out = hippocampus_intensity(a)
    assert out[15, 15, 15] == 1.0 and out[0, 0, 0] == 0.0 and out[10, 10, 10] == 0.0
    assert out.dtype == np.float32
