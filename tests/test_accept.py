"""Whose turn it is to accept a connection among processes sharing one listening socket."""

from __future__ import annotations

import time

from imagebank.accept import YIELD_FOR, AcceptTurn


def test_the_least_busy_process_accepts_and_a_busier_one_only_after_its_grace_period() -> None:
    loads = [0, 0, 0]
    first, second = AcceptTurn(loads, 0), AcceptTurn(loads, 1)
    assert first.mine() and second.mine()  # equally idle: whoever polls first
    first.publish(2)
    second.publish(1)
    assert loads == [2, 1, 0]
    assert not first.mine()  # the idle third process takes it
    time.sleep(YIELD_FOR)
    assert first.mine(), "a sibling that does not take it (stuck, dying) never leaves a caller waiting"
    assert not second.mine(), "each process counts its own grace period, from when it first had to wait"
    loads[2] = 5
    assert second.mine() and not first.mine()
