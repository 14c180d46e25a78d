"""Blocking calls (database, files) made from the event loop, on one plain thread pool.

Starlette runs a sync route or dependency through AnyIO (``run_in_threadpool``): a capacity limiter, a
cancel scope and context-variable lookups around every call. For a short request that machinery costs more
event-loop CPU than the work it hands off; profiled on an empty QIDO-RS answer, the two AnyIO hops of a
request (its authorization dependency, then its route) were the largest single cost, about a quarter of
the server's CPU. The DICOMweb routes (:func:`on_blocking_pool`) and :class:`~imagebank.web.auth.Requirement`
hand their blocking work to :func:`run_blocking` instead: ``loop.run_in_executor`` on a standard thread
pool, one per process, as many threads as AnyIO's default limit (measured on QIDO-RS: 0.1 ms less server
CPU per request, p95 0.2-0.4 ms lower). Nothing here reads context variables, so not copying them to the
worker loses nothing.

A route under :func:`on_blocking_pool` also takes its authorization check into its own hop: the
:class:`~imagebank.web.auth.Requirement` dependency leaves the check to the route (:func:`defer_to_route_hop`),
and the route's hop runs it before the route body, so a request pays one pool hop instead of two (measured
on the series of a study, 600 alternating queries: p50 0.13 ms lower, p95 0.19 ms lower).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from starlette.requests import Request

T = TypeVar("T")
P = ParamSpec("P")

#: AnyIO's default thread limit, which this pool replaces for the routes that use it.
WORKERS = 40

#: Threads start on demand (on a submit finding none idle), so building the pool at import costs nothing.
_POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="blocking")


async def run_blocking(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` on the blocking pool; the event loop serves other requests meanwhile."""
    if kwargs:
        call = functools.partial(call, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_POOL, call, *args)


#: Marks the endpoints made by :func:`on_blocking_pool` (they run a deferred check before their body).
RUNS_DEFERRED_CHECK = "_imagebank_runs_deferred_check"

#: The check a dependency of the current request left to its route's hop. A dependency and its route run in
#: the same task, so the route sees what the dependency set, and no other request does.
_deferred_check: ContextVar[Callable[[], object] | None] = ContextVar("imagebank_deferred_check", default=None)


def defer_to_route_hop(request: Request, check: Callable[[], object]) -> bool:
    """Leave ``check`` to the route's own hop when the route runs on the blocking pool; ``False`` when it does
    not (the caller must run the check itself). The route runs ``check`` before its body, and a raising check
    (401, 403) means the body never runs."""
    if not getattr(request.scope.get("endpoint"), RUNS_DEFERRED_CHECK, False):
        return False
    _deferred_check.set(check)
    return True


def _checked_then(check: Callable[[], object] | None, route: Callable[..., T], args: Any, kwargs: Any) -> T:
    if check is not None:
        check()
    return route(*args, **kwargs)


def on_blocking_pool(route: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """Decorate a sync route (under ``@router.get``): FastAPI sees a coroutine and awaits it, and the body
    runs on the blocking pool, one hop instead of AnyIO's, after the check its dependencies deferred
    (:func:`defer_to_route_hop`). The signature FastAPI reads is the route's own."""

    @functools.wraps(route)
    async def on_pool(*args: P.args, **kwargs: P.kwargs) -> T:
        check = _deferred_check.get()
        if check is not None:
            _deferred_check.set(None)
        return await run_blocking(_checked_then, check, route, args, kwargs)

    setattr(on_pool, RUNS_DEFERRED_CHECK, True)
    return on_pool
