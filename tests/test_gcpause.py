"""The garbage-collector pause used around bulk JSON work (client pull, local Label Studio requests)."""

from __future__ import annotations

import gc
import threading

import pytest

from spinetrack_tools.gcpause import gc_paused


@pytest.fixture(autouse=True)
def collector_on():
    gc.enable()
    yield
    gc.enable()


def test_paused_inside_nested_blocks_and_restored_after_the_outermost():
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer block is still open
    assert gc.isenabled()


def test_restored_after_an_exception():
    with pytest.raises(ValueError):
        with gc_paused():
            raise ValueError
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()


def test_overlapping_blocks_of_two_threads_resume_only_when_both_end():
    entered, release = threading.Event(), threading.Event()

    def other():
        with gc_paused():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=other)
    with gc_paused():
        t.start()
        assert entered.wait(10)
    assert not gc.isenabled()  # the other thread's block is still open
    release.set()
    t.join(10)
    assert gc.isenabled()
