"""Keeping the helper processes of ``imagebank serve`` running.

``serve`` answers HTTP and DICOM in several processes that share one listening socket each, and every
process publishes its load in a shared array (:mod:`imagebank.accept`). A helper that dies (killed by the
kernel's OOM killer, an operator's ``kill -9``, a crash in a native library) would otherwise stay gone for
the life of the server, and its slot would keep the load it last published: at 0, each busier sibling
leaves every new connection to the dead process for :data:`~imagebank.accept.YIELD_FOR` before taking it.

:class:`Helpers` starts the helpers and watches them from a thread of the ``serve`` process: the moment
one exits, its slot goes back to ``NOT_LISTENING`` (the siblings stop leaving connections to it), and a
new process takes its place. One that keeps dying right after its start (a broken configuration) is
started again at most :data:`RESTARTS` times in :data:`RESTART_WINDOW` seconds, then left down, with an
error in the log.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from imagebank.accept import NOT_LISTENING

log = logging.getLogger("imagebank.serve")

#: How many times one slot's process is started again within :data:`RESTART_WINDOW` seconds.
RESTARTS = 5
RESTART_WINDOW = 60.0


class Helpers:
    """The helper processes in slots ``slots`` of ``loads``; ``make(slot)`` builds the (unstarted)
    process for a slot, the first time and after each exit."""

    def __init__(self, kind: str, loads: Any, slots: range, make: Callable[[int], BaseProcess], *,
                 restarts: int = RESTARTS, window: float = RESTART_WINDOW) -> None:
        self.kind, self.loads, self._make = kind, loads, make
        self._restarts, self._window = restarts, window
        self.processes: dict[int, BaseProcess] = {slot: make(slot) for slot in slots}
        self._exits: dict[int, deque[float]] = {slot: deque() for slot in slots}
        self._stopping = False
        self._lock = threading.Lock()
        self._wake_read, self._wake_write = os.pipe()
        self._watcher = threading.Thread(target=self._watch, name=f"{kind}-helpers", daemon=True)

    @property
    def running(self) -> list[BaseProcess]:
        with self._lock:
            return list(self.processes.values())

    def start(self) -> None:
        for process in self.running:
            process.start()
        self._watcher.start()

    def stop(self, timeout: float = 10) -> None:
        """No more restarts; terminate every helper and wait for it (kill it after ``timeout`` s)."""
        with self._lock:
            self._stopping = True
            processes = list(self.processes.values())
        os.write(self._wake_write, b"x")
        if self._watcher.is_alive():
            self._watcher.join(timeout)
        stop_processes([p for p in processes if p.pid is not None], timeout)
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _watch(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                by_sentinel = {p.sentinel: slot for slot, p in self.processes.items()}
            ready = wait([*by_sentinel, self._wake_read])
            for sentinel in ready:
                if sentinel in by_sentinel:
                    self._exited(by_sentinel[sentinel])

    def _exited(self, slot: int) -> None:
        with self._lock:
            if self._stopping:
                return
            dead = self.processes[slot]
            dead.join(1)
            # At once: until its successor listens, no sibling must leave a connection to this slot.
            self.loads[slot] = NOT_LISTENING
            now = time.monotonic()
            exits = self._exits[slot]
            exits.append(now)
            while exits and now - exits[0] > self._window:
                exits.popleft()
            if len(exits) > self._restarts:
                log.error("%s process %s exited (code %s) %d times in %.0f s: not starting it again",
                          self.kind, dead.name, dead.exitcode, len(exits), self._window)
                del self.processes[slot]
                return
            log.warning("%s process %s exited (code %s); starting it again", self.kind, dead.name, dead.exitcode)
            successor = self._make(slot)
            successor.start()
            self.processes[slot] = successor


def stop_processes(processes: list[Any], timeout: float = 10) -> None:
    """Terminate processes and wait for them; kill any still there after ``timeout`` seconds."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.1, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(5)
