"""The HTTP server of ``imagebank serve``: uvicorn in one or more processes sharing one listening socket.

Why several processes: one Python interpreter runs Python code on one core at a time, and a STOW-RS
request keeps it busy (receiving and splitting the body, parsing every instance). The processes are
equal: each opens its own index connections and builds its own app from the same settings, and the kernel
hands each new connection to one of them. Everything they share lives in the index database (sessions,
tokens, lockouts, the audit trail) or the data folder, so any process can answer any request. The sign-in
rate limit is counted per process (the account lockout, in the database, is not).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

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


def _config(app: Any, settings: Settings) -> Any:
    import uvicorn
    from uvicorn.protocols.http import h11_impl, httptools_impl

    httptools_impl.HIGH_WATER_LIMIT = h11_impl.HIGH_WATER_LIMIT = BODY_BUFFER_BYTES

    sec = settings.security
    return uvicorn.Config(app, log_level="warning", ssl_certfile=sec.tls_certfile or None,
                          ssl_keyfile=sec.tls_keyfile or None, proxy_headers=bool(sec.trusted_proxies),
                          forwarded_allow_ips=",".join(sec.trusted_proxies) or None)


def serve_http(app: Any, settings: Settings, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM (uvicorn's own signal handling)."""
    import uvicorn

    uvicorn.Server(_config(app, settings)).run(sockets=[sock])


def run_http_process(settings: Settings, parent: int, sock: socket.socket, log_level: int) -> None:
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
    serve_http(app, settings, sock)


def _exit_with_parent(parent: int) -> None:
    """`serve` killed without a chance to stop us: do not linger on its port."""
    import signal

    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
