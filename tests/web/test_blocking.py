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


def _recording_app(seen: list[tuple[str, str]], *, allow: bool) -> FastAPI:
    from fastapi import Depends

    from imagebank.security.roles import Permission

    class Recording(Requirement):
        def check(self, request):  # type: ignore[no-untyped-def]
            seen.append(("check", threading.current_thread().name))
            if not allow:
                raise HTTPException(403, "refused for the test")

    app = FastAPI()

    @app.get("/pooled/{item}", dependencies=[Depends(Recording(Permission.ARCHIVE_READ))])
    @on_blocking_pool
    def pooled(item: str) -> dict[str, str]:
        seen.append(("body", threading.current_thread().name))
        return {"item": item}

    return app


class _CountingPool(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=4, thread_name_prefix="blocking")
        self.submitted = 0

    def submit(self, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        self.submitted += 1
        return super().submit(*args, **kwargs)


def test_a_pooled_route_runs_its_requirement_check_in_its_own_hop_before_its_body(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from imagebank.web import blocking

    pool = _CountingPool()
    monkeypatch.setattr(blocking, "_POOL", pool)
    seen: list[tuple[str, str]] = []
    with LiveServer(_recording_app(seen, allow=True)) as server:
        answers = [httpx.get(f"{server.url}/pooled/{n}", timeout=20) for n in range(3)]
    pool.shutdown()
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"item": str(n)}) for n in range(3)]
    # One hop per request: the check, then the body, on the same pool thread.
    assert pool.submitted == 3
    assert [what for what, _ in seen] == ["check", "body"] * 3
    assert all(name.startswith("blocking") for _, name in seen)


def test_a_refusing_check_in_the_route_hop_keeps_the_body_from_running() -> None:
    seen: list[tuple[str, str]] = []
    with LiveServer(_recording_app(seen, allow=False)) as server:
        answers = [httpx.get(f"{server.url}/pooled/{n}", timeout=20) for n in range(3)]
    assert [(a.status_code, a.json()) for a in answers] == [(403, {"detail": "refused for the test"})] * 3
    assert [what for what, _ in seen] == ["check"] * 3


def test_a_pooled_route_taking_its_requirement_as_a_parameter_fails_the_build() -> None:
    import pytest
    from fastapi import Depends

    from imagebank.security.roles import Permission
    from imagebank.web.auth import enforce_route_policies

    app = FastAPI()
    read = Depends(Requirement(Permission.ARCHIVE_READ))

    @app.get("/pooled")
    @on_blocking_pool
    def pooled(principal: object = read) -> dict[str, str]:  # it would get None: the hop checks
        return {}

    with pytest.raises(RuntimeError, match=r"dependencies=\[\.\.\.\].*/pooled"):
        enforce_route_policies(app.routes)
