"""The HTTP server of ``imagebank serve``: uvicorn in one or more processes sharing one listening socket.

Why several processes: one Python interpreter runs Python code on one core at a time, and a STOW-RS
request keeps it busy (receiving and splitting the body, parsing every instance). The processes are
equal: each opens its own index connections and builds its own app from the same settings, and the one
with the fewest open connections accepts each new one (:mod:`imagebank.accept`). Everything they share
lives in the index database (sessions, tokens, lockouts, the audit trail) or the data folder, so any
process can answer any request. The sign-in rate limit is counted per process (the account lockout, in
the database, is not).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from typing import Any

from imagebank.accept import RECHECK_EVERY, AcceptTurn
from imagebank.config import Settings

log = logging.getLogger(__name__)

#: At most this many HTTP processes by default (``server.processes = 0``).
DEFAULT_MAX_PROCESSES = 8

#: How much of a request body uvicorn buffers before it stops reading the socket until the app asks for
#: more (its own default is 64 KiB, a module constant with no setting). Why larger: with 64 KiB, a busy
#: process (a STOW-RS request parsing instances on its threads) reopens the TCP window a sliver at a time,
#: and the sender wakes for every sliver: measured with the benchmark's client sending 10 MB requests, its
#: CPU per CT slice went from 0.6-0.8 ms to 1.7-2.2 ms and STOW-RS fell from 370-480 to 250-300
#: instances/s (A/B, alternating rounds). 1 MiB per connection keeps memory bounded all the same.
BODY_BUFFER_BYTES = 1 << 20


def http_processes(settings: Settings) -> int:
    return settings.server.processes or max(1, min(os.cpu_count() or 1, DEFAULT_MAX_PROCESSES))


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen once, in the parent, so every process accepts from the same queue."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _BodyChunks:
    """The request-body buffer of uvicorn's httptools protocol, which only ever does ``body += chunk``,
    ``len(body)`` and ``bytes(body)`` with it, without copying: its own buffer, a ``bytearray``, copies each
    chunk twice on the event loop (appended to the buffer, then the buffer into the ``bytes`` the app
    receives). Here a chunk that the app picks up alone reaches it as the very object the parser made, and
    chunks that arrived together are joined once. For a STOW-RS request that is 10-20 MB less to copy
    per 20 CT slices, on the thread that holds the process's GIL for everything else."""

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def __iadd__(self, chunk: bytes) -> _BodyChunks:
        self._chunks.append(chunk)
        self._size += len(chunk)
        return self

    def __len__(self) -> int:
        return self._size

    def __bytes__(self) -> bytes:
        return self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)


def _http_protocol() -> type[Any]:
    """uvicorn's httptools protocol with :class:`_BodyChunks` as the buffer of each request's body."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class Protocol(HttpToolsProtocol):  # type: ignore[misc]
        def on_body(self, body: bytes) -> None:
            cycle = self.cycle
            # uvicorn starts every request, and resets after each receive(), with an empty bytearray.
            if type(cycle.body) is bytearray and not cycle.body:
                cycle.body = _BodyChunks()  # type: ignore[assignment]
            super().on_body(body)

    return Protocol


def _config(app: Any, settings: Settings) -> Any:
    import uvicorn
    from uvicorn.protocols.http import h11_impl, httptools_impl

    httptools_impl.HIGH_WATER_LIMIT = h11_impl.HIGH_WATER_LIMIT = BODY_BUFFER_BYTES

    sec = settings.security
    return uvicorn.Config(app, http=_http_protocol(), log_level="warning", ssl_certfile=sec.tls_certfile or None,
                          ssl_keyfile=sec.tls_keyfile or None, proxy_headers=bool(sec.trusted_proxies),
                          forwarded_allow_ips=",".join(sec.trusted_proxies) or None)


def serve_http(app: Any, settings: Settings, sock: socket.socket, turn: AcceptTurn | None = None) -> None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM (uvicorn's own signal handling); with ``turn``, as one
    of several processes on that socket, taking a connection only when it is this one's turn."""
    import uvicorn

    config = _config(app, settings)
    if turn is None:
        uvicorn.Server(config).run(sockets=[sock])
    else:
        _balanced_server(config, sock, turn).run()


def _balanced_server(config: Any, sock: socket.socket, turn: AcceptTurn) -> Any:
    """A uvicorn server whose process accepts from the shared ``sock`` itself, when ``turn`` says so, and
    hands each connection to uvicorn's own HTTP protocol (``loop.connect_accepted_socket``)."""
    import uvicorn

    class BalancedServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=[])  # the lifespan, uvicorn's state; no listener of its own
            self._loop = asyncio.get_running_loop()
            self._connecting: set[asyncio.Task[None]] = set()  # accepted, not yet handed to uvicorn
            self._protocol = _counted(self.config.http_protocol_class, self._publish_load)
            sock.setblocking(False)
            self._accepting = True
            self._loop.add_reader(sock.fileno(), self._on_waiting)
            self._publish_load()  # listening now (a process starts as NOT_LISTENING)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            self._accepting = False
            self._loop.remove_reader(sock.fileno())
            await super().shutdown(sockets)

        def _publish_load(self) -> None:
            turn.publish(len(self.server_state.connections) + len(self._connecting))

        def _on_waiting(self) -> None:
            if not turn.mine():  # a less busy sibling takes it; look again soon
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(RECHECK_EVERY, self._listen_again)
                return
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # a sibling took it
            except OSError as exc:  # out of file descriptors and the like: the connection waits
                log.warning("could not accept an HTTP connection: %s", exc)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._connect(conn))
            self._connecting.add(task)
            task.add_done_callback(self._connected)
            self._publish_load()

        def _connected(self, task: asyncio.Task[None]) -> None:
            self._connecting.discard(task)
            self._publish_load()

        def _listen_again(self) -> None:
            if self._accepting:  # not shutting down meanwhile
                self._loop.add_reader(sock.fileno(), self._on_waiting)

        async def _connect(self, conn: socket.socket) -> None:
            try:
                await self._loop.connect_accepted_socket(
                    lambda: self._protocol(config=self.config, server_state=self.server_state,
                                           app_state=self.lifespan.state),
                    conn, ssl=self.config.ssl)
            except OSError as exc:  # a TLS handshake that failed (ssl.SSLError), a client gone, a timeout
                log.debug("HTTP connection dropped before its first request: %s", exc)
                conn.close()

    return BalancedServer(config)


def _counted(protocol: type[Any], changed: Any) -> type[Any]:
    """``protocol`` (uvicorn's HTTP protocol class), calling ``changed()`` when a connection opens or closes."""

    class Counted(protocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            changed()

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            changed()

    return Counted


def run_http_process(settings: Settings, parent: int, sock: socket.socket, log_level: int,
                     turn: AcceptTurn | None = None) -> None:
    """Entry point of an extra HTTP process (spawned: nothing is inherited but its arguments)."""
    from imagebank.context import open_archive, open_security
    from imagebank.dicom import quiet_pydicom
    from imagebank.runtime import tune_server_process
    from imagebank.web.app import create_app

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_pydicom()
    if os.getppid() != parent:
        return  # `serve` is gone already
    archive = open_archive(settings)
    accounts, audit = open_security(settings, archive.index.engine)
    app = create_app(settings, archive, accounts, audit)
    tune_server_process()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="parent-watch").start()
    serve_http(app, settings, sock, turn)


def _exit_with_parent(parent: int) -> None:
    """`serve` killed without a chance to stop us: do not linger on its port."""
    import signal

    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
