"""medvol._threads.set_threads pins torch AND the numba kernels (a subprocess: both are global)."""
import os
import subprocess
import sys

import pytest

CODE = r"""
import numba, torch
from medvol._threads import set_threads
numba.get_num_threads()        # launch numba's threading layer first: with OpenMP it resets torch's count
n0 = (torch.get_num_threads(), numba.get_num_threads())
set_threads(None)
assert (torch.get_num_threads(), numba.get_num_threads()) == n0, "None must leave both alone"
set_threads(1)
assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
set_threads(2)
assert torch.get_num_threads() == 2 and numba.get_num_threads() == 2
set_threads(10_000)            # above numba's start-up count: capped there, torch takes it
assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
print("ok")
"""


@pytest.mark.parametrize("omp", ["1", "2"])   # CI runs with OMP_NUM_THREADS=1
def test_set_threads_pins_torch_and_numba(omp):
    pytest.importorskip("numba")
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": omp})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_pdunet_training_pins_numba_to_its_threads(monkeypatch):
    """train_pdunet(threads=N) goes through set_threads (not torch alone)."""
    import medvol._threads as th
    from medvol.recon import pdunet

    seen = []
    monkeypatch.setattr(th, "set_threads", lambda n: seen.append(n))
    with pytest.raises(Exception):        # stops at the next check: no data given
        pdunet.train_pdunet(task="ct_x16", steps=1, threads=1, data="/nonexistent-medvol-data")
    assert seen == [1]
