"""``multipart/related`` bodies (RFC 2387, PS3.18 8.7.1.2): reading STOW-RS requests part by part as
they stream in, and writing WADO-RS responses.

Reading uses python-multipart's incremental parser (the same one that parses form uploads), fed chunk
by chunk, so a request is never held in memory whole: each part goes into a :class:`PartSink`, which
keeps small parts in memory and moves a large one to a temporary file.
"""

from __future__ import annotations

import functools
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from types import MappingProxyType

from python_multipart.multipart import MultipartParseError, MultipartParser

#: Parts up to this size stay in memory; larger ones are spooled to a temporary file.
IN_MEMORY_PART_BYTES = 32 * 1024 * 1024


class MultipartError(ValueError):
    """The body is not a well-formed multipart/related message; the text says what is wrong."""


@dataclass(frozen=True)
class MediaType:
    """A parsed ``Content-Type``/``Accept`` entry: ``type/subtype`` plus lower-cased parameters."""

    essence: str
    params: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> MediaType:
        """Parsed once per distinct text (the parts of a STOW-RS request, the Accept headers of a viewer
        repeat the same few): the email parser costs more than staging's own bookkeeping of a part. The
        result is shared, so its ``params`` is a read-only mapping."""
        return _parse_media_type(text)


@functools.lru_cache(maxsize=1024)
def _parse_media_type(text: str) -> MediaType:
    message = Message()
    message["content-type"] = text
    params = {k.lower(): v for k, v in message.get_params(failobj=[])[1:]}
    essence = text.split(";", 1)[0].strip().lower()
    return MediaType(essence, MappingProxyType(params))  # type: ignore[arg-type]


def boundary_of(content_type: str) -> tuple[MediaType, str]:
    """The media type and boundary of a request's ``Content-Type``; raises :class:`MultipartError`."""
    media = MediaType.parse(content_type)
    if media.essence != "multipart/related":
        raise MultipartError(f"Content-Type is {media.essence or 'missing'}, not multipart/related")
    boundary = media.params.get("boundary", "")
    if not boundary or len(boundary) > 70:  # RFC 2046 5.1.1: 1 to 70 characters
        raise MultipartError("the multipart/related Content-Type has no valid boundary parameter")
    return media, boundary


class PartSink:
    """One part's headers and body; the body moves to a temporary file past ``IN_MEMORY_PART_BYTES``."""

    def __init__(self, spool_dir: str | None) -> None:
        self.headers: dict[str, str] = {}
        self.size = 0
        #: The body so far: views into the chunks it arrived in, copied once when it is complete.
        self._pieces: list[bytes | memoryview] = []
        self._file: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._spool_dir = spool_dir

    @property
    def content_type(self) -> MediaType:
        return MediaType.parse(self.headers.get("content-type", "application/dicom"))

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self._file is None and self.size <= IN_MEMORY_PART_BYTES:
            self._pieces.append(data)
            return
        if self._file is None:
            self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by discard()
                prefix="stow-", dir=self._spool_dir, delete=False)
            self._file.writelines(self._pieces)
            self._pieces = []
        self._file.write(data)

    def payload(self) -> bytes | Path:
        """The body: bytes, or the path of the spooled file (valid until :meth:`discard`)."""
        if self._file is None:
            if len(self._pieces) != 1 or not isinstance(self._pieces[0], bytes):
                self._pieces = [b"".join(self._pieces)]
            return self._pieces[0]  # type: ignore[return-value]
        self._file.flush()
        return Path(self._file.name)

    def discard(self) -> None:
        self._pieces = []
        if self._file is not None:
            self._file.close()
            Path(self._file.name).unlink(missing_ok=True)
            self._file = None


class MultipartReader:
    """Feed body chunks with :meth:`feed`; complete parts come back from it as they end."""

    def __init__(self, boundary: str, *, spool_dir: str | None = None) -> None:
        self._spool_dir = spool_dir
        self._done: list[PartSink] = []
        self._current: PartSink | None = None
        self._field = b""
        self._value = b""
        self.finished = False
        self.parts_seen = 0
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._begin,
            "on_part_data": self._data,
            "on_part_end": self._end,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_end": self._finish,
        }, max_header_count=32)

    def _begin(self) -> None:
        self._current = PartSink(self._spool_dir)

    def _part(self) -> PartSink:
        if self._current is None:  # the parser calls back in order; this would be its bug
            raise MultipartError("malformed multipart body: data outside a part")
        return self._current

    def _data(self, data: bytes, start: int, end: int) -> None:
        # A view, not a slice: the part is copied once, when it is complete (PartSink.payload).
        self._part().write(memoryview(data)[start:end])

    def _end(self) -> None:
        self._done.append(self._part())
        self.parts_seen += 1
        self._current = None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self._part().headers[name] = self._value.decode("latin-1").strip()
        self._field = self._value = b""

    def _finish(self) -> None:
        self.finished = True

    def feed(self, chunk: bytes) -> list[PartSink]:
        if not isinstance(chunk, bytes):
            chunk = bytes(chunk)  # parts keep views into the chunks: those must not change afterwards
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            self.abort()
            raise MultipartError(f"malformed multipart body: {exc}") from None
        done, self._done = self._done, []
        return done

    def close(self) -> list[PartSink]:
        """End of the body: raises :class:`MultipartError` when it stopped before the closing boundary."""
        if not self.finished:
            began = self.parts_seen > 0 or self._current is not None
            self.abort()
            if not began:
                raise MultipartError("no part found: the body does not use the boundary of its Content-Type")
            raise MultipartError("the body ends before the closing boundary (truncated request)")
        done, self._done = self._done, []
        return done

    def abort(self) -> None:
        for part in [*self._done, *([self._current] if self._current else [])]:
            part.discard()
        self._done, self._current = [], None


# ------------------------------------------------------------------------------------ writing

def new_boundary() -> str:
    return f"imagebank-{secrets.token_hex(12)}"


def part_header(boundary: str, content_type: str, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("latin-1")


def related_content_type(boundary: str, part_type: str, transfer_syntax: str | None = None) -> str:
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    return value + (f"; transfer-syntax={transfer_syntax}" if transfer_syntax else "")


def encode_parts(boundary: str, parts: Iterator[tuple[str, bytes]]) -> Iterator[bytes]:
    """Body chunks for ``(content_type, body)`` parts; each part is one chunk (header + body)."""
    for content_type, body in parts:
        yield part_header(boundary, content_type) + body + b"\r\n"
    yield closing(boundary)


def spool_dir_for(data_dir: str | os.PathLike[str]) -> str:
    """Temporary files live beside the archive (same disk, never a small tmpfs)."""
    path = Path(data_dir) / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)
