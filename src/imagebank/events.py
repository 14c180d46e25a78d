"""A tiny synchronous event bus.

The ingest pipeline announces what it stored; priors prefetch, research loading and sharing subscribe
instead of being imported by the pipeline (see CONVENTIONS.md, "Event hooks instead of cross-imports").
Handlers run after the database commit, so they only ever see durable state. A failing handler is
logged and never undoes or fails the ingest that triggered it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

INSTANCE_STORED = "instance.stored"


@dataclass(frozen=True)
class InstanceStored:
    """Payload of :data:`INSTANCE_STORED`: identifiers only, never patient demographics."""

    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    sop_class_uid: str
    replaced: bool
    origin: str


Handler = Callable[[Any], None]


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)

    def subscribe(self, name: str, handler: Handler) -> None:
        self._handlers[name].append(handler)

    def unsubscribe(self, name: str, handler: Handler) -> None:
        self._handlers[name].remove(handler)

    def emit(self, name: str, payload: Any) -> None:
        for handler in list(self._handlers.get(name, ())):
            try:
                handler(payload)
            except Exception:  # a subscriber must never break ingest
                log.exception("event handler %r for %s failed", handler, name)
