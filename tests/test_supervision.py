"""``serve``'s helper processes are replaced when they die, and a dead one's load slot stops taking turns."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from typing import Any

import pytest

from imagebank.accept import NOT_LISTENING
from imagebank.supervision import Helpers

SPAWN = multiprocessing.get_context("spawn")


def _helper(loads: Any, slot: int, report: Any, exit_code: int | None) -> None:
    """What a helper does with its slot: the value it found there, then 0 (listening, no connection).

    It reports through a lock-free shared array, not a Queue: a process killed while it holds a Queue's
    lock would leave that lock held, and its successor's report would never arrive.
    """
    report[1] = loads[slot]  # what it found in its slot
    loads[slot] = 0
    report[2] += 1  # starts so far (one process at a time)
    report[0] = os.getpid()  # last: the test waits for it
    if exit_code is not None:
        raise SystemExit(exit_code)
    time.sleep(120)


def _helpers(loads: Any, report: Any, exit_code: int | None = None, **kwargs: Any) -> Helpers:
    return Helpers("test", loads, range(1, 2), lambda n: SPAWN.Process(
        target=_helper, args=(loads, n, report, exit_code), name=f"test-{n}", daemon=True), **kwargs)


def _until(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _shared() -> tuple[Any, Any]:
    """The load array (slot 0: this process, slot 1: the helper, not listening yet) and the report."""
    return SPAWN.Array("i", [0, NOT_LISTENING], lock=False), SPAWN.Array("i", [0, 0, 0], lock=False)


def test_a_killed_helper_is_replaced_and_its_slot_is_not_listening_meanwhile(caplog: pytest.LogCaptureFixture) -> None:
    loads, report = _shared()
    helpers = _helpers(loads, report)
    caplog.set_level(logging.WARNING, logger="imagebank.serve")
    helpers.start()
    try:
        _until(lambda: report[0] != 0)
        first = report[0]
        assert report[1] == NOT_LISTENING and loads[1] == 0
        os.kill(first, signal.SIGKILL)
        _until(lambda: report[0] != first)
        # The dead process's 0 was gone before its successor started: no sibling kept yielding to it.
        assert report[1] == NOT_LISTENING
        assert [p.pid for p in helpers.running] == [report[0]]
    finally:
        helpers.stop()
    assert not any(p.is_alive() for p in helpers.running)
    assert "test process test-1 exited (code -9); starting it again" in caplog.text


def test_a_helper_that_keeps_dying_is_left_down_with_an_error(caplog: pytest.LogCaptureFixture) -> None:
    loads, report = _shared()
    helpers = _helpers(loads, report, exit_code=3, restarts=2)
    caplog.set_level(logging.WARNING, logger="imagebank.serve")
    helpers.start()
    try:
        _until(lambda: not helpers.running)
        assert report[2] == 3  # the first start and two more
        assert loads[1] == NOT_LISTENING
    finally:
        helpers.stop()
    assert "exited (code 3) 3 times in 60 s: not starting it again" in caplog.text


def test_stopping_starts_nothing_again() -> None:
    loads, report = _shared()
    helpers = _helpers(loads, report)
    helpers.start()
    _until(lambda: report[0] != 0)
    before = helpers.running
    helpers.stop()  # terminates the helper: an exit the watcher must not answer with a new process
    assert helpers.running == before
    assert not any(p.is_alive() for p in before)
    assert report[2] == 1
