"""The DICOMweb HTTP routes under ``/dicom-web`` (PS3.18 10.4 WADO-RS, 10.5 STOW-RS, 10.6 QIDO-RS,
9 WADO-URI). Thin: each route parses the request, calls the pure modules beside this one, and turns
their errors into HTTP statuses with a readable message."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from imagebank.archive import Archive
from imagebank.config import Settings
from imagebank.dicom.transcode import TranscodeError
from imagebank.dicomweb import qido, rendering, wado
from imagebank.dicomweb.multipart import (
    closing,
    new_boundary,
    part_header,
    related_content_type,
    spool_dir_for,
)
from imagebank.dicomweb.negotiation import (
    ANY,
    EXPLICIT_LE,
    NotAcceptable,
    Wanted,
    check_transcodable,
    frame_content_type,
    negotiate_dicom,
    negotiate_frames,
)
from imagebank.dicomweb.stow import RequestRejected, StowRequest
from imagebank.errors import StorageError
from imagebank.query import Level
from imagebank.security.roles import Permission
from imagebank.storage.index import Located
from imagebank.web.auth import Requirement
from imagebank.web.blocking import on_blocking_pool

PREFIX = "/dicom-web"
DICOM_JSON = "application/dicom+json"
_UID = r"[0-9.]{1,64}"
_FRAMES_RE = re.compile(r"^\d+(,\d+)*$")
#: JSON bodies from this size on are gzip-compressed for clients that take it: study lists and metadata
#: shrink ~10x, while compressing (and the client inflating) a few-KiB answer costs more time than it saves
#: on a LAN.
GZIP_MIN_BYTES = 16 * 1024


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + PREFIX


def json_response(request: Request, body: bytes, *, status: int = 200, headers: dict[str, str] | None = None,
                  media_type: str = DICOM_JSON) -> Response:
    """JSON, gzip-compressed when the client takes it (viewers fetch large metadata arrays)."""
    headers = dict(headers or {})
    if len(body) >= GZIP_MIN_BYTES and "gzip" in request.headers.get("accept-encoding", ""):
        body = gzip.compress(body, compresslevel=5)
        headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
    return Response(body, status_code=status, media_type=media_type, headers=headers)


def _check_json_accept(request: Request) -> None:
    accept = _accept(request) or ""
    if not accept:
        return
    for item in accept.split(","):
        essence = item.split(";", 1)[0].strip().lower()
        if essence in (DICOM_JSON, "application/json", "*/*", "application/*"):
            return
    raise HTTPException(406, "this resource is available as application/dicom+json")


def _uid(value: str, what: str) -> str:
    if not re.fullmatch(_UID, value):
        raise HTTPException(400, f"{what} {value[:80]!r} is not a UID")
    return value


def _accept(request: Request) -> str | None:
    """The Accept header, or the ``accept`` query parameter which overrides it (PS3.18 8.3.3.1)."""
    return request.query_params.get("accept") or request.headers.get("accept")


def install_dicomweb(app: FastAPI, settings: Settings, archive: Archive) -> None:
    router = APIRouter(prefix=PREFIX, tags=["DICOMweb"])
    read = Depends(Requirement(Permission.ARCHIVE_READ))
    write = Depends(Requirement(Permission.ARCHIVE_WRITE, audit=("110104", "C")))
    engine = archive.index.engine
    options = settings.dicomweb
    # Blocking work of streaming requests, for all requests of this process. Reading the instances of a
    # WADO-RS retrieve: io_threads. Staging STOW-RS parts (parse, hash, write): stagers, which stay with
    # their request while its body streams in (waiting for parts costs no CPU) and so get a pool of their
    # own, large enough for 16 requests at a time at full parallelism; a retrieve never waits behind them.
    io_threads = ThreadPoolExecutor(max_workers=2 * options.stow_parallelism, thread_name_prefix="dicomweb-io")
    stagers = ThreadPoolExecutor(max_workers=16 * options.stow_parallelism, thread_name_prefix="stow-stager")

    # ----------------------------------------------------------------------------- QIDO-RS

    def _query(request: Request, level: Level, scope: dict[str, str]) -> Response:
        _check_json_accept(request)
        try:
            query = qido.parse(request.query_params.multi_items(), level, scope, max_results=options.max_results)
            results, total = qido.search(engine, query, base_url(request))
        except qido.BadQuery as exc:
            raise HTTPException(400, str(exc)) from None
        headers = {"X-Total-Count": str(total)}
        remaining = total - query.offset - len(results)
        if remaining > 0:  # PS3.18 8.3.4.4
            headers["Warning"] = f'299 imagebank "There are {remaining} additional results that can be requested"'
        if not results:
            return Response(status_code=204, headers=headers)
        return json_response(request, json.dumps(results, separators=(",", ":")).encode(), headers=headers)

    @router.get("/studies", dependencies=[read], summary="QIDO-RS: search for studies")
    @on_blocking_pool
    def search_studies(request: Request) -> Response:
        return _query(request, Level.STUDY, {})

    @router.get("/series", dependencies=[read], summary="QIDO-RS: search for series")
    @on_blocking_pool
    def search_series(request: Request) -> Response:
        return _query(request, Level.SERIES, {})

    @router.get("/instances", dependencies=[read], summary="QIDO-RS: search for instances")
    @on_blocking_pool
    def search_instances(request: Request) -> Response:
        return _query(request, Level.IMAGE, {})

    @router.get("/studies/{study}/series", dependencies=[read], summary="QIDO-RS: series of a study")
    @on_blocking_pool
    def search_study_series(request: Request, study: str) -> Response:
        return _query(request, Level.SERIES, {"StudyInstanceUID": _uid(study, "study")})

    @router.get("/studies/{study}/instances", dependencies=[read], summary="QIDO-RS: instances of a study")
    @on_blocking_pool
    def search_study_instances(request: Request, study: str) -> Response:
        return _query(request, Level.IMAGE, {"StudyInstanceUID": _uid(study, "study")})

    @router.get("/studies/{study}/series/{series}/instances", dependencies=[read],
                summary="QIDO-RS: instances of a series")
    @on_blocking_pool
    def search_series_instances(request: Request, study: str, series: str) -> Response:
        return _query(request, Level.IMAGE, {"StudyInstanceUID": _uid(study, "study"),
                                             "SeriesInstanceUID": _uid(series, "series")})

    # ----------------------------------------------------------------------------- STOW-RS

    async def _store(request: Request, study: str | None) -> Response:
        max_bytes = options.max_request_mb * 2**20
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise HTTPException(413, f"the request ({int(declared) // 2**20} MiB) is larger than the "
                                     f"{options.max_request_mb} MiB this server accepts (dicomweb.max_request_mb)")
        try:
            stow = StowRequest(archive, request.headers.get("content-type", ""), study, max_bytes=max_bytes,
                               parallelism=options.stow_parallelism, spool_dir=spool_dir_for(settings.data_dir),
                               executor=stagers)
            await stow.consume(request.stream())
        except RequestRejected as exc:
            raise HTTPException(exc.status, exc.message) from None
        outcome = await stow.finish()
        body = json.dumps(outcome.body(base_url(request), study), separators=(",", ":")).encode()
        return Response(body, status_code=outcome.status, media_type=DICOM_JSON)

    @router.post("/studies", dependencies=[write], summary="STOW-RS: store instances")
    async def store(request: Request) -> Response:
        return await _store(request, None)

    @router.post("/studies/{study}", dependencies=[write], summary="STOW-RS: store instances of one study")
    async def store_into_study(request: Request, study: str) -> Response:
        return await _store(request, _uid(study, "study"))

    # ----------------------------------------------------------------------------- WADO-RS

    def _locate(study: str, series: str | None = None, instance: str | None = None, *,
                headers: bool = False) -> list[Located]:
        found = archive.index.locate(_uid(study, "study"), series and _uid(series, "series"),
                                     instance and _uid(instance, "instance"), with_headers=headers)
        if not found:
            what = f"instance {instance}" if instance else f"series {series}" if series else f"study {study}"
            raise HTTPException(404, f"{what} is not in the archive")
        return found

    def _retrieve(request: Request, located: list[Located]) -> Response:
        try:
            wanted = negotiate_dicom(request.headers.get("accept"))
            for item in located:
                check_transcodable(item.transfer_syntax_uid, wanted.transfer_syntax)
        except NotAcceptable as exc:
            raise HTTPException(406, str(exc)) from None
        syntax_of = (lambda item: item.transfer_syntax_uid) if wanted.transfer_syntax == ANY else (
            lambda _item: wanted.transfer_syntax)
        if not wanted.multipart:
            if len(located) > 1:
                raise HTTPException(406, "more than one instance: ask for multipart/related; type=\"application/dicom\"")
            item = located[0]
            data = _transcoded(item, wanted.transfer_syntax)
            return Response(data, media_type=f"application/dicom; transfer-syntax={syntax_of(item)}")
        boundary = new_boundary()
        groups = _read_groups(located)
        as_stored = all(syntax_of(item) == item.transfer_syntax_uid for item in located)
        headers = {}
        if as_stored:  # every size is known: a Content-Length instead of chunked encoding, less work per byte
            headers["Content-Length"] = str(sum(
                len(part_header(boundary, f"application/dicom; transfer-syntax={item.transfer_syntax_uid}"))
                + item.size + 2 for item in located) + len(closing(boundary)))

        def read(group: list[Located]) -> list[bytes]:
            files = [_transcoded(item, wanted.transfer_syntax) for item in group]
            if as_stored and any(len(data) != item.size for data, item in zip(files, group, strict=True)):
                raise StorageError("a stored instance does not have the size the index records (run imagebank check)")
            return files

        async def body() -> AsyncIterator[bytes]:
            # Instances are read a group at a time on a worker thread, the next group while this one is sent;
            # the file's own bytes go out as they are (not copied into a bigger buffer), each between one
            # small write of framing: the CRLF ending the previous part with the next part's header.
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(io_threads, read, groups[0])
            framing = b""
            for index, group in enumerate(groups):
                files = await pending
                if index + 1 < len(groups):
                    pending = loop.run_in_executor(io_threads, read, groups[index + 1])
                for item, data in zip(group, files, strict=True):
                    yield framing + part_header(boundary, f"application/dicom; transfer-syntax={syntax_of(item)}")
                    yield data
                    framing = b"\r\n"
            yield framing + closing(boundary)

        return StreamingResponse(body(), media_type=related_content_type(boundary, "application/dicom"), headers=headers)

    def _transcoded(item: Located, syntax: str) -> bytes:
        try:
            return wado.instance_bytes(archive.blobs, item, syntax)
        except TranscodeError as exc:  # checked before the first byte; a corrupt bitstream still lands here
            raise HTTPException(406, str(exc)) from None

    @router.get("/studies/{study}", dependencies=[read], summary="WADO-RS: retrieve a study")
    @on_blocking_pool
    def retrieve_study(request: Request, study: str) -> Response:
        return _retrieve(request, _locate(study))

    @router.get("/studies/{study}/series/{series}", dependencies=[read], summary="WADO-RS: retrieve a series")
    @on_blocking_pool
    def retrieve_series(request: Request, study: str, series: str) -> Response:
        return _retrieve(request, _locate(study, series))

    @router.get("/studies/{study}/series/{series}/instances/{instance}", dependencies=[read],
                summary="WADO-RS: retrieve an instance")
    @on_blocking_pool
    def retrieve_instance(request: Request, study: str, series: str, instance: str) -> Response:
        return _retrieve(request, _locate(study, series, instance))

    def _metadata(request: Request, located: list[Located]) -> Response:
        _check_json_accept(request)
        body = b"".join(wado.metadata_json(located, base_url(request)))
        return json_response(request, body)

    @router.get("/studies/{study}/metadata", dependencies=[read], summary="WADO-RS: metadata of a study")
    @on_blocking_pool
    def study_metadata(request: Request, study: str) -> Response:
        return _metadata(request, _locate(study, headers=True))

    @router.get("/studies/{study}/series/{series}/metadata", dependencies=[read],
                summary="WADO-RS: metadata of a series")
    @on_blocking_pool
    def series_metadata(request: Request, study: str, series: str) -> Response:
        return _metadata(request, _locate(study, series, headers=True))

    @router.get("/studies/{study}/series/{series}/instances/{instance}/metadata", dependencies=[read],
                summary="WADO-RS: metadata of an instance")
    @on_blocking_pool
    def instance_metadata(request: Request, study: str, series: str, instance: str) -> Response:
        return _metadata(request, _locate(study, series, instance, headers=True))

    def _frames_response(request: Request, item: Located, numbers: list[int]) -> Response:
        try:
            wanted = negotiate_frames(_accept(request), item.transfer_syntax_uid)
            check_transcodable(item.transfer_syntax_uid, wanted.transfer_syntax)
        except NotAcceptable as exc:
            raise HTTPException(406, str(exc)) from None
        try:
            data = wado.frames(archive.blobs, item, numbers, wanted.transfer_syntax)
        except wado.NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except TranscodeError as exc:
            raise HTTPException(406, str(exc)) from None
        return _parts(wanted, data)

    def _parts(wanted: Wanted, data: list[bytes]) -> Response:
        content_type = frame_content_type(wanted)
        if not wanted.multipart:
            if len(data) > 1 and wanted.part_type != "application/octet-stream":
                raise HTTPException(406, "more than one compressed frame: ask for multipart/related")
            return Response(b"".join(data), media_type=content_type)  # native frames: the pixel data value
        boundary = new_boundary()
        chunks = [part_header(boundary, content_type) + d + b"\r\n" for d in data] + [closing(boundary)]
        return Response(b"".join(chunks), media_type=related_content_type(
            boundary, wanted.part_type, None if wanted.transfer_syntax == EXPLICIT_LE else wanted.transfer_syntax))

    @router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame_list}", dependencies=[read],
                summary="WADO-RS: frames of an instance")
    @on_blocking_pool
    def retrieve_frames(request: Request, study: str, series: str, instance: str, frame_list: str) -> Response:
        numbers = _frame_numbers(frame_list)
        item = _locate(study, series, instance)[0]
        return _frames_response(request, item, numbers)

    @router.get("/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}", dependencies=[read],
                summary="WADO-RS: bulk data of an instance")
    @on_blocking_pool
    def retrieve_bulkdata(request: Request, study: str, series: str, instance: str, tag: str) -> Response:
        if not re.fullmatch(r"[0-9A-Fa-f]{8}", tag):
            raise HTTPException(400, f"bulk data {tag[:40]!r}: expected an attribute tag (8 hex digits)")
        item = _locate(study, series, instance)[0]
        number = int(tag, 16)
        if number == 0x7FE00010:  # Pixel Data: its frames, negotiated like /frames
            frames = int(item.number_of_frames or 1)
            return _frames_response(request, item, list(range(1, frames + 1)))
        try:
            value = wado.bulk_value(archive.blobs, item, number)
        except wado.NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        wanted = Wanted("application/octet-stream", EXPLICIT_LE,
                        multipart="multipart" in (_accept(request) or "multipart"))
        return _parts(wanted, [value])

    # ----------------------------------------------------------------------- rendered / thumbnail

    def _render_options(request: Request, *, thumbnail: bool) -> rendering.RenderOptions:
        accept = _accept(request) or "image/jpeg"
        media_type = None
        for item in accept.split(","):
            essence = item.split(";", 1)[0].strip().lower()
            if essence in rendering.MEDIA_TYPES:
                media_type = essence
                break
            if essence in ("image/*", "*/*"):
                media_type = "image/jpeg"
                break
        if media_type is None:
            raise HTTPException(406, "rendered images are available as image/jpeg or image/png")
        params = request.query_params
        try:
            viewport = rendering.parse_viewport(params.get("viewport"))
            return rendering.RenderOptions(
                media_type=media_type, window=rendering.parse_window(params.get("window")),
                viewport=viewport or ((128, 128) if thumbnail else None),
                quality=rendering.parse_quality(params.get("quality")))
        except rendering.CannotRender as exc:
            raise HTTPException(400, str(exc)) from None

    # The rendered, thumbnail and WADO-URI routes run on the blocking pool whole, like the other retrieves: the
    # token check, its audit record, the index lookup and the rendering in one hop off the event loop.
    def _render(item: Located, frame: int, render_options: rendering.RenderOptions) -> Response:
        try:
            image = rendering.render(archive.blobs.get(item.blob_key), frame, render_options)
        except rendering.CannotRender as exc:
            raise HTTPException(404 if isinstance(exc, rendering.NoSuchFrame) else 406, str(exc)) from None
        return Response(image, media_type=render_options.media_type, headers={"Cache-Control": "private, max-age=3600"})

    def _representative(located: list[Located]) -> Located:
        """The instance a series or study thumbnail shows: the middle image of the first imaging series."""
        images = [item for item in located if item.rows]
        if not images:
            raise HTTPException(404, "there is no image to make a thumbnail of")
        first_series = [item for item in images if item.series_instance_uid == images[0].series_instance_uid]
        return first_series[len(first_series) // 2]

    @router.get("/studies/{study}/series/{series}/instances/{instance}/rendered", dependencies=[read],
                summary="WADO-RS: rendered instance (first frame)")
    @on_blocking_pool
    def rendered_instance(request: Request, study: str, series: str, instance: str) -> Response:
        options_ = _render_options(request, thumbnail=False)
        return _render(_locate(study, series, instance)[0], 1, options_)

    @router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame_list}/rendered",
                dependencies=[read], summary="WADO-RS: rendered frame")
    @on_blocking_pool
    def rendered_frame(request: Request, study: str, series: str, instance: str, frame_list: str) -> Response:
        numbers = _frame_numbers(frame_list)
        if len(numbers) != 1:
            raise HTTPException(400, "render one frame per request")
        options_ = _render_options(request, thumbnail=False)
        return _render(_locate(study, series, instance)[0], numbers[0], options_)

    @router.get("/studies/{study}/series/{series}/rendered", dependencies=[read],
                summary="WADO-RS: rendered series (its representative image)")
    @on_blocking_pool
    def rendered_series(request: Request, study: str, series: str) -> Response:
        options_ = _render_options(request, thumbnail=False)
        return _render(_representative(_locate(study, series)), 1, options_)

    @router.get("/studies/{study}/rendered", dependencies=[read],
                summary="WADO-RS: rendered study (its representative image)")
    @on_blocking_pool
    def rendered_study(request: Request, study: str) -> Response:
        options_ = _render_options(request, thumbnail=False)
        return _render(_representative(_locate(study)), 1, options_)

    @router.get("/studies/{study}/thumbnail", dependencies=[read], summary="WADO-RS: study thumbnail")
    @on_blocking_pool
    def study_thumbnail(request: Request, study: str) -> Response:
        return _render(_representative(_locate(study)), 1, _render_options(request, thumbnail=True))

    @router.get("/studies/{study}/series/{series}/thumbnail", dependencies=[read], summary="WADO-RS: series thumbnail")
    @on_blocking_pool
    def series_thumbnail(request: Request, study: str, series: str) -> Response:
        return _render(_representative(_locate(study, series)), 1, _render_options(request, thumbnail=True))

    @router.get("/studies/{study}/series/{series}/instances/{instance}/thumbnail", dependencies=[read],
                summary="WADO-RS: instance thumbnail")
    @on_blocking_pool
    def instance_thumbnail(request: Request, study: str, series: str, instance: str) -> Response:
        return _render(_locate(study, series, instance)[0], 1, _render_options(request, thumbnail=True))

    @router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame_list}/thumbnail",
                dependencies=[read], summary="WADO-RS: frame thumbnail")
    @on_blocking_pool
    def frame_thumbnail(request: Request, study: str, series: str, instance: str, frame_list: str) -> Response:
        numbers = _frame_numbers(frame_list)
        return _render(_locate(study, series, instance)[0], numbers[0], _render_options(request, thumbnail=True))

    # ---------------------------------------------------------------------------- WADO-URI

    @router.get("/wado", dependencies=[read], summary="WADO-URI (PS3.18 9): retrieve an instance or a rendering")
    @on_blocking_pool
    def wado_uri(request: Request) -> Response:
        params = request.query_params
        if params.get("requestType") != "WADO":
            raise HTTPException(400, "requestType=WADO is required")
        missing = [k for k in ("studyUID", "seriesUID", "objectUID") if not params.get(k)]
        if missing:
            raise HTTPException(400, f"missing WADO-URI parameter(s): {', '.join(missing)}")
        item = _locate(params["studyUID"], params["seriesUID"], params["objectUID"])[0]
        content_type = (params.get("contentType") or "image/jpeg").split(",")[0].strip().lower()
        if content_type in ("application/dicom", "*/*"):
            syntax = params.get("transferSyntax") or EXPLICIT_LE
            try:
                check_transcodable(item.transfer_syntax_uid, syntax)
            except NotAcceptable as exc:
                raise HTTPException(406, str(exc)) from None
            data = _transcoded(item, syntax)
            shown = item.transfer_syntax_uid if syntax == ANY else syntax
            return Response(data, media_type=f"application/dicom; transfer-syntax={shown}")
        if content_type not in rendering.MEDIA_TYPES:
            raise HTTPException(406, f"contentType {content_type!r}: use application/dicom, image/jpeg or image/png")
        try:
            frame = int(params.get("frameNumber") or 1)
            window = None
            if params.get("windowCenter") and params.get("windowWidth"):
                window = rendering.parse_window(f"{params['windowCenter']},{params['windowWidth']}")
            rows, columns = params.get("rows"), params.get("columns")
            viewport = rendering.parse_viewport(f"{columns or rows},{rows or columns}") if rows or columns else None
            render_options = rendering.RenderOptions(media_type=content_type, window=window, viewport=viewport,
                                                     quality=rendering.parse_quality(params.get("imageQuality")))
        except (ValueError, rendering.CannotRender) as exc:
            raise HTTPException(400, str(exc)) from None
        return _render(item, frame, render_options)

    app.include_router(router)


#: A retrieve reads its first instance alone (the first byte goes out at once), then groups of about this size.
READ_GROUP_BYTES = 8 << 20


def _read_groups(located: list[Located]) -> list[list[Located]]:
    groups: list[list[Located]] = [located[:1]]
    size = READ_GROUP_BYTES
    for item in located[1:]:
        if size + item.size > READ_GROUP_BYTES and groups[-1]:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += item.size
    return [group for group in groups if group]


def _frame_numbers(text: str) -> list[int]:
    if not _FRAMES_RE.match(text):
        raise HTTPException(400, f"frame list {text[:40]!r}: expected numbers separated by commas, e.g. 1,2,3")
    numbers = [int(n) for n in text.split(",")]
    if any(n < 1 for n in numbers):
        raise HTTPException(400, "frame numbers start at 1")
    return numbers

