"""Faster classical baselines (issue 15): multi-resolution diffeomorphic demons and a tuned,
multi-resolution B-spline, both SimpleITK, both affine-initialised, 2 threads by default.

Demons (``medvol register --method demons``; intramodal only — the demons force assumes equal
intensities): the moving image is affinely resampled onto the fixed grid and histogram-matched to
it (``sitk.HistogramMatching``), then ``sitk.DiffeomorphicDemonsRegistrationFilter`` runs on a
Gaussian pyramid (shrink factors ``DemonsSettings.shrink``, iterations per level, the field
smoothed with ``field_sigma`` voxels each iteration, the update field with ``update_sigma``),
each level starting from the previous level's field resampled onto it. The result is the
resampling field ``x ↦ A(x + u(x))`` (``A`` the affine), LPS mm on the fixed grid.

Tuned B-spline (:func:`register_bspline_fast`): SimpleITK's multi-resolution B-spline
(image pyramid with shrink factors 4, 2, 1 and smoothing 2, 1, 0 voxels, one control mesh of
6 points per axis; LBFGSB, 30 iterations per level — the reference settings of
:func:`medvol.registration.classical.register_bspline` are mesh 8, one level, 100 iterations), correlation
(intramodal) or Mattes MI (intermodal) with 10 % random sampling, 2 threads. Settings
(:class:`BSplineSettings`) were chosen on training pairs (see ``benchmarks/registration.py``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError
from ..volume import Volume

__all__ = ["DemonsSettings", "BSplineSettings", "DEMONS_TASK", "demons_settings", "register_demons",
           "register_bspline_fast", "bspline_fast_transform"]


@dataclass
class DemonsSettings:
    shrink: tuple = (4, 2, 1)
    iterations: tuple = (40, 20, 10)
    field_sigma: float = 0.75     # voxels, smoothing of the displacement field (chosen on training pairs)
    update_sigma: float = 0.0     # voxels, smoothing of the update field (0: off)
    threads: int = 2

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class BSplineSettings:
    mesh: int = 6                 # control-point mesh per axis (the same on every level)
    shrink: tuple = (4, 2, 1)
    smoothing: tuple = (2, 1, 0)
    iterations: int = 30
    sampling: float = 0.1
    threads: int = 2

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# Per-task demons settings chosen on that task's TRAINING pairs (benchmarks/registration_tune.py,
# rule and grid in docs/registration_issue15.md); `medvol register --method demons --task T`.
# The plain default above was chosen on 3 hippocampus training pairs (σ 0.75: 0.807 Dice vs σ 1.0
# 0.798, σ 0.5 0.804, 40/20/10 iterations). Whole-brain IXI (6 training pairs, 147 labels) kept
# improving with iterations: σ 0.5, 640/320/160 → 0.638 (320/160/80: 0.635; σ 0.75 0.636 / 0.638;
# the 40/20/10 default 0.610), at about 15× the default's time.
DEMONS_TASK = {"ixi": {"iterations": (640, 320, 160), "field_sigma": 0.5}}


def demons_settings(task: str | None = None) -> DemonsSettings:
    """The demons settings of ``task`` (``DEMONS_TASK``); the general default for any other."""
    return DemonsSettings(**DEMONS_TASK.get(task or "", {}))


def _levels(settings, shape_zyx) -> tuple:
    """Drop shrink levels that would leave fewer than 8 voxels along an axis."""
    keep = [(s, i) for s, i in zip(settings.shrink, settings.iterations)
            if min(shape_zyx) // int(s) >= 8]
    return tuple(keep) or ((1, settings.iterations[-1]),)


def register_demons(fixed: Volume, moving: Volume, *, metric: str = "ncc", seed: int = 0,
                    settings: DemonsSettings | None = None, initial=None):
    """Affine + multi-resolution diffeomorphic demons → ``(field (z, y, x, 3) LPS mm on the fixed
    grid, settings dict)``. ``initial``: a SimpleITK affine to start from (default: computed,
    :func:`medvol.registration.classical.affine_transform` with ``seed``)."""
    import SimpleITK as sitk

    from .classical import _img, affine_transform, transform_to_field

    if metric != "ncc":
        raise InputError("demons registration is intramodal only",
                         hint="use --method bspline (Mattes MI) or a learned method for --modality inter")
    s = settings or DemonsSettings()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(s.threads))
    if initial is None:
        initial = affine_transform(fixed, moving, metric="ncc", seed=seed)
    f = _img(fixed)
    m = sitk.Resample(_img(moving), f, initial, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    m = sitk.HistogramMatching(m, f, numberOfHistogramLevels=256, numberOfMatchPoints=15,
                               thresholdAtMeanIntensity=True)
    field = None
    for shrink, iters in _levels(s, fixed.shape):
        if shrink > 1:
            fs = sitk.Shrink(sitk.SmoothingRecursiveGaussian(f, 0.5 * shrink * min(f.GetSpacing())),
                             [int(shrink)] * 3)
            ms = sitk.Shrink(sitk.SmoothingRecursiveGaussian(m, 0.5 * shrink * min(m.GetSpacing())),
                             [int(shrink)] * 3)
        else:
            fs, ms = f, m
        dem = sitk.DiffeomorphicDemonsRegistrationFilter()
        dem.SetNumberOfIterations(int(iters))
        dem.SetSmoothDisplacementField(True)
        dem.SetStandardDeviations(float(s.field_sigma))
        if s.update_sigma > 0:
            dem.SetSmoothUpdateField(True)
            dem.SetUpdateFieldStandardDeviations(float(s.update_sigma))
        dem.SetNumberOfThreads(int(s.threads))
        if field is None:
            field = dem.Execute(fs, ms)
        else:
            init = sitk.Resample(field, fs, sitk.Transform(), sitk.sitkLinear, 0.0,
                                 sitk.sitkVectorFloat64)
            field = dem.Execute(fs, ms, init)
    if not (field.GetSize() == f.GetSize()):
        field = sitk.Resample(field, f, sitk.Transform(), sitk.sitkLinear, 0.0,
                              sitk.sitkVectorFloat64)
    ud = sitk.GetArrayFromImage(field).astype(np.float64)          # (z, y, x, 3) LPS mm
    mat = np.array(initial.GetMatrix()).reshape(3, 3)
    u = transform_to_field(initial, fixed) + ud @ mat.T
    return np.ascontiguousarray(u), {"method": "affine + diffeomorphic demons", **s.to_dict()}


def bspline_fast_transform(fixed: Volume, moving: Volume, *, metric: str = "ncc", seed: int = 0,
                           settings: BSplineSettings | None = None, initial=None):
    """Affine + multi-resolution B-spline (SimpleITK); returns a ``CompositeTransform``."""
    import SimpleITK as sitk

    from .classical import _img, _metric, affine_transform, sitk_seed

    s = settings or BSplineSettings()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(s.threads))
    f, m = _img(fixed), _img(moving)
    if initial is None:
        initial = affine_transform(fixed, moving, metric=metric, seed=seed)
    tx = sitk.BSplineTransformInitializer(f, [int(s.mesh)] * 3)
    reg = sitk.ImageRegistrationMethod()
    _metric(reg, metric)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(float(s.sampling), sitk_seed(seed))
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5,
                             numberOfIterations=int(s.iterations), maximumNumberOfCorrections=5,
                             maximumNumberOfFunctionEvaluations=1000,
                             costFunctionConvergenceFactor=1e7)
    reg.SetInterpolator(sitk.sitkLinear)
    n = len([k for k in s.shrink if min(fixed.shape) // int(k) >= 8]) or 1
    reg.SetShrinkFactorsPerLevel([int(k) for k in s.shrink[-n:]])
    reg.SetSmoothingSigmasPerLevel([float(k) for k in s.smoothing[-n:]])
    reg.SetMovingInitialTransform(initial)
    reg.SetInitialTransform(tx, inPlace=True)
    reg.SetNumberOfThreads(int(s.threads))
    reg.Execute(f, m)
    comp = sitk.CompositeTransform(3)
    comp.AddTransform(initial)
    comp.AddTransform(tx)
    return comp


def register_bspline_fast(fixed: Volume, moving: Volume, *, metric: str = "ncc", seed: int = 0,
                          settings: BSplineSettings | None = None, initial=None):
    """Tuned multi-resolution B-spline → ``(field (z, y, x, 3) LPS mm, settings dict)``."""
    from .classical import transform_to_field

    s = settings or BSplineSettings()
    tx = bspline_fast_transform(fixed, moving, metric=metric, seed=seed, settings=s,
                                initial=initial)
    return transform_to_field(tx, fixed), {"method": "affine + multi-resolution B-spline",
                                           **s.to_dict()}
