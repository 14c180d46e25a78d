"""Event-driven association threads for the DICOM listener (pynetdicom 3.0, pinned).

pynetdicom runs two threads per association that poll: the DUL thread sleeps a millisecond whenever it
found nothing to do, then looks at the socket and its outgoing queue again; the association thread sleeps a
millisecond before every look at the decoded-message queue (pynetdicom's own ``dul.py`` calls this a TODO:
"try and make this event based"). Measured on the 2-core benchmark machine, one idle association cost 11% of
a core, and every C-STORE waited for up to three of those sleeps (request decoded, handler started,
response sent).

Here both threads wait for their work instead, with everything else left to pynetdicom (state machine,
ACSE, DIMSE, service classes, event handlers):

- the DUL thread waits in ``poll`` on its socket and a wake-up socket pair, which the association thread
  writes to whenever it queues a PDU to send;
- the association thread waits on an event that is set whenever a decoded DIMSE message or an ACSE
  primitive (release, abort) is queued for it, when the DUL thread ends, and when it is killed.

Both waits are bounded (:data:`MAX_WAIT`) so the time-based checks (ARTIM and network idle timers) still run.
The socket also reads a whole PDU at a time (pynetdicom reads in 4 KiB pieces).
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import threading
import time
from copy import deepcopy
from datetime import datetime
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler

LOGGER = logging.getLogger("pynetdicom")  # pynetdicom's own log, as the code replaced here logs

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)

#: The longest either thread waits without looking at its timers (seconds).
MAX_WAIT = 0.05


class SignallingQueue(queue.Queue):  # type: ignore[type-arg]
    """A queue that sets ``signal`` whenever something is put into it."""

    def __init__(self, signal: threading.Event) -> None:
        super().__init__()
        self.signal = signal

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.signal.set()


class WholePduSocket(AssociationSocket):
    """Reads what the DUL asks for (a whole PDU) into one buffer instead of 4 KiB at a time, and
    acknowledges what it read at once.

    Why the quick acknowledgement (Linux ``TCP_QUICKACK``, which the kernel drops again after a while, so it
    is set after every read): a sender that keeps Nagle's algorithm on holds the short last piece of a data
    set until the data before it is acknowledged, and a receiver in delayed-ACK mode acknowledges an odd
    last segment only after 40 ms. Measured with dcmtk's storescu: one C-STORE in ten waited those 40 ms.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        sock = self.socket
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # our responses are whole PDUs

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        if sock is None:
            return bytearray()
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        received = 0
        while received < nr_bytes:
            count = sock.recv_into(view[received:], nr_bytes - received)
            if not count:  # connection closed: what arrived so far (as pynetdicom's recv)
                del view
                del buffer[received:]
                return buffer
            received += count
        if _QUICKACK is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                pass  # not TCP (a test's socket pair)
        return buffer


class EventDrivenDUL(DULServiceProvider):
    """pynetdicom's DUL provider, waiting on its socket and a wake-up pair instead of sleeping."""

    def __init__(self, assoc: EventDrivenAssociation) -> None:
        super().__init__(assoc)
        self._association_wakeup = assoc.wakeup
        # The association thread waits on this queue's signal (release and abort requests arrive here).
        self.to_user_queue = SignallingQueue(assoc.wakeup)
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)
        self._poller = select.poll()
        self._polled = -2  # the socket registered with _poller (-1: none)

    def wake(self) -> None:
        try:
            self._wake_out.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or the thread is gone

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self.wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self.wake()
        return bool(super().stop_dul())

    def _wait_for_work(self) -> None:
        """Until data arrives, a primitive is queued to send, or :data:`MAX_WAIT` passes."""
        if not self.to_provider_queue.empty():
            return
        sock = getattr(self.socket, "socket", None)
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return
        # poll, not select: select refuses file descriptors past 1024, which a busy server reaches.
        try:
            fileno = sock.fileno() if sock is not None else -1
            if fileno != self._polled:
                self._poller = select.poll()
                self._poller.register(self._wake_in, select.POLLIN)
                if fileno >= 0:
                    self._poller.register(fileno, select.POLLIN)
                self._polled = fileno
            ready = self._poller.poll(MAX_WAIT * 1000)
        except (OSError, ValueError):  # the socket was closed under us: the next loop notices
            time.sleep(self._run_loop_delay)
            return
        if any(fd == self._wake_in.fileno() for fd, _ in ready):
            try:
                while self._wake_in.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass

    def run_reactor(self) -> None:
        """pynetdicom 3.0.4's ``DULServiceProvider.run_reactor`` with :meth:`_wait_for_work` where it slept."""
        try:
            self._run()
        finally:
            self._wake_in.close()
            self._wake_out.close()
            self._association_wakeup.set()  # the association notices the DUL has ended

    def _run(self) -> None:
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                idle = True
            if idle:
                self._wait_for_work()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:  # noqa: BLE001 - as pynetdicom: abort the association, never the process
                LOGGER.exception("Exception in DUL.run(), aborting association")
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                if self.socket is not None:
                    self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False


class EventDrivenAssociation(Association):
    """An acceptor association whose reactor waits for messages instead of polling every millisecond."""

    def __init__(self, ae: Any, mode: str) -> None:
        self.wakeup = threading.Event()
        super().__init__(ae, mode)
        self.dul = EventDrivenDUL(self)
        self.dimse.msg_queue = SignallingQueue(self.wakeup)
        # The timeouts live partly in the DUL's timers: set them again on the new DUL.
        self.acse_timeout = self.ae.acse_timeout
        self.connection_timeout = self.ae.connection_timeout
        self.network_timeout = self.ae.network_timeout

    def kill(self) -> None:
        self.wakeup.set()
        super().kill()

    def _run_reactor(self) -> None:
        """pynetdicom 3.0.4's acceptor reactor loop, waiting on :attr:`wakeup` where it slept 1 ms."""
        self._is_paused = False
        busy = True
        while not self._kill:
            self._is_paused = True  # paused while waiting: whoever pauses the reactor need not wait for it
            if not busy:
                self.wakeup.wait(MAX_WAIT)
            self.wakeup.clear()  # before looking: a message queued from now on sets it again
            self._reactor_checkpoint.wait()
            self._is_paused = False
            busy = False

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                busy = True
                self._serve_request(msg, context_id)  # type: ignore[arg-type]

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                LOGGER.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)  # so EVT_ACSE_RECV fires for subscribers
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class EventDrivenRequestHandler(RequestHandler):
    """Creates :class:`EventDrivenAssociation` acceptors, configured as pynetdicom 3.0.4's
    ``RequestHandler._create_association`` configures its own."""

    def _create_association(self) -> Association:
        server: Any = self.server
        assoc = EventDrivenAssociation(self.ae, "acceptor")
        assoc._server = server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(WholePduSocket(assoc, client_socket=self.request))
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(server.contexts)
        assoc.requestor.address_info = self.remote
        for event in server._handlers:
            if event.is_intervention and server._handlers[event]:
                assoc.bind(event, *server._handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in server._handlers[event]:
                    assoc.bind(event, handler[0], handler[1])
        return assoc
