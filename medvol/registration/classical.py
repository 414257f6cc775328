"""Classical baselines with SimpleITK: affine and affine + B-spline (FFD).

Metric: correlation (intramodal) or Mattes mutual information (intermodal). B-spline settings
follow SimpleITK's ``ImageRegistrationMethodBSpline1`` example (control mesh 8 per dimension,
LBFGSB with gradient tolerance 1e-5, 100 iterations, 5 corrections, 1000 function evaluations,
cost factor 1e7, linear interpolation), initialised by the affine result.

Metric sampling is random but seeded: the same ``seed`` gives the same result (to the last few
digits of multi-threaded sums). SimpleITK reads a sampling seed of 0 as "seed from the wall
clock", so medvol passes ``seed + 1`` (:func:`sitk_seed`); every medvol seed is reproducible.

``progress``: ``True``/``False``, or ``None`` (default) to follow the command's
``--progress/--no-progress`` (:func:`medvol._progress.scope`); a determinate bar (level, iteration
of the optimiser, metric value) is drawn only on a terminal.

Every function returns the **resampling** transform (fixed point → moving point, LPS mm) and
:func:`transform_to_field` turns any SimpleITK transform into a ``(z, y, x, 3)`` LPS-mm field on the
fixed grid — the same convention as :func:`medvol.io.write_displacement_field`.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..volume import Volume

__all__ = ["affine_transform", "bspline_transform", "transform_to_field", "register_affine",
           "register_bspline", "sitk_seed"]


def sitk_seed(seed: int) -> int:
    """medvol seed (any int ≥ 0) → SimpleITK sampling seed, never 0 (0 means wall clock there)."""
    seed = int(seed)
    if seed < 0:
        raise InputError(f"seed must be ≥ 0, got {seed}", hint="pass a non-negative integer seed")
    return seed % (2**32 - 2) + 1


def _img(vol: Volume):
    import SimpleITK as sitk

    return sitk.Cast(vol.with_array(np.asarray(vol.array, dtype=np.float32)).to_sitk(), sitk.sitkFloat32)


def _metric(reg, metric: str):
    if metric == "ncc":
        reg.SetMetricAsCorrelation()
    elif metric == "mi":
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    else:
        raise InputError(f"unknown metric {metric!r}", hint="use ncc (intramodal) or mi (intermodal)")


def _track(reg, update, per_level: int, levels: int, name: str) -> None:
    """Report optimiser iterations (and resolution levels) of ``reg`` to a progress ``update``."""
    import SimpleITK as sitk

    state = {"level": 0}

    def on_level():
        state["level"] = int(reg.GetCurrentLevel())
        update(completed=state["level"] * per_level,
               description=f"{name} level {state['level'] + 1}/{levels}")

    def on_iter():
        it = min(int(reg.GetOptimizerIteration()) + 1, per_level)
        update(completed=state["level"] * per_level + it, metric=float(reg.GetMetricValue()))

    reg.AddCommand(sitk.sitkMultiResolutionIterationEvent, on_level)
    reg.AddCommand(sitk.sitkIterationEvent, on_iter)


def affine_transform(fixed: Volume, moving: Volume, *, metric: str = "ncc", iterations: int = 200,
                     seed: int = 0, progress: bool | None = None):
    """Multi-resolution (4, 2, 1) affine registration; returns a SimpleITK ``AffineTransform``."""
    import SimpleITK as sitk

    from .._progress import NOOP, bar

    f, m = _img(fixed), _img(moving)
    init = sitk.CenteredTransformInitializer(f, m, sitk.AffineTransform(3),
                                             sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    _metric(reg, metric)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.25, sitk_seed(seed))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4,
                                                 numberOfIterations=iterations,
                                                 relaxationFactor=0.5)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(init, inPlace=False)
    with bar(3 * iterations, "affine level 1/3", progress=progress, unit="it") as update:
        if update is not NOOP:
            _track(reg, update, iterations, 3, "affine")
        out = reg.Execute(f, m)
    if isinstance(out, sitk.CompositeTransform) and out.GetNumberOfTransforms() == 1:
        out = out.GetNthTransform(0)
    return out


def bspline_transform(fixed: Volume, moving: Volume, *, metric: str = "ncc", mesh: int = 8,
                      iterations: int = 100, initial=None, seed: int = 0, sampling: float = 0.2,
                      progress: bool | None = None):
    """Affine-initialised B-spline registration; returns a ``CompositeTransform`` (affine, then
    B-spline) in the resampling direction."""
    import SimpleITK as sitk

    from .._progress import NOOP, bar

    f, m = _img(fixed), _img(moving)
    if initial is None:
        initial = affine_transform(fixed, moving, metric=metric, seed=seed, progress=progress)
    tx = sitk.BSplineTransformInitializer(f, [int(mesh)] * 3)
    reg = sitk.ImageRegistrationMethod()
    _metric(reg, metric)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, sitk_seed(seed))
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations,
                             maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=1000,
                             costFunctionConvergenceFactor=1e7)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetMovingInitialTransform(initial)
    reg.SetInitialTransform(tx, inPlace=True)
    with bar(iterations, "B-spline refinement", progress=progress, unit="it") as update:
        if update is not NOOP:
            _track(reg, update, iterations, 1, "B-spline refinement")
        reg.Execute(f, m)
    comp = sitk.CompositeTransform(3)
    comp.AddTransform(initial)
    comp.AddTransform(tx)
    return comp


def transform_to_field(tx, reference: Volume) -> np.ndarray:
    """Displacement ``(z, y, x, 3)`` LPS mm of a resampling transform on ``reference``'s grid."""
    import SimpleITK as sitk

    f = sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat64, reference.size_xyz,
                                          reference.origin, reference.spacing,
                                          tuple(float(x) for x in reference.direction.reshape(-1)))
    return sitk.GetArrayFromImage(f)


def register_affine(fixed: Volume, moving: Volume, *, metric: str = "ncc", seed: int = 0) -> np.ndarray:
    """Affine registration → LPS-mm field on the fixed grid."""
    return transform_to_field(affine_transform(fixed, moving, metric=metric, seed=seed), fixed)


def register_bspline(fixed: Volume, moving: Volume, *, metric: str = "ncc", mesh: int = 8,
                     seed: int = 0) -> np.ndarray:
    """Affine + B-spline registration → LPS-mm field on the fixed grid."""
    return transform_to_field(bspline_transform(fixed, moving, metric=metric, mesh=mesh, seed=seed), fixed)
