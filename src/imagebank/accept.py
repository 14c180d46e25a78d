"""Several server processes accepting from one listening socket: the least busy one takes each connection.

``imagebank serve`` runs its HTTP server and its DICOM listener in several processes, because one Python
interpreter runs Python code on one core at a time. Each process publishes its load (open connections or
associations) in a shared array, one slot per process; a process takes a waiting connection only while no
sibling has less, and leaves it to them for at most :data:`YIELD_FOR` (a stuck or dead sibling must never
leave a caller unanswered).

Why not let the kernel choose: with SO_REUSEPORT it hashes each connection to a process, so 4 associations
from a PACS often land 3 and 1 (or 4 and 0) on 2 processes. With a plain shared accept queue, whichever
process calls accept() first wins, which is far from even: 8 HTTP connections opened one after another
landed 7 and 1 on 2 processes, and with 2 STOW-RS clients both requests were in the same process 31% of
the time while the other process had nothing to do.
"""

from __future__ import annotations

import time
from typing import Any

#: The load of a process that is still starting: the others do not leave connections to it.
NOT_LISTENING = 1 << 30
#: How long a busier process leaves a waiting connection to the others before taking it anyway.
YIELD_FOR = 0.05
#: How often a process that is leaving a connection to its siblings looks again.
RECHECK_EVERY = 0.002


def wait_for_helpers(loads: Any, helpers: list[Any], timeout: float = 120) -> None:
    """Wait until every helper process (slots 1..n of ``loads``) accepts, one of them dies, or ``timeout``:
    ready means every process accepts, or the first one would take every connection meanwhile."""
    deadline = time.monotonic() + timeout
    while NOT_LISTENING in loads[1:] and time.monotonic() < deadline and all(h.is_alive() for h in helpers):
        time.sleep(0.05)


class AcceptTurn:
    """Whose turn it is to accept, for the process in ``slot`` of ``loads`` (a shared integer array)."""

    def __init__(self, loads: Any, slot: int) -> None:
        self.loads, self.slot = loads, slot
        self._waiting_since: float | None = None

    def publish(self, load: int) -> None:
        """Tell the siblings how busy this process is (only this process writes its slot)."""
        self.loads[self.slot] = load

    def mine(self) -> bool:
        """True when this process should accept the waiting connection now; False while a less busy
        sibling should (ask again after :data:`RECHECK_EVERY`; after :data:`YIELD_FOR` it is True)."""
        loads = self.loads[:]
        if any(other < loads[self.slot] for other in loads):
            now = time.monotonic()
            if self._waiting_since is None:
                self._waiting_since = now
            if now - self._waiting_since < YIELD_FOR:
                return False
        self._waiting_since = None
        return True
