"""Training crops stay inside their split; augmentation is shared by input and target."""
import numpy as np
import pytest

from medvol.ssp.data import ISL_SPLIT
from medvol.ssp.patches import augment, crop_origin


def test_crops_never_leave_the_training_rows():
    rng = np.random.default_rng(0)
    r0, r1 = ISL_SPLIT["train"]
    origins = np.array([crop_origin(rng, (r0, r1), (0, 1024), 64) for _ in range(5000)])
    assert origins[:, 0].min() >= r0 and origins[:, 0].max() + 64 <= r1
    assert origins[:, 1].min() >= 0 and origins[:, 1].max() + 64 <= 1024
    assert origins[:, 0].max() == r1 - 64          # the whole region is reachable
    with pytest.raises(ValueError):
        crop_origin(rng, (0, 10), (0, 100), 64)


def test_augment_applies_the_same_transform():
    rng = np.random.default_rng(1)
    x = np.arange(2 * 5 * 5).reshape(2, 5, 5)
    for _ in range(20):
        a, b = augment(rng, x, x[0] * 10)
        np.testing.assert_array_equal(a[0] * 10, b)
        assert sorted(a.ravel()) == sorted(x.ravel())
