"""Blocking work of async routes runs on the plain thread pool, concurrently, off the event loop."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from fastapi import FastAPI, HTTPException

from imagebank.web.auth import Requirement
from imagebank.web.blocking import on_blocking_pool
from tests.conftest import LiveServer


def _app(barrier: threading.Barrier) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item}")
    @on_blocking_pool
    def item(item: str, size: int = 1) -> dict[str, object]:
        if item == "missing":
            raise HTTPException(404, "no such item")
        barrier.wait()  # both requests must be inside a route body at once: neither holds the event loop
        return {"item": item, "size": size, "thread": threading.current_thread().name}

    return app


def test_decorated_route_keeps_its_signature_and_runs_concurrently_on_the_pool() -> None:
    barrier = threading.Barrier(2, timeout=10)
    with LiveServer(_app(barrier)) as server, httpx.Client(base_url=server.url, timeout=20) as client:
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda n: client.get(f"/items/a{n}", params={"size": n}), (1, 2)))
        assert [a.status_code for a in answers] == [200, 200]
        bodies = [a.json() for a in answers]
        assert [(b["item"], b["size"]) for b in bodies] == [("a1", 1), ("a2", 2)]
        assert all(b["thread"].startswith("blocking") for b in bodies)
        # FastAPI still reads the route's own parameters (validation) and its exceptions (status, detail).
        assert client.get("/items/a", params={"size": "big"}).status_code == 422
        missing = client.get("/items/missing")
        assert (missing.status_code, missing.json()) == (404, {"detail": "no such item"})


def test_requirement_checks_on_the_pool_thread() -> None:
    seen: list[str] = []

    class Recording(Requirement):
        def check(self, request):  # type: ignore[no-untyped-def]
            seen.append(threading.current_thread().name)
            raise HTTPException(403, "refused for the test")

    from fastapi import Depends

    from imagebank.security.roles import Permission

    app = FastAPI()

    @app.get("/guarded", dependencies=[Depends(Recording(Permission.ARCHIVE_READ))])
    def guarded() -> dict[str, str]:
        return {"reached": "yes"}

    with LiveServer(app) as server:
        answer = httpx.get(f"{server.url}/guarded", timeout=20)
    assert (answer.status_code, answer.json()) == (403, {"detail": "refused for the test"})
    assert len(seen) == 1 and seen[0].startswith("blocking")
