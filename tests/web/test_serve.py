"""``imagebank serve`` over real HTTP on loopback, and its home page in a real browser."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, wait_until_serving
from tests.test_cli import run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "radiology rocks 42"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("served")
    assert run("demo", "--patients", "2", "--seed", "5", "--metadata-only", "--no-progress", data=data).returncode == 0
    added = subprocess.run([sys.executable, "-m", "imagebank.cli", "--data", str(data), "users", "add", "alice",
                            "--role", "radiologist", "--password-stdin"], input=PASSWORD + "\n", text=True,
                           capture_output=True)
    assert added.returncode == 0, added.stderr
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
    env["IMAGEBANK_DICOM__PORT"] = str(free_port())  # parallel servers must not share the DICOM port
    proc = subprocess.Popen([sys.executable, "-m", "imagebank.cli", "--data", str(data), "serve", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    assert wait_until_serving(f"{base}/healthz", proc).status_code == 200
    yield base
    proc.terminate()
    proc.wait(10)


def _client(served: str) -> httpx.Client:
    client = httpx.Client(base_url=served)
    assert client.post("/api/login", json={"username": "alice", "password": PASSWORD}).status_code == 200
    return client


def test_stats_api_needs_sign_in(served: str) -> None:
    assert httpx.get(f"{served}/api/stats").status_code == 401
    stats = _client(served).get("/api/stats").json()
    assert stats["patients"] == 2 and stats["instances"] > 0


def test_home_page_redirects_to_sign_in_then_lists_studies(served: str) -> None:
    anonymous = httpx.get(served, headers={"accept": "text/html"})
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login"
    page = _client(served).get("/")
    assert page.status_code == 200 and "Recent studies" in page.text and "MRN005" in page.text


def test_unknown_route_is_a_clean_404(served: str) -> None:
    response = httpx.get(f"{served}/no/such/page")
    assert response.status_code == 404 and "Traceback" not in response.text


def _require_browser() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI requires Debian chromium for browser tests")
        pytest.skip("Debian chromium not installed")


def test_home_page_in_a_real_browser(served: str, tmp_path: Path) -> None:
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.goto(served)
        assert page.title() == "Sign in - Imagebank"  # sent to the sign-in page first
        page.fill("#username", "alice")
        page.fill("#password", "wrong password at first")
        page.click("#sign-in")
        assert "wrong password" in page.locator("#error").inner_text()
        page.fill("#username", "alice")
        page.fill("#password", PASSWORD)
        page.click("#sign-in")
        page.wait_for_url(served + "/")
        assert page.title() == "Imagebank"
        assert page.locator("#user").inner_text() == "alice"
        rows = page.locator("#studies tbody tr")
        assert rows.count() >= 2
        assert page.locator("#n-patients").inner_text() == "2"
        page.screenshot(path=str(tmp_path / "home.png"))
        page.click("#sign-out")
        page.wait_for_url(served + "/login")
        browser.close()


def test_first_start_creates_an_admin_whose_printed_password_works(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
    env["IMAGEBANK_DICOM__PORT"] = str(free_port())  # parallel servers must not share the DICOM port
    proc = subprocess.Popen([sys.executable, "-m", "imagebank.cli", "--data", str(tmp_path / "d"), "serve",
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(4)]  # type: ignore[union-attr]
        created = next(line for line in lines if "created user 'admin'" in line)
        password = created.split("password", 1)[1].strip()
        wait_until_serving(f"http://127.0.0.1:{port}/healthz", proc)
        response = httpx.post(f"http://127.0.0.1:{port}/api/login", json={"username": "admin", "password": password})
        assert response.status_code == 200 and "admin" in response.json()["roles"]
        started = [e for e in _audit(tmp_path / "d") if "configuration" in e]
        assert started, "the server start and its configuration digest are audited"
    finally:
        proc.terminate()
        proc.wait(10)


def _audit(data: Path) -> list[str]:
    return run("audit", "query", data=data).stdout.splitlines()


def test_http_processes_share_the_port_and_go_with_the_server(tmp_path: Path) -> None:
    """``server.processes``: every process answers on the one port, signed-in sessions work in all of them
    (they live in the index), and a killed ``serve`` takes its processes with it (the port is free again)."""
    import signal
    import time
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
    env.update(IMAGEBANK_DICOM__ENABLED="false", IMAGEBANK_SERVER__PROCESSES="3")
    proc = subprocess.Popen([sys.executable, "-m", "imagebank.cli", "--data", str(tmp_path / "d"), "serve",
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(5)]  # type: ignore[union-attr]
        password = next(line for line in lines if "created user 'admin'" in line).split("password", 1)[1].strip()
        assert any("HTTP: 3 process(es)" in line for line in lines), lines
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{base}/healthz", proc)
        workers = [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
        assert len(workers) == 2
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(  # each process listens once its app is built
                any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in w.net_connections())
                for w in workers):
            time.sleep(0.2)
        with httpx.Client(base_url=base) as client:
            assert client.post("/api/login", json={"username": "admin", "password": password}).status_code == 200
            cookies = client.cookies

        def me(_: int) -> int:
            with httpx.Client(base_url=base, cookies=cookies) as fresh:  # a new connection each time
                return fresh.get("/api/me").status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(me, range(60))) == {200}
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for worker in workers:
            worker.wait(15)  # each notices its parent is gone
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{base}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_sigterm_stops_serve_with_all_its_processes(tmp_path: Path) -> None:
    """A service manager's SIGTERM: ``serve`` shuts down, and its DICOM and HTTP processes are gone when it
    exits (uvicorn re-raises SIGTERM after its own shutdown; that must not skip stopping them)."""
    import signal

    import psutil

    port, dicom_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
    env.update(IMAGEBANK_DICOM__PORT=str(dicom_port), IMAGEBANK_DICOM__PROCESSES="2", IMAGEBANK_SERVER__PROCESSES="2")
    proc = subprocess.Popen([sys.executable, "-m", "imagebank.cli", "--data", str(tmp_path / "d"), "serve",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/healthz", proc)
        children = [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
        assert len(children) == 2  # one more DICOM listener, one more HTTP process
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        assert not {port, dicom_port} & listening
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_uvicorn_buffers_a_megabyte_of_request_body_before_it_stops_reading(tmp_path: Path) -> None:
    # The STOW-RS sender's CPU depends on it (web.server.BODY_BUFFER_BYTES says why); uvicorn has no setting
    # for it, so this fails as soon as an upgrade renames the constant the server sets.
    from uvicorn.protocols.http import h11_impl, httptools_impl

    from imagebank.config import load_settings
    from imagebank.web import server

    config = server._config(object(), load_settings(tmp_path, environ={}))
    assert config is not None and server.BODY_BUFFER_BYTES == 1 << 20
    assert httptools_impl.HIGH_WATER_LIMIT == h11_impl.HIGH_WATER_LIMIT == server.BODY_BUFFER_BYTES
    assert "HIGH_WATER_LIMIT" in vars(httptools_impl) and "HIGH_WATER_LIMIT" in vars(h11_impl)


def test_each_new_connection_goes_to_the_http_process_with_the_fewest(tmp_path: Path) -> None:
    """``serve`` answers once all its HTTP processes accept, and the one with the fewest open connections
    accepts each new one: 8 connections opened one after the other end up 4 and 4 (whoever called accept()
    first used to win: 7 and 1, and 2 STOW-RS clients shared one process's core a third of the time)."""
    import socket
    import time

    import psutil

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
    env.update(IMAGEBANK_DICOM__ENABLED="false", IMAGEBANK_SERVER__PROCESSES="2")
    proc = subprocess.Popen([sys.executable, "-m", "imagebank.cli", "--data", str(tmp_path / "d"), "serve",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    clients: list[socket.socket] = []
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/healthz", proc)
        server = psutil.Process(proc.pid)
        processes = [server, *(c for c in server.children() if "spawn_main" in " ".join(c.cmdline()))]
        assert len(processes) == 2

        def open_connections() -> list[int]:
            return [sum(1 for c in p.net_connections() if c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)
                    for p in processes]

        while any(open_connections()):  # serving means both accept: no waiting for the second one here
            time.sleep(0.05)
        for _ in range(8):
            clients.append(socket.create_connection(("127.0.0.1", port)))
            time.sleep(0.1)  # an idle connection: it counts as long as it is open
        assert open_connections() == [4, 4]
        for client in clients:  # and they are served
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        for client in clients:
            client.close()
        proc.terminate()
        proc.wait(10)


def test_a_killed_http_process_is_replaced_while_serve_goes_on(tmp_path: Path) -> None:
    """An HTTP process killed under ``serve`` (``kill -9``, the OOM killer) is started again, and the port
    keeps answering meanwhile."""
    import signal
    import time

    import psutil

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
    env.update(IMAGEBANK_DICOM__ENABLED="false", IMAGEBANK_SERVER__PROCESSES="2")
    proc = subprocess.Popen([sys.executable, "-m", "imagebank.cli", "--data", str(tmp_path / "d"), "serve",
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{base}/healthz", proc)
        (helper,) = [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
        helper.send_signal(signal.SIGKILL)
        helper.wait(10)
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200  # the first process answers
        deadline = time.monotonic() + 60
        successors: list[psutil.Process] = []
        while not successors and time.monotonic() < deadline:
            successors = [c for c in psutil.Process(proc.pid).children()
                          if "spawn_main" in " ".join(c.cmdline()) and c.pid != helper.pid]
            time.sleep(0.1)
        assert len(successors) == 1
        while time.monotonic() < deadline and not any(
                c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in successors[0].net_connections()):
            time.sleep(0.1)
        with httpx.Client(base_url=base) as client:
            assert {client.get("/healthz").status_code for _ in range(20)} == {200}
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
        assert "HTTP process http-1 exited (code -9); starting it again" in output
        assert not successors[0].is_running() or successors[0].status() == psutil.STATUS_ZOMBIE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_request_bodies_reach_the_app_whole_through_the_chunk_buffer(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The server's HTTP protocol keeps each request's body chunks in web.server._BodyChunks, not in uvicorn's
    # bytearray (two copies of every chunk less on the event loop): a 6 MB body sent in pieces over loopback
    # arrives byte for byte, through that buffer (this fails when an upgrade of uvicorn bypasses it).
    import asyncio
    import hashlib
    import socket
    import threading

    import uvicorn

    from imagebank.config import load_settings
    from imagebank.web import server

    through_buffer = []
    original = server._BodyChunks.__bytes__
    monkeypatch.setattr(server._BodyChunks, "__bytes__", lambda self: through_buffer.append(len(self)) or original(self))

    async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        digest, more = hashlib.sha256(), True
        while more:
            message = await receive()
            digest.update(message["body"])
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": digest.hexdigest().encode()})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    uv = uvicorn.Server(server._config(app, load_settings(tmp_path, environ={})))
    thread = threading.Thread(target=lambda: asyncio.run(uv.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        body = os.urandom(6 << 20)
        pieces = (body[i:i + 300_000] for i in range(0, len(body), 300_000))
        deadline = 50
        while not uv.started and deadline:
            deadline -= 1
            threading.Event().wait(0.1)
        response = httpx.post(f"http://127.0.0.1:{sock.getsockname()[1]}/", content=pieces, timeout=30)
        assert response.status_code == 200
        assert response.text == hashlib.sha256(body).hexdigest()
        assert sum(through_buffer) == len(body)
    finally:
        uv.should_exit = True
        thread.join(10)
        sock.close()


def test_the_body_chunk_buffer_hands_over_a_lone_chunk_uncopied() -> None:
    from imagebank.web.server import _BodyChunks

    chunk = os.urandom(1000)
    buffer = _BodyChunks()
    buffer += chunk
    assert len(buffer) == 1000 and bytes(buffer) is chunk
    buffer += b"tail"
    assert len(buffer) == 1004 and bytes(buffer) == chunk + b"tail"
    assert not _BodyChunks() and bytes(_BodyChunks()) == b""
