"""One resumable training loop for every learned model, and its loss-curve PNG.

:func:`train_loop` runs ``steps`` optimiser steps of a caller's ``step_fn`` and checkpoints to
``run_dir``:

``checkpoint.safetensors``
    model tensors (``model.*``), optimiser state tensors (``opt.<param>.<key>``), tensor parts of
    the scheduler state (``sched.*``) and the torch RNG states (``rng.torch``, ``rng.cuda.<i>``).
``checkpoint.json``
    step, history, the numpy ``Generator`` state handed to ``step_fn``, Python's ``random``
    state, optimiser ``param_groups``, scheduler state, cumulative training seconds and the
    caller's ``config``.

Both files are written atomically (temporary file + rename) and carry the same step; calling
:func:`train_loop` again with the same ``run_dir`` resumes exactly where the last checkpoint
left off (same weights, optimiser moments and random streams as an uninterrupted run). No
pickle anywhere.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError, WeightsError

__all__ = ["TrainResult", "train_loop", "save_loss_curve", "read_checkpoint_info", "resolve_device",
           "peak_gpu_mib"]

CKPT_TENSORS = "checkpoint.safetensors"
CKPT_JSON = "checkpoint.json"


@dataclass
class TrainResult:
    """``steps_done`` (total, including resumed steps), ``history`` (one dict per step: ``step``,
    ``t`` cumulative seconds and every value ``step_fn`` returned), ``wall_s`` (this call),
    ``run_dir``; ``finished`` says whether ``steps`` was reached, ``train_s`` is the cumulative
    training time over all calls."""

    steps_done: int
    history: list[dict]
    wall_s: float
    run_dir: Path
    finished: bool = False
    train_s: float = 0.0
    resumed_from: int = 0
    extra: dict = field(default_factory=dict)


def _say(progress, msg: str) -> None:
    if progress is True:
        print(msg, flush=True)
    elif callable(progress):
        progress(msg)


def _opt_split(opt) -> tuple[dict, dict]:
    import torch

    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"opt.{pid}.{k}"] = t
    return tensors, {"param_groups": sd["param_groups"]}


def _opt_join(opt, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, t in tensors.items():
        if key.startswith("opt."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = t
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _sched_split(sched) -> tuple[dict, dict]:
    import torch

    tensors, plain = {}, {}
    for k, v in sched.state_dict().items():
        if torch.is_tensor(v):
            tensors[f"sched.{k}"] = v
        else:
            plain[k] = v
    try:
        json.dumps(plain)
    except TypeError as e:
        raise InputError(f"scheduler state is not JSON-serialisable ({e}); use a torch "
                         "scheduler without lambdas") from None
    return tensors, plain


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist")
                                 else str(o)))


def _py_random_state() -> list:
    v, st, g = random.getstate()
    return [v, list(st), g]


def _set_py_random_state(s) -> None:
    random.setstate((s[0], tuple(s[1]), s[2]))


def read_checkpoint_info(run_dir) -> dict | None:
    """The JSON side of a checkpoint in ``run_dir`` (``None`` when there is none)."""
    side = Path(run_dir) / CKPT_JSON
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text())
    except ValueError as e:
        raise WeightsError(f"checkpoint side file is not JSON ({e})", path=side,
                           hint="delete the run folder to start again") from None


def _save(run: Path, *, model, optimizer, scheduler, step, history, gen, train_s, config,
          extra_state) -> None:
    import torch

    from .._atomic import atomic_write_text
    from .weights import write_safetensors

    tensors = {f"model.{k}": (v.detach().float() if v.is_floating_point() else v.detach())
               for k, v in model.state_dict().items()}
    ot, ometa = _opt_split(optimizer)
    tensors.update(ot)
    smeta = None
    if scheduler is not None:
        st, smeta = _sched_split(scheduler)
        tensors.update(st)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    write_safetensors(run / CKPT_TENSORS, tensors, {"step": str(step), "kind": "medvol-checkpoint"},
                      overwrite=True)
    side = {"step": step, "history": history, "numpy_rng": gen.bit_generator.state,
            "python_rng": _py_random_state(), "optimizer": _jsonable(ometa), "scheduler": smeta,
            "train_seconds": train_s, "config": _jsonable(config), "state": extra_state}
    atomic_write_text(run / CKPT_JSON, json.dumps(side), overwrite=True)


def _load(run: Path, *, model, optimizer, scheduler, gen, config) -> tuple[int, list, float, dict]:
    import torch

    from .weights import read_safetensors

    side = read_checkpoint_info(run)
    meta, tensors = read_safetensors(run / CKPT_TENSORS,
                                     retrain_hint="delete the run folder to start again")
    where = run / CKPT_TENSORS
    if str(side.get("step")) != meta.get("step"):
        raise WeightsError(f"checkpoint files disagree (step {side.get('step')} vs "
                           f"{meta.get('step')}): interrupted while writing?", path=where,
                           hint="delete the run folder to start again")
    if config is not None and side.get("config") != _jsonable(config):
        raise InputError(f"checkpoint in {run} was made with a different config",
                         hint="use another run folder or delete the checkpoint")
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
        _opt_join(optimizer, tensors, side["optimizer"])
        if scheduler is not None and side.get("scheduler") is not None:
            sst = dict(side["scheduler"])
            sst.update({k[6:]: v for k, v in tensors.items() if k.startswith("sched.")})
            scheduler.load_state_dict(sst)
    except (RuntimeError, KeyError, ValueError) as e:
        raise WeightsError(f"checkpoint does not match this model/optimiser "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:120]})", path=where,
                           hint="use another run folder or delete the checkpoint") from None
    gen.bit_generator.state = side["numpy_rng"]
    _set_py_random_state(side["python_rng"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[:torch.cuda.device_count()])
    return (int(side["step"]), list(side.get("history", [])), float(side.get("train_seconds", 0.0)),
            dict(side.get("state") or {}))


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when PyTorch sees a GPU, else ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` are
    checked (a CUDA request without a GPU is a :class:`~medvol.errors.BackendError`)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise InputError(f"unknown device {device!r}", hint="use auto, cpu or cuda")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        from ..errors import BackendError

        raise BackendError("CUDA requested but not available", hint="use --device cpu")
    return device


def peak_gpu_mib(device: str) -> float | None:
    """Peak memory PyTorch allocated on a CUDA ``device`` since its start (MiB); ``None`` on CPU."""
    import torch

    if not str(device).startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def train_loop(run_dir, *, model, optimizer, step_fn: Callable, steps: int, seed: int = 0,
               checkpoint_every: int = 100, time_limit_s: float | None = None,
               log_every: int = 10, scheduler=None, grad_clip: float | None = None,
               progress: bool | Callable[[str], None] = True, config=None,
               on_checkpoint: Callable[[], dict] | None = None) -> TrainResult:
    """Train ``model`` for ``steps`` optimiser steps in total, resuming from ``run_dir``.

    Parameters
    ----------
    run_dir : folder of the checkpoint; created if needed. A checkpoint there is resumed
        (model, optimiser, scheduler, RNG states, history) when its ``config`` equals ``config``.
    model, optimizer : the network (already built and, for a fresh run, initialised) and its
        optimiser. ``scheduler`` (optional) is stepped after every optimiser step.
    step_fn : ``step_fn(step, rng) -> {"loss": tensor, ...}`` computes one batch; ``step`` is the
        0-based index of the step, ``rng`` a ``numpy.random.Generator`` seeded with ``seed`` whose
        state is checkpointed. The loop does ``zero_grad`` / ``backward`` / gradient clipping at
        ``grad_clip`` / ``optimizer.step`` / ``scheduler.step`` and records every returned value
        as a float.
    steps : total number of steps of the run (a resumed run trains the remainder).
    seed : seeds the numpy generator and, for a fresh run, torch and Python ``random``.
    checkpoint_every : steps between checkpoints (one is always written when the call ends).
    time_limit_s : stop (checkpointed) once this many seconds of this call have passed (checked
        before each step; every call trains at least one step).
    log_every : steps between progress lines (mean of the window).
    progress : ``True`` prints, ``False`` is silent, a callable receives each line.
    config : JSON-serialisable description of the run, stored in the checkpoint; resuming with
        a different config is an :class:`InputError`.
    on_checkpoint : optional ``() -> dict`` whose JSON-serialisable result is stored with each
        checkpoint (the caller's own state); read it back with :func:`read_checkpoint_info`.

    Returns
    -------
    TrainResult
    """
    import torch

    if int(steps) < 0:
        raise InputError(f"steps must be >= 0, got {steps}")
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(int(seed))
    step, history, train_s, resumed = 0, [], 0.0, 0
    if (run / CKPT_JSON).is_file() and (run / CKPT_TENSORS).is_file():
        step, history, train_s, _ = _load(run, model=model, optimizer=optimizer,
                                          scheduler=scheduler, gen=gen, config=config)
        history = [h for h in history if h.get("step", 0) <= step]
        resumed = step
        _say(progress, f"resumed at step {step}/{steps} from {run}")
    else:
        torch.manual_seed(int(seed))
        random.seed(int(seed))

    def checkpoint():
        _save(run, model=model, optimizer=optimizer, scheduler=scheduler, step=step,
              history=history, gen=gen, train_s=train_s, config=config,
              extra_state=on_checkpoint() if on_checkpoint is not None else None)

    t_call = time.perf_counter()
    window: list[float] = []
    params = [p for g in optimizer.param_groups for p in g["params"]]
    while step < int(steps):
        if (time_limit_s is not None and step > resumed
                and time.perf_counter() - t_call > float(time_limit_s)):
            _say(progress, f"time limit reached at step {step}/{steps}; rerun to resume")
            break
        t0 = time.perf_counter()
        model.train()
        out = step_fn(step, gen)
        if not isinstance(out, dict) or "loss" not in out:
            raise TypeError("step_fn must return a dict with a 'loss' tensor")
        loss = out["loss"]
        if not bool(torch.isfinite(loss.detach()).all()):
            checkpoint()
            raise InputError(f"loss became {float(loss.detach())} at step {step + 1}; the last "
                             f"checkpoint is kept in {run}",
                             hint="lower the learning rate or check the training data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, float(grad_clip))
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        step += 1
        train_s += time.perf_counter() - t0
        rec = {"step": step, "t": round(train_s, 3)}
        for k, v in out.items():
            try:
                rec[k] = float(v.detach()) if torch.is_tensor(v) else float(v)
            except (TypeError, ValueError):
                continue
        history.append(rec)
        window.append(rec["loss"])
        if log_every and (step % int(log_every) == 0 or step == int(steps)):
            _say(progress, f"step {step}/{steps} loss {np.mean(window):.5g} "
                 f"({train_s:.0f} s)")
            window = []
        if checkpoint_every and step % int(checkpoint_every) == 0:
            checkpoint()
    checkpoint()
    return TrainResult(steps_done=step, history=history, wall_s=time.perf_counter() - t_call,
                       run_dir=run, finished=step >= int(steps), train_s=train_s,
                       resumed_from=resumed)


# --------------------------------------------------------------------------- loss curve
_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def save_loss_curve(history, path, *, keys: Sequence[str] = ("loss",), title: str = "",
                    smooth: int = 1, log_y: bool = False, overwrite: bool = True) -> Path:
    """Plot ``keys`` against ``step`` as a PNG (Pillow; no plotting library needed).

    ``history``: a list of per-step dicts (:attr:`TrainResult.history`) or ``{run name: list}``
    to draw several runs in one figure. ``smooth``: moving-average window in steps. ``log_y``:
    logarithmic y axis (positive values only).
    """
    from PIL import Image, ImageDraw

    from .._atomic import atomic_path

    runs = history if isinstance(history, dict) else {"": history}
    w, h, pad = 720, 420, 56
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    curves = {}
    for rname, hist in runs.items():
        for key in keys:
            pts = [(r["step"], r[key]) for r in hist if key in r and r[key] is not None
                   and math.isfinite(float(r[key])) and (not log_y or r[key] > 0)]
            if not pts:
                continue
            xs, ys = (np.array(v, dtype=float) for v in zip(*pts))
            if log_y:
                ys = np.log10(ys)
            k = max(1, min(int(smooth), ys.size))
            ys = np.convolve(ys, np.ones(k) / k, mode="valid")
            label = " ".join(s for s in (rname, key if len(keys) > 1 or not rname else "") if s)
            curves[label or key] = (xs[k - 1:], ys)
    d.rectangle([pad, pad // 2, w - pad // 2, h - pad], outline="black")
    if title:
        d.text((pad, 4), title, fill="black")
    if curves:
        allx = np.concatenate([c[0] for c in curves.values()])
        ally = np.concatenate([c[1] for c in curves.values()])
        x0, x1 = allx.min(), max(allx.max(), allx.min() + 1)
        y0, y1 = np.percentile(ally, 1), np.percentile(ally, 99)
        y1 = y1 if y1 > y0 else y0 + 1
        for i, (name, (xs, ys)) in enumerate(curves.items()):
            px = pad + (xs - x0) / (x1 - x0) * (w - 1.5 * pad)
            py = h - pad - (np.clip(ys, y0, y1) - y0) / (y1 - y0) * (h - 1.5 * pad)
            c = _COLOURS[i % len(_COLOURS)]
            if len(px) == 1:
                d.ellipse([px[0] - 2, py[0] - 2, px[0] + 2, py[0] + 2], fill=c)
            else:
                d.line(list(zip(px.tolist(), py.tolist())), fill=c, width=2)
            d.text((pad + 10, pad // 2 + 8 + 14 * i), name, fill=c)
        fmt = (lambda v: f"{10 ** v:.3g}") if log_y else (lambda v: f"{v:.3g}")
        d.text((pad, h - pad + 8), f"step {int(x0)}", fill="black")
        d.text((w - pad - 60, h - pad + 8), f"{int(x1)}", fill="black")
        d.text((4, pad // 2), fmt(y1), fill="black")
        d.text((4, h - pad - 10), fmt(y0), fill="black")
        d.text((w // 2 - 60, h - pad + 24), ", ".join(keys) + (f" (moving avg {smooth})"
                                                              if smooth > 1 else "")
               + (" log scale" if log_y else ""), fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=overwrite) as tmp:
        img.save(tmp, format="PNG")
    return path
