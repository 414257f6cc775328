"""Flow tests against a temporary Prefect API (no real server): end to end on the bundled CT,
rerun skipping, retries, a batch with a corrupt study, Dask vs sequential, a kill/resume run,
the watch-folder flow, the CLI and the deployment file."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest


pytestmark = pytest.mark.flows

pytest.importorskip("prefect")


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _files(root: Path) -> dict[str, Path]:
    """Output files below ``root`` (no hidden/cache files), by relative path."""
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts)}


def _stat(root: Path) -> dict[str, tuple[int, str]]:
    return {k: (p.stat().st_mtime_ns, _sha(p)) for k, p in _files(root).items()}


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def e2e(prefect_api, tmp_path_factory, quick, sample_dicom):
    from medvol.flows.pipeline import study_pipeline

    out = tmp_path_factory.mktemp("e2e") / "out"
    opts = dict(quick, slices="12:14")
    summary = study_pipeline(str(sample_dicom), str(out), **opts)
    return summary, out, opts


def test_study_pipeline_outputs_open_with_sane_geometry(e2e, sample_dicom):
    SAMPLE = sample_dicom
    import pydicom
    import SimpleITK as sitk
    from PIL import Image

    import medvol.io as mio

    summary, out, _ = e2e
    assert summary["status"] == "completed"
    assert [s["step"] for s in summary["steps"]] == ["ingest", "reconstruct", "report"]
    assert all(s["status"] == "computed" for s in summary["steps"])
    label = summary["steps"][1]["label"]
    # the ingested volume against the DICOM header (independent truth)
    hdrs = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(SAMPLE.glob("*.dcm"))]
    ds = hdrs[0]
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    pos = [float(np.dot(normal, [float(v) for v in h.ImagePositionPatient])) for h in hdrs]
    extent_mm = max(pos) - min(pos)          # slice positions along the slice normal
    vol = mio.read(out / "ingest" / label / "volume.nrrd")
    assert vol.shape[2] == int(ds.Columns)
    assert abs((vol.shape[0] - 1) * vol.spacing[2] - extent_mm) < vol.spacing[2] + 0.01
    assert np.allclose(vol.spacing[:2], [float(v) for v in ds.PixelSpacing], atol=1e-4)
    assert np.allclose(vol.direction @ vol.direction.T, np.eye(3), atol=1e-6)
    rec_dir = out / "recon" / label
    for name in ("recon.nrrd", "fbp.nrrd"):
        rv = mio.read(rec_dir / name)
        img = sitk.ReadImage(str(rec_dir / name))               # opens outside medvol too
        assert img.GetSize() == rv.shape[::-1] == (vol.shape[2] // 4, vol.shape[1] // 4, 2)
        # 4x in-plane block averaging: spacing x4 in x/y, unchanged along z
        assert np.allclose(img.GetSpacing(), [vol.spacing[0] * 4, vol.spacing[1] * 4,
                                              vol.spacing[2]], rtol=1e-6)
        assert np.allclose(np.array(img.GetDirection()).reshape(3, 3), vol.direction, atol=1e-6)
        # voxel 0 = centre of the first 4x4 block (index 1.5, 1.5) of ingested slice 12
        assert np.allclose(img.GetOrigin(), vol.index_to_world([1.5, 1.5, 12]), atol=1e-3)
        a = sitk.GetArrayFromImage(img)
        assert np.isfinite(a).all() and -1100 < float(a.mean()) < 500   # HU range of a head
    for png in ("comparison.png", "recon_orthoslices.png"):
        with Image.open(rec_dir / png) as im:
            im.verify()
    m = summary["metrics"][label]
    assert m["recon"]["psnr_db"] > m["fbp"]["psnr_db"] > 10        # TV beats FBP at 16x
    rep = out / "report" / "report.html"
    html = rep.read_text()
    for link in ("../recon/" + label + "/comparison.png",):
        assert link in html and (rep.parent / link).is_file()
    json.loads((out / "report" / "summary.json").read_text())
    json.loads((out / "ingest" / "manifest.json").read_text())
    # no patient identifiers in any text output
    name = str(ds.PatientName)
    for p in _files(out).values():
        if p.suffix in (".json", ".html", ".nrrd"):
            text = p.read_bytes()[:4000].decode("latin-1")
            assert not name or name not in text, p
    assert not list(out.rglob("*.partial"))


def test_rerun_is_cached_and_touches_nothing(e2e, sample_dicom):
    SAMPLE = sample_dicom
    from medvol.flows.pipeline import study_pipeline

    summary, out, opts = e2e
    before = _stat(out)
    again = study_pipeline(str(SAMPLE), str(out), **opts)
    assert [s["status"] for s in again["steps"]] == ["cached"] * 3
    assert [s["computed_at"] for s in again["steps"]] == [s["computed_at"] for s in summary["steps"]]
    assert _stat(out) == before
    # Prefect's record gone (e.g. cache folder deleted): the step markers still skip the work
    for f in (out / ".medvol-cache").iterdir():
        f.unlink()
    third = study_pipeline(str(SAMPLE), str(out), **opts)
    assert [s["status"] for s in third["steps"]] == ["reused"] * 3
    assert _stat(out) == before
    # other parameters into the same folder: refused, nothing overwritten
    from medvol.errors import OutputExistsError

    with pytest.raises(OutputExistsError, match="other inputs or parameters"):
        study_pipeline(str(SAMPLE), str(out), **dict(opts, views=8))
    assert _stat(out) == before


def test_cli_run_pipeline_resumes(e2e, sample_dicom):
    SAMPLE = sample_dicom
    import typer
    from typer.testing import CliRunner

    from medvol.commands.pipeline import run_pipeline

    _, out, opts = e2e
    app = typer.Typer()
    app.command()(run_pipeline)
    args = [str(SAMPLE), "-o", str(out), "--method", opts["method"], "--n-iter",
            str(opts["n_iter"]), "--slices", opts["slices"], "--downsample",
            str(opts["downsample"]), "--views", str(opts["views"])]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "reconstruct[" in res.output and "=cached" in res.output and "PSNR" in res.output


# --------------------------------------------------------------------------- retries
def test_retry_only_transient_failures(prefect_api):
    from prefect import flow, task

    from medvol.errors import DicomError
    from medvol.flows.tasks import retry_on_transient

    calls = {"io": 0, "dicom": 0}

    @task(retries=2, retry_delay_seconds=[0, 0], retry_condition_fn=retry_on_transient)
    def flaky():
        calls["io"] += 1
        if calls["io"] == 1:
            raise OSError(5, "Input/output error")
        return "ok"

    @task(retries=2, retry_delay_seconds=[0, 0], retry_condition_fn=retry_on_transient)
    def corrupt():
        calls["dicom"] += 1
        raise DicomError("pixel data are truncated", path="x.dcm")

    @flow
    def f():
        a = flaky()
        b = corrupt(return_state=True)
        return a, b.is_failed()

    assert f() == ("ok", True)
    assert calls == {"io": 2, "dicom": 1}


# --------------------------------------------------------------------------- batches
@pytest.fixture(scope="module")
def sequential_batch(prefect_api, studies, tmp_path_factory, quick):
    QUICK = quick
    from medvol.flows.pipeline import batch_pipeline

    out = tmp_path_factory.mktemp("batch_seq")
    dirs = [str(studies[k]) for k in ("study0", "study1", "corrupt", "study2", "study3")]
    summary = batch_pipeline(dirs, str(out), runner="local", workers=1, threads=1, **QUICK)
    return summary, out


def test_batch_failed_study_does_not_stop_others(sequential_batch, prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    summary, out = sequential_batch
    by = {s["study"]: s for s in summary["studies"]}
    assert summary["n_completed"] == 4 and summary["n_failed"] == 1
    assert by["corrupt"]["status"] == "failed"
    assert "DicomError" in by["corrupt"]["error"] and "pixel data are truncated" in by["corrupt"]["error"]
    for k in ("study0", "study1", "study2", "study3"):
        assert (out / k / "recon").is_dir() and (out / k / "report" / "report.html").is_file()
    assert not (out / "corrupt" / "ingest").exists()
    disk = json.loads((out / "batch_summary.json").read_text())
    assert disk["n_failed"] == 1
    # the DicomError was not retried: the failed ingest task ran once
    with get_client(sync_client=True) as c:
        runs = c.read_task_runs(task_run_filter=TaskRunFilter(
            name=TaskRunFilterName(like_="ingest")))
    failed = [r for r in runs if r.state and r.state.is_failed()]
    assert failed and all(r.run_count == 1 for r in failed)


@pytest.mark.slow
def test_dask_batch_matches_sequential_bytes(sequential_batch, studies, tmp_path_factory, quick):
    QUICK = quick
    pytest.importorskip("prefect_dask")
    import medvol.io as mio
    from medvol.flows.pipeline import batch_pipeline

    seq, seq_out = sequential_batch
    out = tmp_path_factory.mktemp("batch_dask")
    dirs = [str(studies[k]) for k in ("study0", "study1", "corrupt", "study2", "study3")]
    summary = batch_pipeline(dirs, str(out), runner="dask", workers=2, threads=1, **QUICK)
    assert summary["n_completed"] == 4 and summary["n_failed"] == 1
    assert summary["runner"] == "dask"
    n = 0
    for k in ("study0", "study1", "study2", "study3"):
        a, b = _files(seq_out / k), _files(out / k)
        assert sorted(a) == sorted(b)
        for rel in a:
            if rel.endswith((".nrrd", ".png")):
                assert _sha(a[rel]) == _sha(b[rel]), rel        # byte-identical
                n += 1
            if rel.endswith(".nrrd"):
                va, vb = mio.read(a[rel]), mio.read(b[rel])
                assert np.array_equal(va.array, vb.array) and np.allclose(va.affine, vb.affine)
    assert n >= 4 * 5


# --------------------------------------------------------------------------- kill / resume
@pytest.mark.slow
def test_killed_after_reconstruct_then_rerun_resumes(prefect_api, studies, tmp_path, quick):
    QUICK = quick
    from medvol.flows.pipeline import study_pipeline

    study, out = studies["study1"], tmp_path / "out"
    script = tmp_path / "killme.py"
    script.write_text(textwrap.dedent(f"""
        import time
        from prefect import task
        import medvol.flows.tasks as T
        from medvol.flows.pipeline import study_pipeline

        @task(name="report")
        def hang(**kw):            # stands in for a slow step after reconstruct
            time.sleep(600)

        T.report_task = hang
        study_pipeline({str(study)!r}, {str(out)!r}, **{QUICK!r})
    """))
    env = dict(os.environ, PREFECT_API_URL=prefect_api)
    proc = subprocess.Popen([sys.executable, str(script)], env=env, cwd=str(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list(out.glob("recon/*/.medvol-step.json")):
            assert proc.poll() is None, "pipeline subprocess ended early"
            assert time.time() < deadline, "reconstruct outputs never appeared"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "report").exists()
    before = _stat(out)
    assert any(k.startswith("recon/") and k.endswith("recon.nrrd") for k in before)

    summary = study_pipeline(str(study), str(out), **QUICK)
    states = {s["step"]: s["status"] for s in summary["steps"]}
    assert states["ingest"] in ("cached", "reused") and states["reconstruct"] in ("cached", "reused")
    assert states["report"] == "computed" and summary["status"] == "completed"
    after = _stat(out)
    assert {k: v for k, v in after.items() if k in before} == before   # nothing recomputed
    assert (out / "report" / "report.html").is_file()
    assert not list(out.rglob("*.partial"))


# --------------------------------------------------------------------------- watch folder
def test_watch_inbox_flow_processes_drop_once(prefect_api, tmp_path, quick, study_factory):
    QUICK, make_study = quick, study_factory
    from medvol.flows.watch import watch_inbox

    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    make_study(inbox / "drop1", 10, n=3)
    opts = {k: v for k, v in QUICK.items()}
    r1 = watch_inbox(str(inbox), str(out), settle_seconds=0, **opts)
    r2 = watch_inbox(str(inbox), str(out), settle_seconds=0, **opts)
    assert r1["processed"] == ["drop1"] and r2 == {"processed": [], "failed": [], "skipped": []}
    assert (tmp_path / "inbox.state" / "done" / "drop1").is_dir()
    assert (out / "drop1" / "report" / "report.html").is_file()
    assert len(list((out / "drop1" / "recon").iterdir())) == 1


# --------------------------------------------------------------------------- deployments
def test_prefect_yaml_entrypoints_load(repo_root):
    REPO = repo_root
    import yaml
    from prefect.flows import load_flow_from_entrypoint

    doc = yaml.safe_load((REPO / "flows" / "prefect.yaml").read_text())
    names = {d["name"] for d in doc["deployments"]}
    assert {"medvol-nightly-batch", "medvol-watch-inbox"} <= names
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        for d in doc["deployments"]:
            fl = load_flow_from_entrypoint(d["entrypoint"])
            params = set(fl.parameters.properties)
            assert set(d.get("parameters", {})) <= params, d["name"]
            for s in d.get("schedules", []):
                assert len(s["cron"].split()) == 5
    finally:
        os.chdir(cwd)


def test_serve_deployments_and_missing_server(tmp_path):
    from medvol.commands.pipeline import build_deployments
    from medvol.errors import InputError

    (tmp_path / "inbox").mkdir()
    (tmp_path / "studies").mkdir()
    deps = build_deployments(inbox=tmp_path / "inbox", studies=tmp_path / "studies",
                             out=tmp_path / "out", cron="15 3 * * *", watch_interval=30)
    assert [d.name for d in deps] == ["medvol-nightly-batch", "medvol-watch-inbox"]
    assert deps[0].schedules[0].schedule.cron == "15 3 * * *"
    assert deps[1].schedules[0].schedule.interval.total_seconds() == 30
    with pytest.raises(InputError, match="nothing to serve"):
        build_deployments()
    # without a server, `serve` explains how to start one (fresh process: no test harness)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    code = ("from medvol.commands.pipeline import serve\n"
            "from medvol.errors import MedvolError\n"
            "try:\n"
            f"    serve(inbox={str(tmp_path / 'inbox')!r})\n"
            "except MedvolError as e:\n"
            "    print('ERR', e)\n")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert "ERR no Prefect server configured" in res.stdout, res.stdout + res.stderr
    assert "prefect server start" in res.stdout and "PREFECT_API_URL" in res.stdout


# --------------------------------------------------------------------------- registration
def test_register_flow_recovers_known_shift(prefect_api, tmp_path):
    """The register flow (affine) on two Gaussian blobs 3 voxels (6 mm) apart along x."""
    import medvol.io as mio
    from medvol.flows.pipeline import register
    from medvol.volume import Volume

    z, y, x = np.mgrid[:24, :32, :32].astype(np.float32)

    def blob(cx):
        return (100 * np.exp(-((z - 12) ** 2 / 30 + (y - 16) ** 2 / 40 + (x - cx) ** 2 / 50))
                ).astype(np.float32)

    mio.write(Volume(blob(16), spacing=(2, 2, 2)), tmp_path / "fixed.nrrd")
    mio.write(Volume(blob(19), spacing=(2, 2, 2)), tmp_path / "moving.nrrd")
    rec = register(str(tmp_path / "fixed.nrrd"), str(tmp_path / "moving.nrrd"),
                   str(tmp_path / "reg"), method="affine")
    assert rec["status"] == "computed" and "warped.nrrd" in rec["files"]
    u, grid = mio.read_displacement_field(tmp_path / "reg" / "displacement.nrrd")
    assert np.allclose(u[12, 16, 16], [6.0, 0.0, 0.0], atol=0.5)   # fixed -> moving, LPS mm
    again = register(str(tmp_path / "fixed.nrrd"), str(tmp_path / "moving.nrrd"),
                     str(tmp_path / "reg"), method="affine")
    assert again["status"] == "cached"


def test_study_pipeline_adds_register_step_on_rerun(prefect_api, studies, tmp_path, quick):
    """register=True on a finished study: ingest/recon are skipped, only register + report run."""
    import medvol.io as mio
    from medvol.flows.pipeline import study_pipeline

    out, opts = tmp_path / "out", dict(quick, slices="0:4")
    first = study_pipeline(str(studies["study2"]), str(out), **opts)
    label = first["steps"][1]["label"]
    ref = tmp_path / "reference.nrrd"          # stands in for an atlas on the same grid
    shutil.copy(out / "recon" / label / "fbp.nrrd", ref)
    second = study_pipeline(str(studies["study2"]), str(out), register=True, reference=str(ref),
                            register_method="affine", **opts)
    states = [(s["step"], s["status"]) for s in second["steps"]]
    assert states == [("ingest", "cached"), ("reconstruct", "cached"), ("register", "computed"),
                      ("report", "computed")]
    warped = mio.read(out / "register" / label / "warped.nrrd")
    assert warped.same_grid(mio.read(ref))
    assert "Registration" in (out / "report" / "report.html").read_text()


# --------------------------------------------------------------------------- training flows
@pytest.mark.slow
def test_train_pdunet_flow_trains_exports_and_resumes(prefect_api, tmp_path, shared_data):
    from safetensors import safe_open

    from medvol.flows.pipeline import train_pdunet

    w = tmp_path / "w.safetensors"
    r1 = train_pdunet("ct_x16", arch="pdunet", steps=2, batch=1, run_dir=str(tmp_path / "run"),
                      export=str(w), data=str(shared_data))
    assert r1["step"] == 2 and r1["finished"] and w.is_file()
    with safe_open(str(w), "pt") as f:
        assert len(list(f.keys())) > 0
    r2 = train_pdunet("ct_x16", arch="pdunet", steps=2, batch=1, run_dir=str(tmp_path / "run"),
                      data=str(shared_data))
    assert r2["step"] == 2 and r2["losses"] == r1["losses"]      # resumed: nothing retrained
