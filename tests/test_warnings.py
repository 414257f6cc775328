"""medvol._warnings.quiet: silences inside the block, lets threads read side by side, and two
threads that overlap leave the process's warning filters exactly as they were (plain
``warnings.catch_warnings`` does not)."""
from __future__ import annotations

import threading
import time
import warnings

from medvol._warnings import quiet


def _overlap(ctx):
    """Thread A enters, B enters while A is inside, A leaves, B leaves. Returns whether B got in
    while A was still inside."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with ctx():
            a_in.set()
            b_in.wait(timeout=2)
        a_out.set()

    def b():
        a_in.wait(timeout=2)
        with ctx():
            seen["b_in_while_a_in"] = not a_out.is_set()
            b_in.set()
            a_out.wait(timeout=2)
            time.sleep(0.05)              # B still inside after A left

    ts = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=10)
        assert not t.is_alive(), "deadlock"
    return seen.get("b_in_while_a_in")


def _plain():
    cm = warnings.catch_warnings()

    class _C:
        def __enter__(self):
            cm.__enter__()
            warnings.simplefilter("ignore")

        def __exit__(self, *exc):
            return cm.__exit__(*exc)
    return _C()


def _shown(text):
    with warnings.catch_warnings(record=True) as rec:   # no filter of its own: the current ones
        warnings.warn(text, UserWarning)
    return [str(r.message) for r in rec] == [text]


def test_overlapping_threads_run_side_by_side_and_restore_the_filters():
    before = list(warnings.filters)
    assert _overlap(quiet) is True                       # no lock held during the call
    assert warnings.filters == before
    assert _shown("a warning after the blocks, first of its kind")


def test_plain_catch_warnings_leaks_an_ignore_filter_in_the_same_interleaving():
    # the defect quiet() exists for: proves the interleaving above really happens
    before = list(warnings.filters)
    try:
        _overlap(_plain)
        assert warnings.filters != before and warnings.filters[0][0] == "ignore"
        assert not _shown("a warning after the plain blocks")
    finally:
        warnings.filters[:] = before
        getattr(warnings, "_filters_mutated", lambda: None)()   # private; renamed in 3.14


def test_quiet_hides_warnings_inside_and_only_matching_ones_with_a_message():
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with quiet():
            warnings.warn("anything", UserWarning)
            with quiet():                                # nested: still quiet after the inner
                pass
            warnings.warn("still anything", UserWarning)
        with quiet("Sparse CSR"):
            warnings.warn("Sparse CSR tensor support is in beta", UserWarning)
            warnings.warn("other", UserWarning)
        warnings.warn("after", UserWarning)
    assert [str(r.message) for r in rec] == ["other", "after"]


def test_an_ignore_filter_the_process_already_had_is_kept():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = list(warnings.filters)
        with quiet():
            pass
        assert warnings.filters == before
