"""Private fallback of :func:`medvol.learned.trainer.train_loop` (same signature and checkpoint
layout idea), used only when the shared learned stack is not installed in this tree.

Written because the shared trainer was not yet on this branch when SparseSSP training had to
start; :func:`get_train_loop` prefers the shared one. Checkpoints: ``checkpoint.safetensors``
(``model.*`` and ``opt.<param>.<key>`` tensors, torch RNG) + ``checkpoint.json`` (step, history,
numpy generator state, optimiser param groups, config), each written atomically. No pickle.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["TrainResult", "train_loop", "get_train_loop"]


def get_train_loop():
    """The shared ``medvol.learned.trainer.train_loop`` if present, else this module's."""
    try:
        from medvol.learned.trainer import train_loop as shared
        return shared
    except ImportError:
        return train_loop


@dataclass
class TrainResult:
    steps_done: int
    history: list
    wall_s: float
    run_dir: Path
    finished: bool = False
    train_s: float = 0.0


def _save(run: Path, model, optimizer, step, history, gen, train_s, config):
    import torch
    from safetensors.torch import save_file

    from .._atomic import atomic_path, atomic_write_text

    t = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    sd = optimizer.state_dict()
    for pid, st in sd["state"].items():
        for k, v in st.items():
            t[f"opt.{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).contiguous()
    t["rng.torch"] = torch.get_rng_state()
    with atomic_path(run / "checkpoint.safetensors", overwrite=True) as tmp:
        save_file(t, str(tmp), metadata={"step": str(step)})
    side = {"step": step, "history": history, "numpy_rng": gen.bit_generator.state,
            "param_groups": sd["param_groups"], "train_seconds": train_s, "config": config}
    atomic_write_text(run / "checkpoint.json", json.dumps(side, default=str), overwrite=True)


def _load(run: Path, model, optimizer, gen):
    import torch
    from safetensors.torch import load_file

    side = json.loads((run / "checkpoint.json").read_text())
    t = load_file(str(run / "checkpoint.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    state: dict = {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": side["param_groups"]})
    gen.bit_generator.state = side["numpy_rng"]
    torch.set_rng_state(t["rng.torch"])
    return int(side["step"]), list(side["history"]), float(side["train_seconds"])


def train_loop(run_dir, *, model, optimizer, step_fn, steps: int, seed: int = 0,
               checkpoint_every: int = 100, time_limit_s=None, log_every: int = 10,
               scheduler=None, grad_clip=None, progress=True, config=None) -> TrainResult:
    """See :func:`medvol.learned.trainer.train_loop`; resumes from ``run_dir`` if it holds a
    checkpoint."""
    import torch

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(seed)
    step, history, train_s = 0, [], 0.0
    if (run / "checkpoint.json").is_file() and (run / "checkpoint.safetensors").is_file():
        step, history, train_s = _load(run, model, optimizer, gen)
        if progress:
            print(f"resumed at step {step}", flush=True)
    else:
        torch.manual_seed(seed)
    t_call = time.perf_counter()
    window = []
    while step < steps:
        if time_limit_s is not None and time.perf_counter() - t_call > time_limit_s:
            if progress:
                print(f"time limit at step {step}", flush=True)
            break
        t0 = time.perf_counter()
        model.train()
        out = step_fn(step, gen)
        loss = out["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        step += 1
        train_s += time.perf_counter() - t0
        rec = {"step": step, "t": round(train_s, 3)}
        rec.update({k: float(v.detach()) if torch.is_tensor(v) else float(v)
                    for k, v in out.items()})
        history.append(rec)
        window.append(rec["loss"])
        if progress and log_every and step % log_every == 0:
            print(f"step {step}/{steps} loss {np.mean(window):.5g} ({train_s:.0f} s)", flush=True)
            window = []
        if checkpoint_every and step % checkpoint_every == 0:
            _save(run, model, optimizer, step, history, gen, train_s, config)
    _save(run, model, optimizer, step, history, gen, train_s, config)
    return TrainResult(step, history, time.perf_counter() - t_call, run, step >= steps, train_s)
