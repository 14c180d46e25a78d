"""A STOW-RS request's life cycle inside the server process: its stagers and the clean-up after a failure.

The HTTP behaviour (statuses, bodies, bad input) is tested over loopback in test_dicomweb.py; these tests
drive :class:`StowRequest` directly to reach moments a client cannot choose, such as a request cancelled
while one of its parts is being staged.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from imagebank.archive import Archive
from imagebank.dicomweb.stow import StowRequest

BOUNDARY = "unit-boundary"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def _body(*parts: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return b"".join(head + part + b"\r\n" for part in parts) + f"--{BOUNDARY}--\r\n".encode()


async def _chunks(body: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


def _request(archive: Archive, tmp_path: Path, executor: ThreadPoolExecutor) -> StowRequest:
    return StowRequest(archive, CONTENT_TYPE, None, max_bytes=1 << 30, parallelism=2, spool_dir=str(tmp_path),
                       executor=executor)


def test_parts_are_staged_by_a_few_stagers_and_answered_in_body_order(
        archive: Archive, make_instance: Callable[..., bytes], tmp_path: Path) -> None:
    parts = [make_instance(n) for n in range(1, 8)] + [b"not dicom at all"]

    async def scenario() -> Any:
        with ThreadPoolExecutor(8) as executor:
            stow = _request(archive, tmp_path, executor)
            await stow.consume(_chunks(_body(*parts)))
            assert len(stow._stagers) == 2  # parallelism, not one per part
            return await stow.finish()

    outcome = asyncio.run(scenario())
    assert outcome.status == 202
    assert [r.sop_instance_uid for r in outcome.stored] == [
        archive.stager.prepare(p)[0].sop_instance_uid for p in parts[:-1]]
    assert [r.reason for r, _ in outcome.failed] == ["not-dicom"]
    assert archive.index.stats()["instances"] == 7


def test_a_request_cancelled_while_a_part_is_staged_waits_for_it_then_keeps_nothing(
        archive: Archive, make_instance: Callable[..., bytes], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The stager's thread cannot be stopped mid-part: the clean-up must wait for it, or the blob it is
    writing would be left behind as a temporary file no batch will ever publish or delete."""
    staging, release = threading.Event(), threading.Event()
    stage = archive.stage

    def slow_stage(*args: Any, **kwargs: Any) -> Any:
        staging.set()
        release.wait(10)
        return stage(*args, **kwargs)

    monkeypatch.setattr(archive, "stage", slow_stage)

    async def scenario() -> None:
        with ThreadPoolExecutor(4) as executor:
            stow = _request(archive, tmp_path, executor)
            try:
                await stow.consume(_chunks(_body(make_instance(1))))
                finishing = asyncio.ensure_future(stow.finish())
                assert await asyncio.to_thread(staging.wait, 10)
                finishing.cancel()
                await asyncio.sleep(0.05)
                release.set()
                with pytest.raises(asyncio.CancelledError):
                    await finishing
            finally:
                release.set()
                for _ in range(4):  # should the clean-up have left a stager waiting, it ends (no hung test)
                    stow._queue.put(None)

    asyncio.run(scenario())
    assert archive.index.stats()["instances"] == 0
    assert list(archive.blobs.keys()) == []
    assert archive.blobs.remove_stale_temporaries() == 0  # type: ignore[attr-defined]
