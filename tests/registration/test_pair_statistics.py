"""Held-out pair lists and the paired bootstrap of ``benchmarks/registration.py``.

Truth: the pair formula itself, and differences built with a known structure (a constant
difference has a zero-width CI; a per-subject effect widens the subject-resampled CI).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from medvol.registration.datasets import hippocampus_test_pairs

# loaded by path: putting benchmarks/ on sys.path would shadow top-level names (flows, ...)
_spec = importlib.util.spec_from_file_location(
    "bench_registration", Path(__file__).resolve().parents[2] / "benchmarks" / "registration.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
paired_bootstrap_ci = _mod.paired_bootstrap_ci


def test_hippocampus_pairs_default_and_offsets():
    subs = {f"s{i:02d}": None for i in range(7)}
    ids = sorted(subs)
    assert hippocampus_test_pairs(subs) == [(ids[i], ids[(i + 1) % 7]) for i in range(7)]
    two = hippocampus_test_pairs(subs, (1, 3))
    assert two[:7] == hippocampus_test_pairs(subs)
    assert two[7:] == [(ids[i], ids[(i + 3) % 7]) for i in range(7)]
    assert len(set(two)) == 14 and all(a != b for a, b in two)


def _pairs(n_subj=20, offsets=(1, 2, 3), seed=0, subject_effect=0.0):
    rng = np.random.default_rng(seed)
    eff = rng.normal(0, subject_effect, n_subj)
    g = np.array([(i, (i + k) % n_subj) for k in offsets for i in range(n_subj)])
    x = rng.normal(0.8, 0.05, len(g))
    y = x - 0.01 - eff[g[:, 0]] - eff[g[:, 1]] + rng.normal(0, 0.01, len(g))
    return x, y, g


def test_bootstrap_constant_difference_has_zero_width():
    x = np.linspace(0.6, 0.9, 30)
    for groups in (None, np.arange(30) % 10, np.stack([np.arange(30) % 10,
                                                       (np.arange(30) + 1) % 10], 1)):
        m, lo, hi = paired_bootstrap_ci(x, x - 0.02, groups=groups, n_boot=2000)
        assert np.allclose([m, lo, hi], 0.02)


def test_one_pair_per_group_is_the_pair_bootstrap():
    x, y, _ = _pairs(offsets=(1,))
    assert paired_bootstrap_ci(x, y, n_boot=3000) == paired_bootstrap_ci(
        x, y, n_boot=3000, groups=np.arange(len(x)))


def test_subject_resampling_widens_the_ci_under_a_subject_effect():
    x, y, g = _pairs(subject_effect=0.02)
    m, lo, hi = paired_bootstrap_ci(x, y, n_boot=4000)
    _, flo, fhi = paired_bootstrap_ci(x, y, n_boot=4000, groups=g[:, 0])
    _, slo, shi = paired_bootstrap_ci(x, y, n_boot=4000, groups=g)
    assert lo < m < hi and flo < m < fhi and slo < m < shi
    assert (hi - lo) < (fhi - flo) < (shi - slo)
    # without a subject effect the subject CI stays close to the pair CI
    x0, y0, g0 = _pairs(subject_effect=0.0)
    _, lo0, hi0 = paired_bootstrap_ci(x0, y0, n_boot=4000)
    _, slo0, shi0 = paired_bootstrap_ci(x0, y0, n_boot=4000, groups=g0)
    assert (shi0 - slo0) < 2.5 * (hi0 - lo0)
