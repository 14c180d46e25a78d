"""The DICOM listener (association acceptor).

Every association request is checked against the configured peers before any presentation context
is negotiated; every DIMSE operation is decided again by :func:`imagebank.security.policy.decide_dimse`
and audited. Received instances go through the same ingest pipeline as every other entry point,
byte for byte as encoded on the wire (the File Meta is added, the data set is not re-encoded).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import pydicom
from pydicom import Dataset
from pynetdicom import (
    AE,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    AllStoragePresentationContexts,
    build_context,
    evt,
)
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from imagebank.accept import RECHECK_EVERY, AcceptTurn
from imagebank.archive import Archive, Outcome
from imagebank.config import DicomSettings, Settings
from imagebank.dicom import quiet_pydicom
from imagebank.dicom.part10 import file_meta_prefix
from imagebank.dicom.transcode import TranscodeError, choose_syntax, decompressed
from imagebank.dimse.commands import speed_up_pynetdicom
from imagebank.dimse.reactor import EventDrivenRequestHandler
from imagebank.dimse.status import (
    FIND_CANCELLED,
    FIND_IDENTIFIER_INVALID,
    FIND_PENDING,
    FIND_UNABLE_TO_PROCESS,
    REFUSED_NOT_AUTHORIZED,
    SUCCESS,
    store_status,
)
from imagebank.query import InvalidQuery, find
from imagebank.query.model import UNIQUE_KEYS
from imagebank.runtime import tune_server_process
from imagebank.security.audit import AuditEvent, AuditTrail
from imagebank.security.policy import DicomPeer, Principal, decide_dimse, peer_principal
from imagebank.security.roles import Permission, Role

log = logging.getLogger(__name__)

# Transfer syntaxes accepted for storage, stored as received (PS3.5 Annex A; PS3.4 B.4.1). pynetdicom
# picks the first of these that a proposed context offers, so the order is a policy: lossless compressed
# first (the sender's own compressed data, no loss, less traffic), then uncompressed, and lossy last,
# so a sender that offers both never lossy-compresses an original for us.
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
]

_FIND_MODELS = {str(PatientRootQueryRetrieveInformationModelFind), str(StudyRootQueryRetrieveInformationModelFind)}
_RETRIEVE_MODELS = {str(m) for m in (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet,
                                     PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove)}

# Proposed after the stored syntax for C-MOVE sub-operations, to decompress into (PS3.5 A.2, A.1).
FALLBACK_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]

UNIQUE_KEY_OF_LEVEL = {level.name: key for level, key in UNIQUE_KEYS.items()}

# A-ASSOCIATE-RJ (PS3.8 9.3.4): rejected-permanent, by the service user, calling AE title not recognized.
REJECT_CALLING_AE = (0x01, 0x01, 0x03)


def peers_from_settings(settings: DicomSettings) -> list[DicomPeer]:
    return [DicomPeer(p.ae_title, p.host or None, frozenset(Permission(x) for x in p.permissions),
                      p.tls_subject or None) for p in settings.peers]


def certificate_names(assoc: Any) -> frozenset[str]:
    """Subject CN and DNS SANs of the association's verified client certificate (empty without one)."""
    sock = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
    cert: Any
    try:
        cert = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
    except (OSError, ValueError):
        cert = None
    if not cert:
        return frozenset()
    names = {value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"}
    names |= {value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"}
    return frozenset(names)


def _tls_context(settings: DicomSettings) -> ssl.SSLContext | None:
    if not settings.tls_certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # PS3.15 B.9 BCP 195 profile
    context.load_cert_chain(settings.tls_certfile, settings.tls_keyfile or None)
    if settings.tls_ca_file:
        context.load_verify_locations(settings.tls_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class DicomListener:
    def __init__(self, settings: DicomSettings, archive: Archive, audit: AuditTrail) -> None:
        self.settings, self.archive, self.audit = settings, archive, audit
        self.peers = peers_from_settings(settings)
        self._server: Any = None
        quiet_pynetdicom()
        ae = AE(ae_title=settings.ae_title)
        ae.maximum_associations = settings.max_associations
        ae.maximum_pdu_size = settings.max_pdu_length
        ae.require_called_aet = False  # many modalities send a generic called AE title
        ae.add_supported_context(Verification)
        for model in (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind,
                      PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet,
                      PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove):
            ae.add_supported_context(model)
        for context in AllStoragePresentationContexts:
            # scp_role: a C-GET requestor asks to act as Storage SCP on this association (PS3.7 D.3.3.4).
            ae.add_supported_context(str(context.abstract_syntax), TRANSFER_SYNTAXES, scu_role=True, scp_role=True)

        self.ae = ae

    # ----------------------------------------------------------------- handlers

    def _principal(self, event: Any) -> Principal | None:
        assoc = event.assoc
        cached = getattr(assoc, "imagebank_principal", None)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        title = str(assoc.requestor.ae_title).strip()
        principal = peer_principal(title, assoc.requestor.address, self.peers, certificate_names(assoc))
        if principal is None and self.settings.allow_unknown_peers:
            principal = Principal(kind="dicom-peer", name=title, roles=frozenset({Role.SERVICE}),
                                  scopes=frozenset({Permission.AUTHENTICATED, Permission.ARCHIVE_WRITE}),
                                  address=assoc.requestor.address)
        assoc.imagebank_principal = principal
        return principal

    def _on_requested(self, event: Any) -> None:
        requestor = event.assoc.requestor
        calling = str(requestor.primitive.calling_ae_title if requestor.primitive else requestor.ae_title).strip()
        principal = peer_principal(calling, requestor.address, self.peers, certificate_names(event.assoc))
        if principal is None and not self.settings.allow_unknown_peers:
            log.warning("refused association from unknown AE %r at %s", calling, requestor.address)
            self.audit.record(AuditEvent("110113", "E", 4, user_name=f"ae:{calling}", network_address=requestor.address,
                                         detail={"reason": "unknown calling AE title or address"}))
            # As pynetdicom's own acceptor does for a refused calling AE title: send A-ASSOCIATE-RJ, mark
            # the association rejected (so no negotiation follows) and end it.
            event.assoc.acse.send_reject(*REJECT_CALLING_AE)
            event.assoc.is_rejected = True
            event.assoc.kill()

    def _authorize(self, event: Any, service: str, audit: tuple[str, str]) -> tuple[str, str, str | None]:
        """Decide ``service`` for the caller; a refusal is audited with the ``audit`` (code, action).

        Returns ``(caller name for the audit trail, network address, refusal reason or None)``.
        """
        principal = self._principal(event)
        decision = decide_dimse(principal, service)
        name = f"ae:{principal.name}" if principal else "ae:unknown"
        address = event.assoc.requestor.address
        if decision.allowed:
            return name, address, None
        self.audit.record(AuditEvent(audit[0], audit[1], 4, user_name=name, network_address=address,
                                     detail={"service": service, "reason": decision.reason}))
        return name, address, decision.reason

    def _on_association_end(self, event: Any) -> None:
        """Write the per-study transfer audit events of an association that was released or aborted."""
        transfers = event.assoc.__dict__.pop("imagebank_transfers", {})
        for (name, address, study_uid), count in transfers.items():
            self.audit.record(AuditEvent("110104", "C", 0, user_name=name, network_address=address,
                                         object_type="study", object_id=study_uid,
                                         detail={"instances": count, "end": event.event.name}))

    def _on_sop_extended(self, event: Any) -> dict[str, bytes]:
        """SOP Class Extended Negotiation for the query/retrieve models (PS3.4 C.5.1.1, C.5.2.1, C.5.3.1).

        The index joins every level to its ancestors, so relational queries and retrieves are always
        answered (byte 1 = 1). Combined date-time matching, fuzzy semantic person-name matching and
        timezone adjustment are not offered (0), so the caller knows to expect hierarchical semantics.
        """
        replies: dict[str, bytes] = {}
        for uid, info in (event.app_info or {}).items():
            if str(uid) in _FIND_MODELS:
                replies[uid] = bytes([1, 0, 0, 0])[: max(1, len(info))]
            elif str(uid) in _RETRIEVE_MODELS:
                replies[uid] = b"\x01"
        return replies

    def _on_echo(self, event: Any) -> int:
        decision = decide_dimse(self._principal(event), "C-ECHO")
        return SUCCESS if decision.allowed else REFUSED_NOT_AUTHORIZED

    def _on_store(self, event: Any) -> int:
        name, address, refused = self._authorize(event, "C-STORE", ("110104", "C"))
        if refused:
            return REFUSED_NOT_AUTHORIZED
        try:
            data = received_file(event)
        except Exception:  # noqa: BLE001 - a malformed request must not kill the association thread
            log.exception("cannot read the C-STORE data set")
            return 0xC000
        result = self.archive.ingest(data, origin="dimse")
        if result.outcome in (Outcome.STORED, Outcome.REPLACED):
            # Audited per study when the association ends (PS3.15 A.5.3.6 "DICOM Instances Transferred"
            # describes a transfer, not each instance): no second transaction per instance.
            transfers = event.assoc.__dict__.setdefault("imagebank_transfers", {})
            key = (name, address, str(result.study_instance_uid))
            transfers[key] = transfers.get(key, 0) + 1
        elif result.outcome is Outcome.REJECTED:
            log.info("C-STORE from %s rejected: %s", name, result.reason)
        return store_status(result)

    def _on_find(self, event: Any) -> Any:
        """PS3.4 C.4.1: pending responses (0xFF00) with one identifier each, then the final status."""
        name, address, refused = self._authorize(event, "C-FIND", ("110112", "E"))
        if refused:
            yield REFUSED_NOT_AUTHORIZED, None
            return
        root = "PATIENT" if str(event.request.AffectedSOPClassUID) == str(PatientRootQueryRetrieveInformationModelFind) \
            else "STUDY"
        try:
            identifier = event.identifier
            level = str(identifier.get("QueryRetrieveLevel", "")).strip()
            keys = {elem.keyword: _match_value(elem) for elem in identifier if elem.keyword}
            results = find(self.archive.index.engine, level, keys, root=root)
        except InvalidQuery as exc:
            log.info("C-FIND from %s refused: invalid identifier", name)  # the reason may quote PHI
            yield _failure(FIND_IDENTIFIER_INVALID, str(exc)), None
            return
        except Exception:  # noqa: BLE001 - report, never drop the association
            log.exception("C-FIND failed")
            yield FIND_UNABLE_TO_PROCESS, None
            return
        self.audit.record(AuditEvent("110112", "E", 0, user_name=name, network_address=address,
                                     patient_id=keys.get("PatientID") or None, object_type="query",
                                     detail={"level": level, "root": root, "matches": len(results)}))
        for result in results:
            if event.is_cancelled:
                yield FIND_CANCELLED, None
                return
            yield FIND_PENDING, self._response(level, result)

    # ------------------------------------------------------------- retrieve

    def _matches_for_retrieve(self, event: Any, service: str) -> tuple[list[tuple[str, str, str, str]] | None, Any]:
        """``([(SOP Instance UID, blob key, SOP Class UID, transfer syntax)...], None)`` or
        ``(None, failure status)`` (PS3.4 C.4.2 C-MOVE, C.4.3 C-GET)."""
        name, address, refused = self._authorize(event, service, ("110103", "R"))
        if refused:
            return None, _failure(REFUSED_NOT_AUTHORIZED, refused)
        # Patient Root models are 1.2.840.10008.5.1.4.1.2.1.x, Study Root 1.2.840.10008.5.1.4.1.2.2.x (PS3.4 C.6)
        root = "PATIENT" if str(event.request.AffectedSOPClassUID).startswith("1.2.840.10008.5.1.4.1.2.1.") else "STUDY"
        try:
            identifier = event.identifier
            level = str(identifier.get("QueryRetrieveLevel", "")).strip()
            if level not in UNIQUE_KEY_OF_LEVEL:
                raise InvalidQuery("QueryRetrieveLevel must be PATIENT, STUDY, SERIES or IMAGE")
            unique = UNIQUE_KEY_OF_LEVEL[level]
            keys = {elem.keyword: _match_value(elem) for elem in identifier
                    if elem.keyword in UNIQUE_KEY_OF_LEVEL.values()}
            if not keys.get(unique):
                raise InvalidQuery(f"a {level}-level retrieve needs {unique} (PS3.4 C.4.2.2.1)")
            matches = find(self.archive.index.engine, "IMAGE",
                           {**keys, "SOPClassUID": "", "AvailableTransferSyntaxUID": ""}, root=root)
        except InvalidQuery as exc:
            log.info("%s from %s refused: invalid identifier", service, name)
            return None, _failure(FIND_IDENTIFIER_INVALID, str(exc))
        uids = [m["SOPInstanceUID"] for m in matches]
        located = self.archive.index.blob_keys_for(uids)
        patient = keys.get("PatientID") or None
        self.audit.record(AuditEvent("110103", "R", 0, user_name=name, network_address=address, patient_id=patient,
                                     object_type=level.lower(), object_id=str(keys.get(unique))[:256],
                                     detail={"service": service, "instances": len(uids)}))
        return [(m["SOPInstanceUID"], located[m["SOPInstanceUID"]], m["SOPClassUID"], m["AvailableTransferSyntaxUID"])
                for m in matches if m["SOPInstanceUID"] in located], None

    def _load(self, blob_key: str) -> Dataset:
        with self.archive.blobs.open(blob_key) as fh:
            return pydicom.dcmread(fh)

    def _sub_operations(self, event: Any, matches: list[tuple[str, str, str, str]],
                        receiver: Callable[[], Any]) -> Any:
        """One pending yield per instance, each in a syntax the receiving association accepted.

        ``receiver()`` is the association the C-STORE sub-operations go over (the C-GET association
        itself, or the one opened to the C-MOVE destination). An instance whose stored syntax it did
        not accept is decompressed when it accepted an uncompressed one; otherwise it is yielded as
        stored and pynetdicom counts that sub-operation as failed (PS3.4 C.4.2.3.1, C.4.3.3.1).
        """
        accepted: dict[str, set[str]] | None = None
        for _uid, blob_key, sop_class, stored_ts in matches:
            if event.is_cancelled:
                yield FIND_CANCELLED, None
                return
            if accepted is None:
                accepted = _accepted_syntaxes(receiver())
            ds = self._load(blob_key)
            target = choose_syntax(stored_ts, accepted.get(sop_class, set()))
            if target is not None and target != stored_ts:
                try:
                    ds = decompressed(ds)
                except TranscodeError as exc:
                    log.warning("cannot transcode instance for the receiver: %s", exc)
            yield FIND_PENDING, ds

    def _on_get(self, event: Any) -> Any:
        matches, failure = self._matches_for_retrieve(event, "C-GET")
        if matches is None:
            yield 1
            yield failure, None
            return
        yield len(matches)
        yield from self._sub_operations(event, matches, lambda: event.assoc)

    def _on_move(self, event: Any) -> Any:
        destination = str(event.move_destination).strip()
        peer = next((p for p in self.settings.peers if p.ae_title.strip() == destination and p.host), None)
        matches, failure = self._matches_for_retrieve(event, "C-MOVE")
        if peer is None:
            yield None, None  # pynetdicom answers 0xA801 "Move destination unknown"
            return
        if matches is None:
            yield peer.host, peer.port, {"ae_title": peer.ae_title}
            yield 1
            yield failure, None
            return
        # Propose each SOP class in the syntaxes its instances are stored in, then the uncompressed ones
        # to decompress into for a destination that refuses those; a destination refusing the SOP class
        # fails those sub-operations only (PS3.4 C.4.2.3). At most 128 contexts (PS3.8 9.3.2.2).
        proposed: dict[str, list[str]] = {}
        for _uid, _key, sop_class, ts in matches:
            syntaxes = proposed.setdefault(sop_class, [])
            if ts not in syntaxes:
                syntaxes.append(ts)
        contexts = [build_context(sop_class, [*syntaxes, *(u for u in FALLBACK_SYNTAXES if u not in syntaxes)])
                    for sop_class, syntaxes in list(proposed.items())[:128]]
        store_association: list[Any] = []
        yield peer.host, peer.port, {"ae_title": peer.ae_title, "contexts": contexts,
                                     "evt_handlers": [(evt.EVT_ACCEPTED, lambda e: store_association.append(e.assoc))]}
        yield len(matches)
        yield from self._sub_operations(event, matches, lambda: store_association[0] if store_association else None)

    def _response(self, level: str, result: dict[str, Any]) -> Dataset:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.QueryRetrieveLevel = level
        ds.RetrieveAETitle = self.settings.ae_title
        for keyword, value in result.items():
            setattr(ds, keyword, "" if value is None else value)
        return ds

    # ------------------------------------------------------------------ server

    def start(self, *, share: SharedListener | None = None) -> None:
        """Listen (in background threads). ``share``: one of several listener processes on one socket."""
        handlers: list[Any] = [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_C_ECHO, self._on_echo),
                               (evt.EVT_C_STORE, self._on_store), (evt.EVT_C_FIND, self._on_find),
                               (evt.EVT_C_GET, self._on_get), (evt.EVT_C_MOVE, self._on_move),
                               (evt.EVT_SOP_EXTENDED, self._on_sop_extended),
                               (evt.EVT_RELEASED, self._on_association_end), (evt.EVT_ABORTED, self._on_association_end)]
        # As AE.start_server(block=False) does, with event-driven association threads (dimse.reactor) and,
        # for one of several listener processes, a server that shares its socket and its load.
        options: dict[str, Any] = {"request_handler": EventDrivenRequestHandler}
        if share is not None:
            options.update(server_class=_SharedServer, share=share)
        self._server = self.ae.make_server((self.settings.host, self.settings.port), evt_handlers=handlers,
                                           ssl_context=_tls_context(self.settings), **options)
        self.ae._servers.append(self._server)  # as start_server does: shutdown() removes it from there
        threading.Thread(target=self._server.serve_forever, name="DicomListener", daemon=True).start()

    @property
    def listening_socket(self) -> socket.socket:
        return cast(socket.socket, self._server.socket)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server else self.settings.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


@dataclass
class SharedListener:
    """What the listener processes of one ``imagebank serve`` share: the listening socket (None for the
    first process, which creates it) and each process's number of open associations (``loads[slot]``)."""

    loads: Any  # multiprocessing.Array("i"), one slot per process
    slot: int
    socket: socket.socket | None = None


class _SharedServer(ThreadedAssociationServer):
    """One of several listener processes accepting on one shared socket, each taking a waiting connection
    only while no other process has fewer open associations (:mod:`imagebank.accept`)."""

    def __init__(self, *args: Any, share: SharedListener, **kwargs: Any) -> None:
        self.share = share
        self._turn = AcceptTurn(share.loads, share.slot)
        self._lock = threading.Lock()
        #: Accepted connections whose association thread has not started yet (not active_associations yet).
        self._starting = 0
        super().__init__(*args, **kwargs)
        self._set_load()  # listening now: from NOT_LISTENING to 0

    def server_bind(self) -> None:
        if self.share.socket is None:
            super().server_bind()
        else:  # a sibling's socket: already bound and listening
            cast(socket.socket, self.socket).close()
            self.socket = self.share.socket
            self.server_address = self.socket.getsockname()
        # Accept without waiting: when a sibling takes the connection first, accept() fails at once
        # (the accepted sockets themselves are blocking, as before).
        cast(socket.socket, self.socket).settimeout(0.0)

    def server_activate(self) -> None:
        if self.share.socket is None:
            super().server_activate()

    def server_close(self) -> None:
        if self.share.socket is None:
            super().server_close()
        else:  # never shutdown() a socket the other processes still listen on
            cast(socket.socket, self.socket).close()

    def _set_load(self, starting: int = 0) -> None:
        with self._lock:
            self._starting += starting
            self._turn.publish(len(self.active_associations) + self._starting)

    def service_actions(self) -> None:
        super().service_actions()
        self._set_load()  # associations that ended since

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # returns once the association runs
        finally:
            self._set_load(-1)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        if not self._turn.mine():
            time.sleep(RECHECK_EVERY)
            raise BlockingIOError("a less busy listener process takes this connection")
        client, address = cast(socket.socket, self.socket).accept()  # BlockingIOError: a sibling took it
        self._set_load(+1)
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True)
        return client, address


def listener_processes(settings: DicomSettings) -> int:
    return settings.processes or max(1, min(os.cpu_count() or 1, 4))


def run_listener_process(settings: Settings, parent: int, share: SharedListener) -> None:
    """Entry point of an extra listener process started by ``imagebank serve`` (spawned, so nothing is
    inherited but the settings and the shared socket): its own index connections and audit trail."""
    from imagebank.context import open_archive, open_security

    quiet_pydicom()  # as `imagebank` itself does
    archive = open_archive(settings)
    _, audit = open_security(settings, archive.index.engine)
    listener = DicomListener(settings.dicom, archive, audit)
    stop = threading.Event()
    if os.getppid() != parent:
        return  # `serve` is gone already
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    listener.start(share=share)
    tune_server_process()
    while not stop.wait(1.0):
        if os.getppid() != parent:  # `serve` was killed without a chance to stop us: do not linger on the port
            break
    listener.stop()


def received_file(event: Any) -> bytes:
    """The PS3.10 file of a C-STORE request: its data set as it came over the wire, behind the File Meta
    Information pynetdicom's ``event.encoded_dataset()`` would put there (built without pydicom)."""
    request = event.request
    return b"".join((file_meta_prefix(str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID),
                                      str(event.context.transfer_syntax), PYNETDICOM_IMPLEMENTATION_UID,
                                      PYNETDICOM_IMPLEMENTATION_VERSION),
                     request.DataSet.getvalue()))


def quiet_pynetdicom() -> None:
    """pynetdicom's process-wide switches, set once per listener process: command sets encoded by
    :mod:`imagebank.dimse.commands`, and its logging (``pynetdicom._config``).

    Its "standard" handlers, bound to every association, format a debug report of every PDU and DIMSE
    message whether or not debug logging is on (a fifth of the DUL thread's time per C-STORE), and it logs
    C-FIND/C-GET/C-MOVE identifiers -- patient names and IDs -- at INFO level.
    """
    from pynetdicom import _config

    speed_up_pynetdicom()
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
        _config.LOG_HANDLER_LEVEL = "none"


def _accepted_syntaxes(assoc: Any) -> dict[str, set[str]]:
    """SOP Class UID → transfer syntaxes in which ``assoc`` lets us send C-STOREs."""
    accepted: dict[str, set[str]] = {}
    for context in getattr(assoc, "accepted_contexts", None) or []:
        if context.as_scu is False:  # C-GET: the requestor must have accepted us in the SCU role
            continue
        accepted.setdefault(str(context.abstract_syntax), set()).update(str(t) for t in context.transfer_syntax)
    return accepted


def _match_value(elem: Any) -> Any:
    """The matching value of an identifier element: text for matching, ``""`` for a return key."""
    if elem.VR == "SQ" or elem.value is None:
        return ""
    if isinstance(elem.value, (list, tuple)) or elem.VM > 1:
        return "\\".join(str(v) for v in elem.value)
    return str(elem.value)


def _failure(status: int, message: str) -> Dataset:
    """A failure status with its reason in Error Comment (0000,0902; LO, at most 64 characters)."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = message[:64]
    return ds
