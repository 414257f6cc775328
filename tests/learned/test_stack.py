"""The shared learned-model stack: registry, checked safetensors weights, resumable train loop."""
from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medvol.errors import InputError, OutputExistsError, WeightsError  # noqa: E402
from medvol.learned import registry  # noqa: E402
from medvol.learned.data import resolve_data_root  # noqa: E402
from medvol.learned.trainer import read_checkpoint_info, save_loss_curve, train_loop  # noqa: E402
from medvol.learned.weights import (load_weights, read_header, read_weights_info,  # noqa: E402
                                    save_weights, shipped_weights)


@dataclass
class TinyConfig:
    width: int = 4
    depth: int = 1
    dropout: float = 0.0

    def validate(self):
        if not 1 <= self.width <= 64:
            raise ValueError(f"width must be in [1, 64], got {self.width}")
        if not 1 <= self.depth <= 4:
            raise ValueError("depth must be in [1, 4]")
        return self


BUILT: list[TinyConfig] = []


def _tiny(cfg: TinyConfig):
    BUILT.append(cfg)
    layers = [torch.nn.Linear(3, cfg.width), torch.nn.Tanh()]
    for _ in range(cfg.depth - 1):
        layers += [torch.nn.Linear(cfg.width, cfg.width), torch.nn.Tanh()]
    layers += [torch.nn.Dropout(cfg.dropout), torch.nn.Linear(cfg.width, 1),
               torch.nn.BatchNorm1d(1)]
    return torch.nn.Sequential(*layers)


registry.register_model("tiny_test_mlp", config_cls=TinyConfig, builder=_tiny, task="test",
                        replace=True)


def _x(n=5, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 3)).astype(np.float32))


# --------------------------------------------------------------------------- registry
def test_registry_builds_with_validated_config():
    assert {"pdunet", "lpd", "micdir", "voxelmorph", "tiny_test_mlp"} <= set(
        registry.available_models())
    m, cfg = registry.build_model("tiny_test_mlp", {"width": 8, "depth": 2})
    assert isinstance(cfg, TinyConfig) and cfg.width == 8
    assert m[0].out_features == 8
    with pytest.raises(InputError, match="unknown model"):
        registry.build_model("nope")
    with pytest.raises(InputError, match="unknown TinyConfig keys"):
        registry.build_model("tiny_test_mlp", {"widht": 8})
    with pytest.raises(InputError, match="must be an integer"):
        registry.build_model("tiny_test_mlp", {"width": "8"})
    with pytest.raises(InputError, match="width must be in"):
        registry.build_model("tiny_test_mlp", {"width": 10 ** 9})


@pytest.mark.parametrize("name,cfg", [("pdunet", {"width": 10 ** 6}), ("lpd", {"n_iter": 10 ** 5}),
                                      ("micdir", {"enc_channels": [100000] * 5}),
                                      ("voxelmorph", {"channels": [16] * 1000})])
def test_builtin_configs_bound_sizes(name, cfg):
    with pytest.raises(InputError):
        registry.build_model(name, cfg)


# --------------------------------------------------------------------------- weights
def test_weights_round_trip(tmp_path):
    m, cfg = registry.build_model("tiny_test_mlp", {"width": 6, "depth": 2})
    with torch.no_grad():
        m[-1].running_mean.fill_(0.25)
    m.eval()
    p = save_weights(tmp_path / "w.safetensors", m, arch="tiny_test_mlp", config=cfg,
                     task={"name": "t"}, data={"root": "DATA/x"}, metrics={"dice": 0.5},
                     extra={"steps": 3})
    info = read_weights_info(p)
    assert (info.arch, info.config, info.task, info.data, info.metrics, info.extra) == (
        "tiny_test_mlp", {"width": 6, "depth": 2, "dropout": 0.0}, {"name": "t"},
        {"root": "DATA/x"}, {"dice": 0.5}, {"steps": 3})
    m2, info2 = load_weights(p, arch="tiny_test_mlp")
    assert not m2.training
    x = _x()
    torch.testing.assert_close(m2(x), m(x), rtol=0, atol=0)
    with pytest.raises(OutputExistsError):
        save_weights(p, m, arch="tiny_test_mlp", config=cfg)
    with pytest.raises(WeightsError, match="expected 'pdunet'"):
        load_weights(p, arch="pdunet")


def _write_raw(path, header: dict, data: bytes = b""):
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def test_hostile_config_refused_before_allocation(tmp_path):
    """Metadata that asks for a huge network is refused by the config bounds: the builder is
    never called."""
    meta = {"medvol_format": "medvol-weights-1", "arch": "tiny_test_mlp",
            "config": json.dumps({"width": 10 ** 9, "depth": 1})}
    p = tmp_path / "huge.safetensors"
    _write_raw(p, {"__metadata__": meta})
    BUILT.clear()
    with pytest.raises(WeightsError, match="width must be in"):
        load_weights(p)
    assert BUILT == []
    # unknown key / wrong type / unknown arch: also before building
    for cfg, arch in (({"width": 4, "evil": 1}, "tiny_test_mlp"), ({"width": [4]}, "tiny_test_mlp"),
                      ({}, "no_such_net")):
        meta.update(config=json.dumps(cfg), arch=arch)
        _write_raw(p, {"__metadata__": meta})
        with pytest.raises(WeightsError):
            load_weights(p)
    assert BUILT == []


def test_hostile_headers_refused(tmp_path):
    p = tmp_path / "h.safetensors"
    p.write_bytes(struct.pack("<Q", 10 ** 12) + b"{}")          # header size beyond the file
    with pytest.raises(WeightsError, match="header of"):
        read_header(p)
    p.write_bytes(b"abc")
    with pytest.raises(WeightsError, match="truncated"):
        read_header(p)
    _write_raw(p, {"x": {"dtype": "F32", "shape": [10 ** 6], "data_offsets": [0, 4 * 10 ** 6]}})
    with pytest.raises(WeightsError, match="exceeds the file"):
        read_header(p)
    p.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{}")
    with pytest.raises(WeightsError, match="header"):
        read_header(p)
    with pytest.raises(WeightsError, match="not found"):
        read_header(tmp_path / "missing.safetensors")
    _write_raw(p, {"__metadata__": {"format": "something-else"}})
    with pytest.raises(WeightsError, match="not medvol weights"):
        load_weights(p)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_wrong_dtype_is_a_weights_error(tmp_path, dtype):
    from safetensors.torch import save_file

    m, cfg = registry.build_model("tiny_test_mlp", {"width": 4})
    p = save_weights(tmp_path / "w.safetensors", m, arch="tiny_test_mlp", config=cfg)
    meta, _ = read_header(p)
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in m.state_dict().items()}
    save_file(sd, str(p), metadata=meta)
    with pytest.raises(WeightsError, match="dtype"):
        load_weights(p)


def test_nan_weights_and_shape_mismatch(tmp_path):
    from safetensors.torch import save_file

    m, cfg = registry.build_model("tiny_test_mlp", {"width": 4})
    p = save_weights(tmp_path / "w.safetensors", m, arch="tiny_test_mlp", config=cfg)
    meta, _ = read_header(p)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    sd["0.weight"][0, 0] = float("nan")
    save_file(sd, str(p), metadata=meta)
    with pytest.raises(WeightsError, match="NaN"):
        load_weights(p)
    meta["config"] = json.dumps({"width": 5})
    save_file(m.state_dict(), str(p), metadata=meta)
    with pytest.raises(WeightsError, match="wrong shape"):
        load_weights(p)


def test_shipped_weights_lookup():
    p = shipped_weights("micdir_intra")
    assert p.name == "micdir_intra.safetensors" and p.is_file()
    with pytest.raises(WeightsError, match="no shipped weights"):
        shipped_weights("../../etc/passwd")


# --------------------------------------------------------------------------- train loop
def _setup(seed=0):
    torch.manual_seed(seed)
    m, _ = registry.build_model("tiny_test_mlp", {"width": 8, "depth": 2, "dropout": 0.3})
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6)
    w = torch.tensor([[1.0], [-2.0], [0.5]])

    def step_fn(step, rng):
        # data from the checkpointed numpy stream, dropout from torch, a python-random jitter
        x = torch.from_numpy(rng.standard_normal((16, 3)).astype(np.float32))
        y = x @ w + 0.01 * random.random()
        loss = torch.nn.functional.mse_loss(m(x), y)
        return {"loss": loss, "mse": loss.detach()}
    return m, opt, sched, step_fn


def test_resume_equals_uninterrupted_run(tmp_path):
    quiet = dict(progress=False, seed=3, grad_clip=1.0, config={"run": "x"})
    m, opt, sched, fn = _setup()
    ra = train_loop(tmp_path / "a", model=m, optimizer=opt, scheduler=sched, step_fn=fn, steps=6,
                    **quiet)
    assert ra.steps_done == 6 and ra.finished and len(ra.history) == 6

    m1, opt1, sched1, fn1 = _setup()
    r1 = train_loop(tmp_path / "b", model=m1, optimizer=opt1, scheduler=sched1, step_fn=fn1,
                    steps=3, **quiet)
    assert r1.steps_done == 3
    # pollute every random stream in between: the checkpoint restores them
    torch.manual_seed(999)
    random.seed(999)
    m2, opt2, sched2, fn2 = _setup(seed=123)            # different initial weights
    rb = train_loop(tmp_path / "b", model=m2, optimizer=opt2, scheduler=sched2, step_fn=fn2,
                    steps=6, **quiet)
    assert rb.resumed_from == 3 and rb.steps_done == 6
    for (k, va), vb in zip(m.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
    assert [h["loss"] for h in ra.history] == [h["loss"] for h in rb.history]
    assert sched2.get_last_lr() == sched.get_last_lr()
    # Adam moments restored too
    sa, sb = opt.state_dict()["state"], opt2.state_dict()["state"]
    torch.testing.assert_close(sa[0]["exp_avg_sq"], sb[0]["exp_avg_sq"], rtol=0, atol=0)


def test_rng_state_restored(tmp_path):
    m, opt, _, fn = _setup()
    draws = []

    def rec_fn(step, rng):
        out = fn(step, rng)
        draws.append((rng.random(), torch.rand(1).item(), random.random()))
        return out
    train_loop(tmp_path / "r", model=m, optimizer=opt, step_fn=rec_fn, steps=2, progress=False)
    full = list(draws)
    draws.clear()
    train_loop(tmp_path / "full", model=m, optimizer=opt, step_fn=rec_fn, steps=4, progress=False)
    expect = draws[2:]
    draws.clear()
    torch.manual_seed(5)
    random.seed(5)
    train_loop(tmp_path / "r", model=m, optimizer=opt, step_fn=rec_fn, steps=4, progress=False)
    assert draws == expect and len(full) == 2
    info = read_checkpoint_info(tmp_path / "r")
    assert info["step"] == 4 and len(info["history"]) == 4


def test_time_limit_and_config_mismatch(tmp_path):
    m, opt, _, fn = _setup()
    r = train_loop(tmp_path / "t", model=m, optimizer=opt, step_fn=fn, steps=5, time_limit_s=0.0,
                   progress=False, config={"a": 1})
    assert r.steps_done == 1 and not r.finished          # at least one step per call
    assert (tmp_path / "t" / "checkpoint.safetensors").is_file()
    with pytest.raises(InputError, match="different config"):
        train_loop(tmp_path / "t", model=m, optimizer=opt, step_fn=fn, steps=5, progress=False,
                   config={"a": 2})


def test_interrupted_checkpoint_write_is_detected(tmp_path):
    m, opt, _, fn = _setup()
    train_loop(tmp_path / "c", model=m, optimizer=opt, step_fn=fn, steps=2, progress=False)
    side = tmp_path / "c" / "checkpoint.json"
    d = json.loads(side.read_text())
    d["step"] = 1
    side.write_text(json.dumps(d))
    with pytest.raises(WeightsError, match="disagree"):
        train_loop(tmp_path / "c", model=m, optimizer=opt, step_fn=fn, steps=3, progress=False)


def test_loss_curve_png(tmp_path):
    from PIL import Image

    hist = [{"step": i + 1, "loss": 1.0 / (i + 1)} for i in range(50)]
    p = save_loss_curve(hist, tmp_path / "c.png", title="t", log_y=True, smooth=3)
    im = np.asarray(Image.open(p).convert("RGB"))
    assert im.shape == (420, 720, 3)
    # the curve is drawn in the first colour (#1f77b4)
    assert np.any(np.all(im == (0x1F, 0x77, 0xB4), axis=-1))
    p2 = save_loss_curve({"a": hist, "b": hist[:10]}, tmp_path / "d.png")
    assert np.any(np.all(np.asarray(Image.open(p2).convert("RGB")) == (0xD6, 0x27, 0x28), axis=-1))


# --------------------------------------------------------------------------- data root
def test_resolve_data_root(tmp_path, monkeypatch):
    (tmp_path / "mri" / "stroke").mkdir(parents=True)
    monkeypatch.delenv("MEDVOL_DATA", raising=False)
    with pytest.raises(InputError, match="--data.*MEDVOL_DATA"):
        resolve_data_root(None)
    assert resolve_data_root(tmp_path, need=["mri/stroke"]) == tmp_path
    monkeypatch.setenv("MEDVOL_DATA", str(tmp_path))
    assert resolve_data_root(None) == tmp_path
    with pytest.raises(InputError, match="lacks dicom/ct_head_ge_tilt"):
        resolve_data_root(None, need=["dicom/ct_head_ge_tilt"])
    with pytest.raises(InputError, match="not a folder"):
        resolve_data_root(tmp_path / "nope")
