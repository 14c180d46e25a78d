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


def _helper(loads: Any, slot: int, started: Any, exit_code: int | None) -> None:
    """What a helper does with its slot: the value it found there, then 0 (listening, no connection)."""
    seen = loads[slot]
    loads[slot] = 0
    started.put((os.getpid(), seen))
    if exit_code is not None:
        raise SystemExit(exit_code)
    time.sleep(120)


def _helpers(loads: Any, started: Any, exit_code: int | None = None, **kwargs: Any) -> Helpers:
    return Helpers("test", loads, range(1, 2), lambda n: SPAWN.Process(
        target=_helper, args=(loads, n, started, exit_code), name=f"test-{n}", daemon=True), **kwargs)


def test_a_killed_helper_is_replaced_and_its_slot_is_not_listening_meanwhile(caplog: pytest.LogCaptureFixture) -> None:
    loads = SPAWN.Array("i", [0, NOT_LISTENING], lock=False)
    started = SPAWN.Queue()
    helpers = _helpers(loads, started)
    caplog.set_level(logging.WARNING, logger="imagebank.serve")
    helpers.start()
    try:
        first, seen = started.get(timeout=60)
        assert seen == NOT_LISTENING and loads[1] == 0
        os.kill(first, signal.SIGKILL)
        second, seen = started.get(timeout=60)
        # The dead process's 0 was gone before its successor started: no sibling kept yielding to it.
        assert second != first and seen == NOT_LISTENING
        assert [p.pid for p in helpers.running] == [second]
    finally:
        helpers.stop()
    assert not any(p.is_alive() for p in helpers.running)
    assert "test process test-1 exited (code -9); starting it again" in caplog.text


def test_a_helper_that_keeps_dying_is_left_down_with_an_error(caplog: pytest.LogCaptureFixture) -> None:
    loads = SPAWN.Array("i", [0, NOT_LISTENING], lock=False)
    started = SPAWN.Queue()
    helpers = _helpers(loads, started, exit_code=3, restarts=2)
    caplog.set_level(logging.WARNING, logger="imagebank.serve")
    helpers.start()
    try:
        for _ in range(3):  # the first start and two more
            started.get(timeout=60)
        deadline = time.monotonic() + 30
        while helpers.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not helpers.running
        assert loads[1] == NOT_LISTENING
        assert started.empty()
    finally:
        helpers.stop()
    assert "exited (code 3) 3 times in 60 s: not starting it again" in caplog.text


def test_stopping_starts_nothing_again() -> None:
    loads = SPAWN.Array("i", [0, NOT_LISTENING], lock=False)
    started = SPAWN.Queue()
    helpers = _helpers(loads, started)
    helpers.start()
    started.get(timeout=60)
    before = helpers.running
    helpers.stop()  # terminates the helper: an exit the watcher must not answer with a new process
    assert helpers.running == before
    assert not any(p.is_alive() for p in before)
