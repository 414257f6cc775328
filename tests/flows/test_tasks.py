"""Unit tests of the flow building blocks: keys, markers, atomic steps, retry condition, claims.

No Prefect server is needed here (plain functions; Prefect is imported but not run)."""
from __future__ import annotations

import errno
import json
import threading
from pathlib import Path

import pytest

from medvol.errors import DicomError, InputError, OutputExistsError

pytestmark = pytest.mark.flows

import medvol.flows.tasks as T  # noqa: E402  (an ImportError here must fail, not skip)


@pytest.mark.parametrize("exc, expected", [
    (DicomError("pixel data are truncated"), False),
    (InputError("bad option"), False),
    (FileNotFoundError(errno.ENOENT, "gone"), False),
    (PermissionError(errno.EACCES, "no"), False),
    (OSError(errno.EIO, "Input/output error"), True),
    (TimeoutError("read timed out"), True),
    (ConnectionResetError("peer reset"), True),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (ValueError("a bug"), False),
    (None, False),
])
def test_is_transient(exc, expected):
    assert T.is_transient(exc) is expected


def test_step_key_depends_on_every_part():
    a = T.step_key("reconstruct", volume_sha256="x", params={"views": 16})
    assert a == T.step_key("reconstruct", params={"views": 16}, volume_sha256="x")
    assert a != T.step_key("reconstruct", volume_sha256="x", params={"views": 8})
    assert a != T.step_key("reconstruct", volume_sha256="y", params={"views": 16})
    assert a.startswith("reconstruct-") and len(a) == len("reconstruct-") + 32


def test_ingest_key_is_content_based(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (d / "a.dcm").write_bytes(b"one")
    (d / "b.dcm").write_bytes(b"two")
    (d / ".hidden").write_bytes(b"ignored")
    k = T.ingest_key(d)
    (d / "a.dcm").rename(d / "renamed.dcm")          # names do not matter
    assert T.ingest_key(d) == k
    (d / ".hidden").write_bytes(b"changed")           # hidden files are not inputs
    assert T.ingest_key(d) == k
    (d / "b.dcm").write_bytes(b"TWO")                 # contents do
    assert T.ingest_key(d) != k
    assert T.ingest_key(d, resample="never") != T.ingest_key(d)
    with pytest.raises(InputError, match="study folder not found"):
        T.ingest_key(tmp_path / "missing")


def test_run_step_computes_once_then_reuses(tmp_path):
    calls = []

    def compute(tmp: Path) -> dict:
        calls.append(tmp)
        (tmp / "x.txt").write_text("data")
        return {"files": ["x.txt"]}

    folder = tmp_path / "step"
    r1 = T.run_step("report", folder, "report-k1", compute)
    assert r1["status"] == "computed" and r1["folder"] == str(folder) and r1["files"] == ["x.txt"]
    mtime = (folder / "x.txt").stat().st_mtime_ns
    r2 = T.run_step("report", folder, "report-k1", compute)
    assert r2["status"] == "reused" and r2["computed_at"] == r1["computed_at"]
    assert len(calls) == 1 and (folder / "x.txt").stat().st_mtime_ns == mtime
    assert json.loads((folder / T.MARKER).read_text())["key"] == "report-k1"
    # other inputs/parameters: refuse to overwrite silently ...
    with pytest.raises(OutputExistsError, match="other inputs or parameters"):
        T.run_step("report", folder, "report-k2", compute)
    # ... unless asked
    r3 = T.run_step("report", folder, "report-k2", compute, overwrite=True)
    assert r3["status"] == "computed" and len(calls) == 2


def test_run_step_crash_leaves_nothing(tmp_path):
    def compute(tmp: Path) -> dict:
        (tmp / "half.nrrd").write_bytes(b"NRRD0004\n")   # half-written output ...
        raise OSError(errno.EIO, "disk went away")         # ... then a crash

    with pytest.raises(OSError):
        T.run_step("report", tmp_path / "step", "report-k", compute)
    assert list(tmp_path.iterdir()) == []                  # no folder, no temp leftovers


def test_run_step_refuses_unmarked_folder(tmp_path):
    (tmp_path / "step").mkdir()
    with pytest.raises(OutputExistsError, match="no medvol step marker"):
        T.run_step("report", tmp_path / "step", "report-k", lambda tmp: {})


def test_claim_is_exclusive_under_concurrency(tmp_path):
    from medvol.flows.watch import claim_study, state_dirs

    inbox = tmp_path / "inbox"
    (inbox / "st1").mkdir(parents=True)
    (inbox / "st1" / "a.dcm").write_bytes(b"x")
    proc = state_dirs(inbox)["processing"]
    barrier = threading.Barrier(8)
    won = []

    def worker():
        barrier.wait()
        c = claim_study(inbox / "st1", proc)
        if c is not None:
            won.append(c)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and won[0] == proc / "st1" and (won[0] / "a.dcm").is_file()
    assert not (inbox / "st1").exists()


def test_stale_claim_is_recovered(tmp_path):
    from medvol.flows.watch import claim_study, recover_stale_claims, state_dirs

    inbox = tmp_path / "inbox"
    (inbox / "st1").mkdir(parents=True)
    proc = state_dirs(inbox)["processing"]
    assert claim_study(inbox / "st1", proc) is not None
    lock = proc / ".st1.lock"
    # our own (live) claim stays
    assert recover_stale_claims(inbox, proc) == [] and (proc / "st1").is_dir()
    doc = json.loads(lock.read_text())
    doc["pid"] = 2 ** 22 + 12345                           # a pid that does not exist
    lock.write_text(json.dumps(doc))
    assert recover_stale_claims(inbox, proc) == [inbox / "st1"]
    assert (inbox / "st1").is_dir() and not lock.exists() and not (proc / "st1").exists()


def test_poll_overlap_processes_each_study_once(tmp_path):
    """Two polls running at the same time (threads) process every study exactly once."""
    import time

    from medvol.flows.watch import poll_inbox

    inbox = tmp_path / "inbox"
    for i in range(3):
        (inbox / f"st{i}").mkdir(parents=True)
        (inbox / f"st{i}" / "a.dcm").write_bytes(b"x")
    seen, lock = [], threading.Lock()

    def process(study: Path, out: Path):
        with lock:
            seen.append(study.name)
        time.sleep(0.2)
        if study.name == "st2":
            raise DicomError("pixel data are truncated", path=study / "a.dcm")

    barrier = threading.Barrier(2)
    results = []

    def poll():
        barrier.wait()
        results.append(poll_inbox(inbox, tmp_path / "out", process=process, settle_seconds=0))

    ths = [threading.Thread(target=poll) for _ in range(2)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert sorted(seen) == ["st0", "st1", "st2"]           # each exactly once
    processed = sorted(n for r in results for n in r["processed"])
    failed = [f for r in results for f in r["failed"]]
    assert processed == ["st0", "st1"] and [f["study"] for f in failed] == ["st2"]
    assert "pixel data are truncated" in failed[0]["error"]
    state = tmp_path / "inbox.state"
    assert sorted(p.name for p in (state / "done").iterdir()) == ["st0", "st1"]
    assert (state / "failed" / "st2").is_dir()
    assert "truncated" in (state / "failed" / "st2.error.txt").read_text()
    assert list(inbox.iterdir()) == [] and list((state / "processing").iterdir()) == []
    # a later poll finds nothing; a study dropped again under the same name gets a free name
    (inbox / "st0").mkdir()
    poll_inbox(inbox, tmp_path / "out", process=lambda s, o: None, settle_seconds=0)
    assert sorted(p.name for p in (state / "done").iterdir()) == ["st0", "st0.2", "st1"]


def test_poll_waits_for_settled_studies(tmp_path):
    from medvol.flows.watch import poll_inbox

    inbox = tmp_path / "inbox"
    (inbox / "fresh").mkdir(parents=True)
    (inbox / ".copying").mkdir()
    r = poll_inbox(inbox, tmp_path / "out", process=lambda s, o: pytest.fail("too early"),
                   settle_seconds=3600)
    assert r == {"processed": [], "failed": [], "skipped": ["fresh"]}


def test_runners():
    from prefect.task_runners import ThreadPoolTaskRunner

    from medvol.errors import BackendError
    from medvol.flows.runners import make_task_runner

    assert isinstance(make_task_runner("local", workers=3), ThreadPoolTaskRunner)
    with pytest.raises(InputError, match="unknown runner"):
        make_task_runner("spark")
    with pytest.raises(InputError, match="--scheduler needs"):
        make_task_runner("local", address="tcp://x:8786")
    pytest.importorskip("prefect_dask")
    r = make_task_runner("dask", workers=2, gpus_per_worker=1)
    assert r.cluster_kwargs["n_workers"] == 2 and r.cluster_kwargs["threads_per_worker"] == 1
    assert r.cluster_kwargs["resources"] == {"GPU": 1}
    assert make_task_runner("dask", address="tcp://10.0.0.1:8786").address == "tcp://10.0.0.1:8786"
    try:
        import prefect_ray  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match="prefect-ray"):
            make_task_runner("ray")
