"""The reconstruction-method registry: one name → one solver, for the CLI, the flows and Python.

Every method is called the same way, ``run(A, y, *, filter, n_iter, lam, nonneg, progress,
weights)``, with ``A`` any :class:`medvol.operators.LinearOperator` (a
:class:`medvol.kernels.Projector`, a :class:`medvol.mri.RadialNUFFT` …) and ``y`` the data in
the operator's range. The built-in entries are ``fbp``, ``sirt``, ``cgls``, ``tv`` and ``pdunet``;
a new method registers itself when its module is imported::

    from medvol.recon.registry import register_method

    register_method("dds", "medvol.recon.dds:reconstruct", learned=True,
                    description="diffusion-prior reconstruction")

``run`` may be a callable or a ``"module:function"`` string that is imported on first use, so
heavy methods (torch networks) cost nothing until they are chosen. :func:`available_methods` is
the one choice list that ``medvol recon --method``, :func:`medvol.flows.pipeline.recon_params`
and :func:`medvol.recon.reconstruct` validate against.

TV weight
---------
``lam`` of ``tv`` is given in units of the *normalised* problem: the solver gets
``λ = lam × scale`` with ``scale`` = :func:`image_scale` of the object (the 99.5th percentile
of its attenuation image). :func:`tv_lambda` is that rule; the jobs call it with the reference
image when they simulate data (the truth is known) and with the FBP of the data otherwise.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import InputError

__all__ = ["ReconMethod", "register_method", "get_method", "available_methods", "reconstruct",
           "resolved_params", "DEFAULT_TV_LAMBDA", "image_scale", "tv_lambda"]

DEFAULT_TV_LAMBDA = 0.02
"""Default TV weight in units of the normalised problem (× :func:`image_scale`)."""


@dataclass(frozen=True)
class ReconMethod:
    """One registered reconstruction method.

    Attributes
    ----------
    name : registry key (``medvol recon --method NAME``).
    run : ``run(A, y, *, filter, n_iter, lam, nonneg, progress, weights) -> x`` or a
        ``"module:function"`` reference imported on first use.
    description : one line for ``--help`` and the docs.
    learned : uses trained weights (``weights=`` names them).
    uses_lambda : reads the TV weight ``lam``.
    default_weights : shipped weights name used when ``weights`` is None (learned methods).
    task : ``"module:function"`` or callable ``task(geometry, views, full_views) -> (n, pixel)``
        that checks a simulated acquisition against the grid/geometry the weights were trained
        for and returns that grid (learned methods only; None: any grid).
    default_n_iter : the iteration (or sampling-step) count the method uses when ``n_iter`` is
        None; None for methods without iterations (FBP, PD-UNet). Manifests record
        :func:`resolved_params`, i.e. this value, never a null.
    refines : accepts ``refine`` / ``refine_lam`` (TV iterations after a network, relative λ).
    """

    name: str
    run: Callable | str
    description: str = ""
    learned: bool = False
    uses_lambda: bool = False
    default_weights: str | None = None
    task: Callable | str | None = None
    default_n_iter: int | None = None
    refines: bool = False

    def resolve(self, attr: str = "run") -> Callable | None:
        """The callable behind ``run`` or ``task`` (imports a ``"module:function"`` reference)."""
        ref = getattr(self, attr)
        if ref is None or callable(ref):
            return ref
        mod, _, fn = str(ref).partition(":")
        return getattr(importlib.import_module(mod), fn)


_METHODS: dict[str, ReconMethod] = {}


def register_method(name: str, run: Callable | str, *, description: str = "",
                    learned: bool = False, uses_lambda: bool = False,
                    default_weights: str | None = None, task: Callable | str | None = None,
                    default_n_iter: int | None = None, refines: bool = False,
                    replace: bool = False) -> ReconMethod:
    """Add a method to the registry (``replace=True`` to override an existing name)."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise InputError(f"reconstruction method name {name!r} must be alphanumeric")
    if name in _METHODS and not replace:
        raise InputError(f"reconstruction method {name!r} is already registered",
                         hint="pass replace=True to override it")
    m = ReconMethod(name, run, description, learned, uses_lambda, default_weights, task,
                    default_n_iter, refines)
    _METHODS[name] = m
    return m


def available_methods() -> tuple[str, ...]:
    """Names of the registered methods, in registration order."""
    return tuple(_METHODS)


def get_method(name: str) -> ReconMethod:
    """The registered method ``name`` (InputError naming the choices otherwise)."""
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown reconstruction method {name!r}",
                         hint=f"choose one of {', '.join(_METHODS)}") from None


def reconstruct(A, y, method: str, *, filter: str = "hann", n_iter: int | None = None,
                lam: float = 0.01, nonneg: bool = True, progress: bool = False,
                weights: str | None = None, refine: int | None = None,
                refine_lam: float | None = None):
    """Run the registered ``method`` with the operator ``A`` on data ``y``.

    ``lam`` is the TV weight as the solver sees it (already scaled; see :func:`tv_lambda`).
    Learned methods use ``weights`` (a shipped name or a ``.safetensors`` file; default the
    method's ``default_weights``). ``refine`` / ``refine_lam`` (methods registered with
    ``refines=True``, i.e. ``pdunet``): TV iterations after the network and their *relative*
    λ (None: the weights' defaults, :func:`medvol.recon.pdunet.default_refine`).
    """
    m = get_method(method)
    if n_iter is not None and n_iter < 1:
        raise InputError(f"n_iter must be at least 1, got {n_iter}")
    if refine is not None and refine < 0:
        raise InputError(f"refine must be at least 0, got {refine}")
    extra = {}
    if m.refines:
        extra = dict(refine=refine, refine_lam=refine_lam)
    elif refine or refine_lam is not None:
        raise InputError(f"method {method} has no refinement option",
                         hint="refine applies to pdunet")
    return m.resolve("run")(A, y, filter=filter, n_iter=n_iter or m.default_n_iter, lam=lam,
                            nonneg=nonneg, progress=progress,
                            weights=weights or m.default_weights, **extra)


def resolved_params(method: str, *, filter: str = "hann", n_iter: int | None = None,
                    lam: float | None = None, lam_solver: float | None = None,
                    weights: str | None = None, refine: int | None = None,
                    refine_lam: float | None = None) -> dict[str, Any]:
    """The parameters ``method`` actually runs with (defaults filled in), for manifests.

    Only the parameters the method reads are listed: ``filter`` (FBP and the FBP baseline),
    ``n_iter`` (iterative / sampling methods), ``lam`` (relative TV weight) with ``tv_lambda``
    (the solver's λ, :func:`tv_lambda`), ``weights`` (learned methods), ``refine`` and ``refine_lam`` (``pdunet``).
    """
    m = get_method(method)
    out: dict[str, Any] = {"method": method, "filter": filter}
    if m.default_n_iter is not None:
        out["n_iter"] = int(n_iter or m.default_n_iter)
    if m.uses_lambda:
        out["lam"] = DEFAULT_TV_LAMBDA if lam is None else float(lam)
        if lam_solver is not None:
            out["tv_lambda"] = float(lam_solver)
    if m.learned:
        out["weights"] = weights or m.default_weights
    if m.refines:
        from .pdunet import default_refine

        n, lr = default_refine(out["weights"])
        out["refine"] = int(n if refine is None else refine)
        if out["refine"]:
            out["refine_lam"] = float(lr if refine_lam is None else refine_lam)
    return out


# ------------------------------------------------------------------------------- TV weight
def image_scale(image) -> float:
    """Typical value of an attenuation image: its 99.5th percentile (1.0 when that is 0)."""
    a = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image)
    return float(np.percentile(a, 99.5)) or 1.0


def tv_lambda(lam: float | None, image) -> float:
    """The TV weight the solver gets: ``(lam or DEFAULT_TV_LAMBDA) × image_scale(image)``."""
    return (DEFAULT_TV_LAMBDA if lam is None else float(lam)) * image_scale(image)


# ------------------------------------------------------------------------------- built-ins
def _fbp(A, y, *, filter, **_):
    from .fbp import fbp

    return fbp(A, y, filter=filter)


def _sirt(A, y, *, n_iter, nonneg, progress, **_):
    from .iterative import sirt

    return sirt(A, y, n_iter=n_iter, nonneg=nonneg, progress=progress)


def _cgls(A, y, *, n_iter, progress, **_):
    from .iterative import cgls

    return cgls(A, y, n_iter=n_iter, progress=progress)


def _tv(A, y, *, lam, n_iter, nonneg, progress, **_):
    from .iterative import tv_pdhg

    return tv_pdhg(A, y, lam=lam, n_iter=n_iter, nonneg=nonneg, progress=progress)


def _pdunet(A, y, *, weights, refine=None, refine_lam=None, progress=False, **_):
    from .pdunet import pdunet_reconstruct

    return pdunet_reconstruct(A, y, weights=weights, refine=refine, refine_lam=refine_lam,
                              progress=progress)


def _pdunet_task(geometry: str, views: int, full_views: int) -> tuple[int, float]:
    """The grid the shipped CT weights were trained on; refuses other acquisitions."""
    from .pdunet_data import get_task

    task = get_task("ct_x16")
    if geometry != "fan" or views != task.sparsity or full_views != 360:
        raise InputError(f"the shipped PD-UNet weights are for a fan beam, every "
                         f"{task.sparsity}th of 360 views",
                         hint="use geometry fan, views 16, full_views 360")
    return task.image_size, task.pixel


register_method("fbp", _fbp, description="filtered back-projection (FBP / fan-beam FBP / FDK)")
register_method("sirt", _sirt, default_n_iter=200,
                description="SIRT, 200 iterations by default")
register_method("cgls", _cgls, default_n_iter=30, description="CGLS, 30 iterations by default")
register_method("tv", _tv, uses_lambda=True, default_n_iter=300,
                description="TV-regularised least squares (Chambolle-Pock), 300 iterations")
register_method("pdunet", _pdunet, learned=True, default_weights="pdunet_ct_x16",
                task=_pdunet_task, refines=True,
                description="PD-UNet / Learned Primal-Dual with shipped or given weights, then "
                "--refine TV iterations from its output (20 for pdunet_ct_x16)")
register_method("dds", "medvol.recon.diffusion:run_dds", learned=True, default_n_iter=100,
                default_weights="diffusion_ct", task="medvol.recon.diffusion:diffusion_task",
                description="DDS: 2D diffusion prior + ADMM/CG TV-z data consistency, 100 DDIM "
                "steps by default (--n-iter)")
register_method("mbir", "medvol.recon.diffusion:run_mbir", learned=True, default_n_iter=100,
                default_weights="diffusion_ct", task="medvol.recon.diffusion:diffusion_task",
                description="DiffusionMBIR-style PC sampling (VP prior, 100 steps by default) "
                "+ ADMM/CG TV-z after every step")


def method_help() -> str:
    """``fbp | sirt | …`` for option help texts."""
    return " | ".join(_METHODS)


def describe() -> dict[str, Any]:
    """``{name: description}`` of every registered method."""
    return {k: m.description for k, m in _METHODS.items()}
