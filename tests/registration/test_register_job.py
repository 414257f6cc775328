"""Weights loading, the register job/CLI function, and resumable training."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("SimpleITK")

from medvol import Volume  # noqa: E402
from medvol.errors import InputError, MedvolError, WeightsError  # noqa: E402
from medvol.registration.learned import load_model, weights_path  # noqa: E402


def _shipped(method="micdir"):
    p = weights_path(method, "intra")
    assert p.is_file(), f"shipped weights missing: {p}"
    return p


@pytest.mark.parametrize("method", ["micdir", "voxelmorph"])
def test_shipped_weights_load(method):
    pytest.importorskip("monai")
    model, meta = load_model(method, "intra", _shipped(method))
    assert meta.arch == method and meta.task["grid_shape"] == [64, 80, 64]
    assert not model.training


def test_corrupted_and_mismatched_weights_raise_weights_error(tmp_path):
    src = _shipped()
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(src.read_bytes()[: 5000])
    with pytest.raises(WeightsError):
        load_model("micdir", path=bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError):
        load_model("micdir", path=junk)
    with pytest.raises(WeightsError, match="not 'voxelmorph'|for 'micdir'"):
        load_model("voxelmorph", path=src)
    with pytest.raises(WeightsError, match="not found"):
        load_model("micdir", path=tmp_path / "none.safetensors")
    # right format, wrong tensors
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    tensors.pop(next(iter(tensors)))
    partial = tmp_path / "partial.safetensors"
    save_file(tensors, str(partial), metadata=meta)
    with pytest.raises(WeightsError, match="do not match"):
        load_model("micdir", path=partial)


def _pair(tmp_path):
    from scipy.ndimage import gaussian_filter, shift

    import medvol.io as mio

    rng = np.random.default_rng(0)
    base = gaussian_filter(rng.standard_normal((28, 32, 30)), 3)
    base = (base - base.min()) / np.ptp(base)
    fixed = Volume(base.astype(np.float32), spacing=(2.0, 2.0, 2.5), origin=(-30.0, -30.0, -35.0))
    moving = fixed.with_array(shift(base, (0, 1.0, -1.5), order=1).astype(np.float32))
    labels = fixed.with_array((moving.array > 0.55).astype(np.int16) + (moving.array > 0.7))
    flabels = fixed.with_array((fixed.array > 0.55).astype(np.int16) + (fixed.array > 0.7))
    paths = {}
    for k, v in (("f", fixed), ("m", moving), ("l", labels), ("fl", flabels)):
        paths[k] = mio.write(v, tmp_path / f"{k}.nrrd")
    return paths


def test_register_job_writes_all_outputs(tmp_path):
    from medvol.commands.register import register

    p = _pair(tmp_path)
    out = tmp_path / "reg"
    register(p["f"], p["m"], out=out, method="affine", modality="intra", labels=p["l"],
             fixed_labels=p["fl"], weights=None, prealign=False, seed=0, overwrite=False)
    names = {q.name for q in out.iterdir()}
    assert {"warped.nrrd", "displacement.nrrd", "displacement.h5", "warped_labels.seg.nrrd",
            "checkerboard.png", "overlay.png", "jacobian.png", "report.html", "manifest.json"} <= names
    man = json.loads((out / "manifest.json").read_text())
    # Dice recomputed from the written warped labels against the fixed labels (SimpleITK reads)
    import SimpleITK as sitk

    fl = sitk.GetArrayFromImage(sitk.ReadImage(str(p["fl"])))
    wl = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "warped_labels.seg.nrrd"))).reshape(fl.shape)
    ml = sitk.GetArrayFromImage(sitk.ReadImage(str(p["l"])))

    def dice(a, b):
        return float(np.mean([2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k))
                              for k in (1, 2)]))

    assert dice(wl, fl) > dice(ml, fl) + 0.1
    assert man["metrics"]["dice_mean_after"] == pytest.approx(dice(wl, fl), abs=1e-6)
    assert man["metrics"]["dice_mean_after"] > man["metrics"]["dice_mean_before"]
    assert man["metrics"]["folding_percent"] == 0.0
    assert "Dice per structure" in (out / "report.html").read_text()
    with pytest.raises(MedvolError):  # never overwrite silently
        register(p["f"], p["m"], out=out, method="affine", modality="intra", labels=None,
                 fixed_labels=None, weights=None, prealign=False, seed=0, overwrite=False)


def test_register_bad_inputs_are_one_line_errors(tmp_path):
    from medvol.registration.run import run_register

    p = _pair(tmp_path)
    with pytest.raises(InputError, match="not found"):
        run_register(tmp_path / "missing.nrrd", p["m"], tmp_path / "o1")
    with pytest.raises(InputError, match="unknown method"):
        run_register(p["f"], p["m"], tmp_path / "o2", method="ants")
    import medvol.io as mio

    small = mio.write(Volume(np.zeros((4, 4, 4), np.int16)), tmp_path / "small.nrrd")
    with pytest.raises(InputError, match="MOVING"):
        run_register(p["f"], p["m"], tmp_path / "o3", method="affine", labels_path=small)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nonsense")
    with pytest.raises(WeightsError):
        run_register(p["f"], p["m"], tmp_path / "o4", method="micdir", weights=bad)
    from medvol.cli import main

    assert main(["register", "--help"]) == 0
    assert main(["register", str(p["f"]), str(p["m"]), "-o", str(tmp_path / "o5"),
                 "--weights", str(bad)]) == WeightsError.exit_code
    assert main(["register", str(tmp_path / "nope.nrrd"), str(p["m"]), "-o",
                 str(tmp_path / "o6")]) == InputError.exit_code


@pytest.mark.parametrize("metric", ["ncc", "mi"])
def test_classical_registration_is_reproducible_for_a_seed(tmp_path, metric):
    """Random metric sampling with a fixed medvol seed gives the same transform every time
    (SimpleITK's seed 0 means "wall clock": medvol seed 0 must not reach it)."""
    import medvol.io as mio
    from medvol.registration.classical import affine_transform, sitk_seed

    assert sitk_seed(0) != 0 and sitk_seed(0) != sitk_seed(1)
    with pytest.raises(InputError, match="seed"):
        sitk_seed(-1)
    p = _pair(tmp_path)
    f, m = mio.read(p["f"]), mio.read(p["m"])
    runs = [np.array(affine_transform(f, m, metric=metric, seed=0).GetParameters()) for _ in range(3)]
    assert max(float(np.abs(r - runs[0]).max()) for r in runs) < 1e-4


@pytest.mark.slow
def test_micdir_register_job_shipped_weights(tmp_path):
    pytest.importorskip("monai")
    _shipped()
    from medvol.registration.run import run_register

    p = _pair(tmp_path)
    out = run_register(p["f"], p["m"], tmp_path / "mic", method="micdir", labels_path=p["l"],
                       fixed_labels_path=p["fl"])
    man = json.loads((out / "manifest.json").read_text())
    assert man["metrics"]["folding_percent"] < 0.5
    assert (out / "displacement.h5").is_file()
    # the manifest records the refinement actually run: the general default (40, lr 0.1, IC on)
    prm = man["parameters"]
    assert (prm["refine"], prm["refine_full"]) == (40, 20)
    assert prm["refine_settings"]["lr"] == 0.1 and prm["refine_settings"]["w_ic"] == 0.1


def _tiny_sources():
    """Two smooth random 16³ 'subjects' standing in for the training templates."""
    from scipy.ndimage import gaussian_filter

    def subj(seed):
        a = gaussian_filter(np.random.default_rng(seed).standard_normal((16, 16, 16)), 2)
        a = ((a - a.min()) / np.ptp(a)).astype(np.float32)
        return {"t1": a, "mask": np.ones_like(a, np.uint8), "labels": (a > 0.5).astype(np.int16)}

    return {"mni09a": subj(1), "mni09c": subj(2)}


CFG = {"enc_channels": [4, 8, 8], "enc_strides": [1, 2, 2], "dec_channels": 8,
       "head_channels": [4], "nodes": [2, 2, 2]}


def test_training_resumes_exactly(tmp_path):
    """An interrupted run resumed from its checkpoint equals an uninterrupted one."""
    from medvol.registration.train import TrainSpec, train_run

    sources = _tiny_sources()
    a = train_run(TrainSpec(model="micdir", steps=10, ckpt_every=2, out=str(tmp_path / "a"),
                            config=CFG), sources=sources, device="cpu")
    ra = a.advance(3, progress=False)
    b = train_run(TrainSpec(model="micdir", steps=10, ckpt_every=2, out=str(tmp_path / "b"),
                            config=CFG), sources=sources, device="cpu")
    b.advance(2, progress=False)
    state2 = {k: v.clone() for k, v in b.model.state_dict().items()}
    b2 = train_run(TrainSpec(model="micdir", steps=10, ckpt_every=2, out=str(tmp_path / "b"),
                             config=CFG), sources=sources, device="cpu")   # a new process, say
    b2.advance(2, progress=False)                                             # resumes, no step
    assert b2.step_no == 2
    for k, v in b2.model.state_dict().items():
        assert torch.equal(v, state2[k]), k
    rb = b2.advance(3, progress=False)
    assert rb.history[-1]["loss"] == pytest.approx(ra.history[-1]["loss"], rel=1e-4, abs=1e-6)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b2.model.state_dict()[k]), k


def test_training_warm_start_from_exported_weights(tmp_path):
    """``init`` loads an exported weights file (its config included), records the steps already
    done, and the exported result counts them; a resumed run ignores ``init``."""
    from medvol.learned import read_weights_info
    from medvol.registration.train import TrainSpec, train_run

    sources = _tiny_sources()
    first = train_run(TrainSpec(model="micdir", steps=3, out=str(tmp_path / "a"), config=CFG),
                      sources=sources, device="cpu")
    first.advance(3, progress=False)
    w = first.export(tmp_path / "w.safetensors")
    # the warm start takes the config from the file, not from the (default) spec
    spec = TrainSpec(model="micdir", steps=2, seed=1, ckpt_every=1, out=str(tmp_path / "b"),
                     init=str(w))
    t = train_run(spec, sources=sources, device="cpu")
    from safetensors.torch import load_file

    ref = load_file(str(w))  # exported = trained weights + BatchNorm stats of the inference path
    for k, v in first.model.state_dict().items():
        assert torch.equal(t.model.state_dict()[k], ref[k]), k
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(ref[k], v), k
    assert t.init_steps == 3
    t.advance(1, progress=False)
    t2 = train_run(TrainSpec(model="micdir", steps=2, seed=1, ckpt_every=1,
                             out=str(tmp_path / "b"), init=str(w)), sources=sources, device="cpu")
    t2.advance(1, progress=False)
    assert t2.step_no == 1 and t2.init_steps == 3
    for k, v in t.model.state_dict().items():
        assert torch.equal(t2.model.state_dict()[k], v), k
    t2.advance(2, progress=False)
    info = read_weights_info(t2.export(tmp_path / "w2.safetensors"))
    assert (info.extra["steps_done"], info.extra["init_steps"],
            info.extra["steps_this_run"]) == (5, 3, 2)
    assert info.task["modality"] == "intra" and info.config["enc_channels"] == [4, 8, 8]
    # weights of the other model are refused
    vm = TrainSpec(model="voxelmorph", steps=1, out=str(tmp_path / "c"), init=str(w))
    with pytest.raises(WeightsError, match="micdir"):
        train_run(vm, sources=sources, device="cpu")


def test_train_registration_lockstep_and_export(tmp_path):
    """Two models train in lockstep (equal steps), export loadable weights and a loss curve;
    rerunning resumes without retraining."""
    from medvol.registration.learned import load_model
    from medvol.registration.train import train_registration

    sources = _tiny_sources()
    kw = dict(sources=sources, models=["micdir"], modalities=["intra"], steps=3, ckpt_every=2,
              runs=tmp_path / "runs", device="cpu", progress=False)
    r = train_registration(export=tmp_path / "exp", **kw)
    assert [row["steps"] for row in r["models"]] == [3]
    assert (tmp_path / "runs" / "loss_curves.png").is_file()
    model, info = load_model("micdir", path=tmp_path / "exp" / "micdir_intra.safetensors")
    assert info.extra["steps_done"] == 3 and not model.training
    again = train_registration(**kw)
    assert again["models"][0]["last_loss"] == r["models"][0]["last_loss"]
    with pytest.raises(InputError, match="unknown model"):
        train_registration(**{**kw, "models": ["unet"]})


def test_batchnorm_recalibration_matches_the_inference_path(tmp_path):
    """After :func:`recalibrate_batchnorm` the GCN BatchNorm running mean is the mean of the
    features the *eval-mode* (deterministic SCG) path feeds it — not the noisy training path."""
    from medvol.models.micdir import MICDIR, MICDIRConfig
    from medvol.registration.data import PairSampler
    from medvol.registration.train import recalibrate_batchnorm

    sources = _tiny_sources()
    torch.manual_seed(0)
    net = MICDIR(MICDIRConfig(enc_channels=(4, 8, 8), enc_strides=(1, 2, 2), dec_channels=8,
                              head_channels=(4,), nodes=(2, 2, 2)))
    seen = []
    hook = net.gcn1.linear.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    assert recalibrate_batchnorm(net, PairSampler(sources, seed=5), pairs=3) == 2
    hook.remove()
    assert not net.training and net.gcn1.bn.momentum == 0.1
    feats = torch.cat([o.reshape(-1, o.shape[-1]) for o in seen])      # (pairs*2*N, F)
    torch.testing.assert_close(net.gcn1.bn.running_mean, feats.mean(0), rtol=1e-4, atol=1e-5)
    # the inputs were the deterministic path: running the same pair twice in eval gives equal outputs
    x, y = PairSampler(sources, seed=5).sample(1)
    with torch.no_grad():
        a, b = net(x, y)["ddf"], net(x, y)["ddf"]
    assert torch.equal(a, b)
    # nets without BatchNorm are left alone
    from medvol.models.voxelmorph import VoxelMorphNet

    assert recalibrate_batchnorm(VoxelMorphNet(), PairSampler(sources, seed=5), pairs=1) == 0
