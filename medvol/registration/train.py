"""Resumable training of MICDIR and the VoxelMorph baseline on known-deformation MRI pairs.

Run in the background (checkpoints every ``ckpt_every`` steps; rerunning resumes)::

    python -m medvol.registration.train --model micdir --modality intra --steps 2000 \
        --out .cache/registration/runs/micdir_intra

Checkpoints are safetensors (model + Adam state) plus a JSON side file (step, RNG state, config):
no pickle anywhere. :func:`export_weights` writes the small shippable weights file with its
metadata; :func:`train_lockstep` trains several models one step each in turn so that every model
gets exactly the same number of steps (the "same training budget" of the benchmark).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError, WeightsError

__all__ = ["TrainSpec", "Trainer", "train", "train_lockstep", "export_weights", "build_model",
           "loss_curve_png", "recalibrate_batchnorm", "recalibrate_weights_file"]

WEIGHTS_FORMAT = "medvol-registration-1"
BN_SEED = 777  # pair stream for BatchNorm recalibration (training subjects; training runs use small seeds)


@dataclass
class TrainSpec:
    """One training run. ``model`` ∈ {micdir, voxelmorph}; ``modality`` ∈ {intra, inter};
    ``similarity`` ∈ {ncc, mi} (default: ncc intramodal, mi intermodal). ``init``: a weights file
    (``.safetensors`` from :func:`export_weights`) to start from instead of random weights — the
    network config is taken from it; the optimiser starts fresh. Ignored when resuming."""

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


def build_model(name: str, config: dict | None = None):
    """A fresh network by name with ``config`` overrides."""
    if name == "micdir":
        from ..models.micdir import MICDIR, MICDIRConfig

        return MICDIR(MICDIRConfig.from_dict(config or {}))
    if name == "voxelmorph":
        from ..models.voxelmorph import VoxelMorphConfig, VoxelMorphNet

        return VoxelMorphNet(VoxelMorphConfig.from_dict(config or {}))
    raise InputError(f"unknown model {name!r}", hint="use micdir or voxelmorph")


def _similarity(name: str):
    from ..models.micdir import global_ncc

    if name == "ncc":
        return global_ncc
    if name == "mi":
        import warnings

        from monai.losses import GlobalMutualInformationLoss

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mi = GlobalMutualInformationLoss(num_bins=23, sigma_ratio=0.5)
        return lambda a, b: -mi(b.clamp(0, 1), a.clamp(0, 1))
    raise InputError(f"unknown similarity {name!r}", hint="use ncc or mi")


def _opt_to_tensors(opt) -> tuple[dict, dict]:
    import torch

    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "keys": {}}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"opt.{pid}.{k}"] = t.detach().cpu().contiguous()
    return tensors, meta


def _opt_from_tensors(opt, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, t in tensors.items():
        if not key.startswith("opt."):
            continue
        _, pid, k = key.split(".", 2)
        state.setdefault(int(pid), {})[k] = t
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class Trainer:
    """One model, its optimiser, its pair stream; :meth:`step` trains one batch."""

    def __init__(self, spec: TrainSpec, sources=None, device: str = "auto"):
        import torch

        from .data import PairSampler, load_sources

        self.spec = spec
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        torch.manual_seed(spec.seed)
        init_cfg = None
        side = Path(spec.out) / "checkpoint.json"
        if side.is_file():  # resuming: the network config the run was started with
            spec.config = json.loads(side.read_text()).get("spec", {}).get("config") or spec.config
        elif spec.init:
            from .learned import load_model

            init_model, init_meta = load_model(spec.model, spec.modality, path=spec.init)
            init_cfg = json.loads(init_meta["config"])
            spec.config = init_cfg
        self.model = build_model(spec.model, spec.config).to(device)
        if init_cfg is not None:
            self.model.load_state_dict(init_model.state_dict())
            self.init_steps = int(init_meta.get("steps_done", 0))
        else:
            self.init_steps = 0
        self.opt = torch.optim.Adam(self.model.parameters(), lr=spec.lr)
        sources = sources if sources is not None else load_sources()
        self.sources = sources
        self.sampler = PairSampler(sources, modality=spec.modality, seed=spec.seed, device=device)
        self.similarity = _similarity(spec.sim())
        self.step_no = 0
        self.history: list[dict] = []
        self.out = Path(spec.out)
        self.t_train = 0.0
        self._resume()

    # -- checkpoints
    @property
    def ckpt(self) -> Path:
        return self.out / "checkpoint.safetensors"

    def _resume(self) -> None:
        import torch
        from safetensors.torch import load_file

        side = self.out / "checkpoint.json"
        if not (self.ckpt.is_file() and side.is_file()):
            return
        meta = json.loads(side.read_text())
        if meta.get("spec", {}).get("model") != self.spec.model:
            raise WeightsError("checkpoint belongs to another model", path=self.ckpt,
                               hint="use a fresh --out folder")
        tensors = load_file(str(self.ckpt))
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        _opt_from_tensors(self.opt, tensors, meta["opt"])
        self.sampler.set_state(tensors["rng.sampler"])
        torch.set_rng_state(tensors["rng.torch"])
        self.step_no = int(meta["step"])
        self.init_steps = int(meta.get("init_steps", 0))
        self.t_train = float(meta.get("train_seconds", 0.0))
        hist = self.out / "history.jsonl"
        if hist.is_file():
            self.history = [json.loads(x) for x in hist.read_text().splitlines() if x.strip()]
            self.history = [h for h in self.history if h["step"] <= self.step_no]

    def save_checkpoint(self) -> None:
        import torch
        from safetensors.torch import save_file

        from .._atomic import atomic_path, atomic_write_text

        self.out.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().cpu().contiguous()
                   for k, v in self.model.state_dict().items()}
        ot, ometa = _opt_to_tensors(self.opt)
        tensors.update(ot)
        tensors["rng.sampler"] = self.sampler.state()
        tensors["rng.torch"] = torch.get_rng_state()
        with atomic_path(self.ckpt, overwrite=True) as tmp:
            save_file(tensors, str(tmp))
        atomic_write_text(self.out / "history.jsonl",
                          "".join(json.dumps(h) + "\n" for h in self.history), overwrite=True)
        atomic_write_text(self.out / "checkpoint.json", json.dumps(
            {"step": self.step_no, "train_seconds": self.t_train, "opt": ometa,
             "init_steps": self.init_steps,
             "spec": self.spec.__dict__, "device": str(self.device)}, default=str), overwrite=True)

    # -- training
    def step(self) -> dict:
        from ..models.micdir import micdir_loss

        t0 = time.perf_counter()
        self.model.train()
        x, y = self.sampler.sample(self.spec.batch)
        out_xy = self.model(x, y)
        out_yx = self.model(y, x)
        loss, parts = micdir_loss(out_xy, out_yx, x, y, w_cycle=self.spec.w_cycle,
                                  similarity=self.similarity)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step_no += 1
        self.t_train += time.perf_counter() - t0
        rec = {"step": self.step_no, "t": round(self.t_train, 2), **{k: round(v, 6) for k, v in parts.items()}}
        self.history.append(rec)
        if self.step_no % self.spec.ckpt_every == 0 or self.step_no == self.spec.steps:
            self.save_checkpoint()
        return rec

    @property
    def done(self) -> bool:
        return self.step_no >= self.spec.steps

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
        return export_weights(model, path, spec=self.spec, extra={**extra_bn,
            "steps_done": self.step_no + self.init_steps, "steps_this_run": self.step_no,
            "init_steps": self.init_steps, "train_seconds": round(self.t_train, 1),
            "device": str(self.device)}, overwrite=overwrite)


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
    return {"bn_recalibrated_pairs": str(pairs), "bn_recalibrated_seed": str(seed)}


def recalibrate_weights_file(path, *, method: str = "micdir", pairs: int = 48, seed: int = BN_SEED,
                             sources=None) -> Path:
    """:func:`recalibrate_batchnorm` on a weights file in place (atomic); metadata keeps
    everything and gains ``bn_recalibrated_pairs``/``bn_recalibrated_seed`` (nets with BatchNorm)."""
    from .data import load_sources
    from .learned import load_model

    model, meta = load_model(method, path=path)
    meta = {**meta, **_recalibrate_on_training_pairs(
        model, sources if sources is not None else load_sources(), meta.get("modality", "intra"),
        pairs, seed)}
    return _save_weights(model, path, meta, overwrite=True)


def _save_weights(model, path, meta: dict, *, overwrite: bool) -> Path:
    """float32 state dict + string metadata as safetensors, written atomically."""
    from safetensors.torch import save_file

    from .._atomic import atomic_path

    tensors = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    with atomic_path(Path(path), overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def export_weights(model, path, *, spec: TrainSpec, extra: dict | None = None,
                   overwrite: bool = False) -> Path:
    """Write the shippable ``.safetensors``: float32 weights + metadata (model name, config,
    grid, modality, similarity, training settings)."""
    from .data import GRID_SHAPE, GRID_SPACING

    meta = {"format": WEIGHTS_FORMAT, "model": spec.model, "config": json.dumps(model.config.to_dict()),
            "grid_shape": json.dumps(list(GRID_SHAPE)), "grid_spacing_mm": str(GRID_SPACING),
            "modality": spec.modality, "similarity": spec.sim(),
            "train": json.dumps({k: v for k, v in spec.__dict__.items() if k not in ("out", "config")}),
            **{k: str(v) for k, v in (extra or {}).items()}}
    return _save_weights(model, path, meta, overwrite=overwrite)


def loss_curve_png(histories: dict[str, list[dict]], path, *, key: str = "loss",
                   overwrite: bool = True, smooth: int = 25) -> Path:
    """Plot ``key`` against step for each run (moving average of ``smooth`` steps) as a PNG."""
    from PIL import Image, ImageDraw

    from .._atomic import atomic_path

    w, h, pad = 720, 420, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    curves = {}
    for name, hist in histories.items():
        ys = np.array([r[key] for r in hist if key in r], dtype=float)
        xs = np.array([r["step"] for r in hist if key in r], dtype=float)
        if ys.size == 0:
            continue
        k = max(1, min(smooth, ys.size))
        ys = np.convolve(ys, np.ones(k) / k, mode="valid")
        curves[name] = (xs[k - 1:], ys)
    if curves:
        allx = np.concatenate([c[0] for c in curves.values()])
        ally = np.concatenate([c[1] for c in curves.values()])
        x0, x1 = allx.min(), max(allx.max(), allx.min() + 1)
        y0, y1 = np.percentile(ally, 1), np.percentile(ally, 99)
        y1 = y1 if y1 > y0 else y0 + 1
        d.rectangle([pad, pad // 2, w - pad // 2, h - pad], outline="black")
        colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
        for i, (name, (xs, ys)) in enumerate(curves.items()):
            px = pad + (xs - x0) / (x1 - x0) * (w - 1.5 * pad)
            py = h - pad - (np.clip(ys, y0, y1) - y0) / (y1 - y0) * (h - 1.5 * pad)
            d.line(list(zip(px.tolist(), py.tolist())), fill=colours[i % 6], width=2)
            d.text((pad + 10, pad // 2 + 8 + 14 * i), name, fill=colours[i % 6])
        d.text((pad, h - pad + 8), f"step {int(x0)}", fill="black")
        d.text((w - pad - 60, h - pad + 8), f"{int(x1)}", fill="black")
        d.text((4, pad // 2), f"{y1:.3g}", fill="black")
        d.text((4, h - pad - 10), f"{y0:.3g}", fill="black")
        d.text((w // 2 - 40, h - pad + 24), f"{key} (moving avg {smooth})", fill="black")
    with atomic_path(Path(path), overwrite=overwrite) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def train(spec: TrainSpec, *, device: str = "auto", time_limit_s: float | None = None,
          log_every: int = 50, sources=None) -> "Trainer":
    """Train (or resume) one model until ``spec.steps`` or ``time_limit_s``; checkpoints saved."""
    return train_lockstep([spec], device=device, time_limit_s=time_limit_s, log_every=log_every,
                          sources=sources)[0]


def train_lockstep(specs: Sequence[TrainSpec], *, device: str = "auto",
                   time_limit_s: float | None = None, log_every: int = 50,
                   sources=None) -> list["Trainer"]:
    """Train several models one step each in turn (equal step counts at any stop)."""
    import torch

    from .data import load_sources

    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        torch.set_num_threads(int(os.environ.get("MEDVOL_TRAIN_THREADS", "1")))
    else:
        torch.backends.cudnn.benchmark = True
    sources = sources if sources is not None else load_sources()
    trainers = [Trainer(s, sources=sources, device=device) for s in specs]
    t0 = time.perf_counter()
    while not all(t.done for t in trainers):
        if time_limit_s is not None and time.perf_counter() - t0 > time_limit_s:
            break
        # keep step counts equal: only models at the minimum step advance
        m = min(t.step_no for t in trainers if not t.done)
        for t in trainers:
            if not t.done and t.step_no == m:
                rec = t.step()
                if rec["step"] % log_every == 0 or rec["step"] == 1:
                    print(f"[{t.spec.model}/{t.spec.modality}] " + " ".join(
                        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()),
                        flush=True)
    for t in trainers:
        t.save_checkpoint()
    return trainers


def _main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", choices=["micdir", "voxelmorph"],
                   help="repeat to train several models in lockstep")
    p.add_argument("--modality", action="append", choices=["intra", "inter"])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--w-cycle", type=float, default=0.0)
    p.add_argument("--init", default=None,
                   help="folder of <model>_<modality>.safetensors to start from (e.g. models/weights)")
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--runs", default=".cache/registration/runs", help="folder of run folders")
    p.add_argument("--device", default="auto")
    p.add_argument("--time-limit", type=float, default=None, help="seconds")
    p.add_argument("--export", default=None, help="folder to write <model>_<modality>.safetensors")
    p.add_argument("--cache", default=None, help="folder of sources_v1.npz")
    a = p.parse_args(argv)
    from .data import load_sources

    sources = load_sources(a.cache)
    specs = [TrainSpec(model=m, modality=mod, steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed,
                       w_cycle=a.w_cycle, ckpt_every=a.ckpt_every,
                       init=str(Path(a.init) / f"{m}_{mod}.safetensors") if a.init else None,
                       out=str(Path(a.runs) / f"{m}_{mod}"))
             for mod in (a.modality or ["intra"]) for m in (a.model or ["micdir"])]
    trainers = train_lockstep(specs, device=a.device, time_limit_s=a.time_limit, sources=sources)
    loss_curve_png({f"{t.spec.model}_{t.spec.modality}": t.history for t in trainers},
                   Path(a.runs) / "loss_curves.png")
    if a.export:
        Path(a.export).mkdir(parents=True, exist_ok=True)
        for t in trainers:
            t.export(Path(a.export) / f"micdir_{t.spec.modality}.safetensors" if t.spec.model == "micdir"
                     else Path(a.export) / f"voxelmorph_{t.spec.modality}.safetensors", overwrite=True)
        (Path(a.export) / "histories.json").write_text(json.dumps(
            {f"{t.spec.model}_{t.spec.modality}": t.history for t in trainers}))
        loss_curve_png({f"{t.spec.model}_{t.spec.modality}": t.history for t in trainers},
                       Path(a.export) / "loss_curves.png")
    for t in trainers:
        print(f"{t.spec.model}/{t.spec.modality}: {t.step_no} steps, {t.t_train:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
