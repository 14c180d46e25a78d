"""The DICOM listener over real associations: peer authorization, C-ECHO, C-STORE statuses, TLS."""

from __future__ import annotations

import io
import json
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification  # type: ignore[attr-defined]

from imagebank.config import DicomPeerSettings, Settings
from imagebank.dimse.scp import DicomListener
from tests.conftest import free_port
from tests.web.test_transport import _self_signed

PEERS = [
    DicomPeerSettings(ae_title="CT01", host="127.0.0.1", permissions=["archive:write"]),
    DicomPeerSettings(ae_title="VIEWER", permissions=["archive:read"]),
]


@pytest.fixture
def listen(settings: Settings, secured: Any) -> Iterator[Callable[..., DicomListener]]:
    started: list[DicomListener] = []

    def start(**overrides: Any) -> DicomListener:
        arch, _, audit = secured
        dicom = settings.dicom.model_copy(update={"port": free_port(), "peers": PEERS, **overrides})
        listener = DicomListener(dicom, arch, audit)
        listener.start()
        started.append(listener)
        return listener
    yield start
    for listener in started:
        listener.stop()


def _scu(title: str) -> AE:
    ae = AE(ae_title=title)
    for context in (Verification, CTImageStorage, MRImageStorage):
        ae.add_requested_context(context)
    return ae


def _dataset(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def test_known_peer_echoes_and_stores(listen: Any, secured: Any, make_instance: Callable[..., bytes]) -> None:
    listener = listen()
    arch, _, audit = secured
    assoc = _scu("CT01").associate("127.0.0.1", listener.port)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    status = assoc.send_c_store(_dataset(make_instance(1, pixels=True)))
    assert status.Status == 0x0000
    assoc.release()
    assert arch.index.stats()["instances"] == 1
    import time

    deadline = time.monotonic() + 10  # written by the listener when it sees the release
    while not (stored := [e for e in audit.query() if e.event_id == "110104"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored and stored[0].user_name == "ae:CT01" and stored[0].outcome == 0
    assert stored[0].object_type == "study" and stored[0].detail["instances"] == 1


def test_unknown_calling_ae_is_rejected_and_audited(listen: Any, secured: Any) -> None:
    listener = listen()
    assoc = _scu("INTRUDER").associate("127.0.0.1", listener.port)
    assert assoc.is_rejected
    alerts = [e for e in secured[2].query() if e.event_id == "110113"]
    assert alerts and alerts[0].user_name == "ae:INTRUDER"


def test_known_title_from_another_address_is_rejected(listen: Any) -> None:
    listener = listen()
    assoc = _scu("CT01").associate("127.0.0.1", listener.port, bind_address=("127.0.0.2", 0))
    assert assoc.is_rejected


def test_peer_without_write_permission_cannot_store(listen: Any, secured: Any,
                                                    make_instance: Callable[..., bytes]) -> None:
    listener = listen()
    assoc = _scu("VIEWER").associate("127.0.0.1", listener.port)
    assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
    assert assoc.send_c_store(_dataset(make_instance(1))).Status == 0x0124  # Refused: Not Authorized
    assoc.release()
    assert secured[0].index.stats()["instances"] == 0


def test_store_statuses_follow_the_ingest_outcome(listen: Any, secured: Any,
                                                  make_instance: Callable[..., bytes]) -> None:
    listener = listen()
    assoc = _scu("CT01").associate("127.0.0.1", listener.port)
    original = _dataset(make_instance(1))
    assert assoc.send_c_store(original).Status == 0x0000
    assert assoc.send_c_store(original).Status == 0x0000  # identical re-send: success, nothing duplicated
    changed = _dataset(make_instance(1, SeriesDescription="changed"))
    assert assoc.send_c_store(changed).Status == 0x0111  # Duplicate SOP Instance (policy reject)
    no_patient = _dataset(make_instance(2, PatientID=""))
    assert assoc.send_c_store(no_patient).Status == 0xC000  # Cannot understand: names no value
    assoc.release()
    assert secured[0].index.stats()["instances"] == 1


def test_dicom_tls(listen: Any, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    listener = listen(tls_certfile=str(cert), tls_keyfile=str(key))
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    assoc = _scu("CT01").associate("127.0.0.1", listener.port, tls_args=(client, "127.0.0.1"))
    assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
    assoc.release()
    plain = _scu("CT01").associate("127.0.0.1", listener.port)
    assert not plain.is_established


def test_serve_starts_the_dicom_listener(tmp_path: Path, make_instance: Callable[..., bytes]) -> None:
    """`serve` with two listener processes on one port: parallel associations all land."""
    import os
    import subprocess
    import sys
    import threading
    import time

    from tests.test_cli import run

    dicom_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
    env.update(IMAGEBANK_DICOM__PORT=str(dicom_port), IMAGEBANK_DICOM__PEERS='[{"ae_title": "CT01"}]',
               IMAGEBANK_DICOM__PROCESSES="2")
    proc = subprocess.Popen([sys.executable, "-m", "imagebank.cli", "--data", str(tmp_path / "d"), "serve", "--port",
                             str(free_port())], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90  # generous: CI machines can be loaded
        while True:
            assoc = _scu("CT01").associate("127.0.0.1", dicom_port)
            if assoc.is_established:
                break
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.3)
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        time.sleep(3)  # let the second listener process come up (spawned, so it imports afresh)
        statuses: list[int] = []

        def send(n: int) -> None:
            sender = _scu("CT01").associate("127.0.0.1", dicom_port)
            statuses.append(int(sender.send_c_store(_dataset(make_instance(n))).Status))
            sender.release()

        threads = [threading.Thread(target=send, args=(n,)) for n in range(1, 9)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert statuses == [0] * 8
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"DICOM listener IMAGEBANK on 127.0.0.1:{dicom_port}; 1 known peer(s); 2 process(es)" in out
    assert json.loads(run("stats", "--json", data=tmp_path / "d").stdout)["instances"] == 8


def _find(assoc: Any, identifier: dict[str, str], model: Any) -> list[tuple[int, Any]]:
    ds = pydicom.Dataset()
    for keyword, value in identifier.items():
        setattr(ds, keyword, value)
    return [(status.Status, found) for status, found in assoc.send_c_find(ds, model)]


def test_c_find_patient_and_study_root(listen: Any, secured: Any, make_instance: Callable[..., bytes]) -> None:
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        PatientRootQueryRetrieveInformationModelFind as PATIENT_ROOT,
    )
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT,
    )

    arch, _, audit = secured
    for n in (1, 2, 3):
        arch.ingest(make_instance(n))
    listener = listen(peers=PEERS + [DicomPeerSettings(ae_title="FINDER", permissions=["archive:read"])])
    scu = AE(ae_title="FINDER")
    scu.add_requested_context(PATIENT_ROOT)
    scu.add_requested_context(STUDY_ROOT)
    assoc = scu.associate("127.0.0.1", listener.port)
    assert assoc.is_established

    studies = _find(assoc, {"QueryRetrieveLevel": "STUDY", "PatientName": "*", "StudyInstanceUID": "",
                            "ModalitiesInStudy": "", "NumberOfStudyRelatedInstances": ""}, STUDY_ROOT)
    assert [s for s, _ in studies] == [0xFF00, 0x0000]
    match = studies[0][1]
    assert match.NumberOfStudyRelatedInstances == 3 and match.RetrieveAETitle == "IMAGEBANK"
    assert match.ModalitiesInStudy in ("CT", "MR")

    patients = _find(assoc, {"QueryRetrieveLevel": "PATIENT", "PatientID": "", "PatientName": "",
                             "NumberOfPatientRelatedStudies": ""}, PATIENT_ROOT)
    assert [s for s, _ in patients] == [0xFF00, 0x0000] and patients[0][1].NumberOfPatientRelatedStudies == 1

    images = _find(assoc, {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": match.StudyInstanceUID,
                           "SeriesInstanceUID": "", "SOPInstanceUID": "", "InstanceNumber": ""}, STUDY_ROOT)
    assert [s for s, _ in images] == [0xFF00] * 3 + [0x0000]
    assert [i.InstanceNumber for _, i in images[:3]] == [1, 2, 3]

    bad = _find(assoc, {"QueryRetrieveLevel": "STUDY", "Modality": "CT"}, STUDY_ROOT)
    assert bad[-1][0] == 0xA900  # a SERIES-level key in a STUDY-level query
    none = _find(assoc, {"QueryRetrieveLevel": "STUDY", "PatientID": "NOBODY"}, STUDY_ROOT)
    assert [s for s, _ in none] == [0x0000]
    assoc.release()
    assert any(e.event_id == "110112" and e.user_name == "ae:FINDER" for e in audit.query())


def test_c_find_needs_read_permission(listen: Any) -> None:
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT  # type: ignore[attr-defined]

    listener = listen()
    scu = AE(ae_title="CT01")  # a scanner: may store, may not query
    scu.add_requested_context(STUDY_ROOT)
    assoc = scu.associate("127.0.0.1", listener.port)
    assert _find(assoc, {"QueryRetrieveLevel": "STUDY", "PatientID": ""}, STUDY_ROOT)[-1][0] == 0x0124
    assoc.release()


def _retrieving_scu(received: list[Any]) -> tuple[AE, list[Any], list[Any]]:
    from pynetdicom import build_role
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelMove,
    )

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        return 0x0000

    ae = AE(ae_title="VIEWER")
    for context in (StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelMove,
                    CTImageStorage, MRImageStorage):
        ae.add_requested_context(context)
    roles = [build_role(CTImageStorage, scp_role=True), build_role(MRImageStorage, scp_role=True)]
    return ae, roles, [(evt.EVT_C_STORE, on_store)]


def test_c_get_returns_the_study_on_the_same_association(listen: Any, secured: Any,
                                                          make_instance: Callable[..., bytes]) -> None:
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET  # type: ignore[attr-defined]

    arch, _, audit = secured
    originals = [make_instance(n, pixels=True) for n in (1, 2, 3)]
    for data in originals:
        arch.ingest(data)
    listener = listen(peers=PEERS + [DicomPeerSettings(ae_title="VIEWER", permissions=["archive:read"])])
    received: list[Any] = []
    ae, roles, handlers = _retrieving_scu(received)
    assoc = ae.associate("127.0.0.1", listener.port, ext_neg=roles, evt_handlers=handlers)
    assert assoc.is_established
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = _dataset(originals[0]).StudyInstanceUID
    statuses = [s.Status for s, _ in assoc.send_c_get(query, GET)]
    assert statuses[-1] == 0x0000 and statuses.count(0xFF00) == 3
    assert sorted(d.SOPInstanceUID for d in received) == sorted(_dataset(o).SOPInstanceUID for o in originals)
    assert received[0].PixelData == next(_dataset(o) for o in originals
                                         if _dataset(o).SOPInstanceUID == received[0].SOPInstanceUID).PixelData
    missing_key = pydicom.Dataset()
    missing_key.QueryRetrieveLevel = "STUDY"
    assert [s.Status for s, _ in assoc.send_c_get(missing_key, GET)][-1] == 0xA900
    assoc.release()
    assert any(e.event_id == "110103" and e.outcome == 0 for e in audit.query())


def test_c_move_sends_to_a_configured_destination_only(listen: Any, secured: Any,
                                                        make_instance: Callable[..., bytes]) -> None:
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE  # type: ignore[attr-defined]

    arch, _, _ = secured
    originals = [make_instance(n) for n in (1, 2)]
    for data in originals:
        arch.ingest(data)
    received: list[Any] = []
    destination = AE(ae_title="DEST")
    destination.add_supported_context(CTImageStorage)
    destination.add_supported_context(MRImageStorage)
    dest_port = free_port()
    server = destination.start_server(("127.0.0.1", dest_port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, lambda e: received.append(e.dataset) or 0)])
    try:
        listener = listen(peers=PEERS + [
            DicomPeerSettings(ae_title="VIEWER", permissions=["archive:read"]),
            DicomPeerSettings(ae_title="DEST", host="127.0.0.1", port=dest_port, permissions=["archive:write"])])
        ae, _, _ = _retrieving_scu([])
        assoc = ae.associate("127.0.0.1", listener.port)
        query = pydicom.Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = _dataset(originals[0]).StudyInstanceUID
        statuses = [s.Status for s, _ in assoc.send_c_move(query, "DEST", MOVE)]
        assert statuses[-1] == 0x0000, statuses
        assert len(received) == 2
        unknown = [s.Status for s, _ in assoc.send_c_move(query, "NOWHERE", MOVE)]
        assert unknown[-1] == 0xA801  # Move destination unknown
        assoc.release()
    finally:
        server.shutdown()


def test_sixteen_simultaneous_associations_lose_nothing(listen: Any, secured: Any,
                                                         make_instance: Callable[..., bytes]) -> None:
    import threading

    from imagebank.archive.consistency import check_archive

    listener = listen()
    arch = secured[0]
    statuses: list[int] = []
    errors: list[BaseException] = []

    def sender(worker: int) -> None:
        try:
            assoc = _scu("CT01").associate("127.0.0.1", listener.port)
            assert assoc.is_established
            for n in range(8):
                number = worker * 8 + n + 1
                # Each worker writes its own series; all share one study and patient (the hard case).
                ds = _dataset(make_instance(number, SeriesInstanceUID=f"1.2.826.0.1.3680043.2.1125.8.{worker}"))
                statuses.append(int(assoc.send_c_store(ds).Status))
            assoc.release()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and statuses == [0x0000] * 128
    stats = arch.index.stats()
    assert (stats["studies"], stats["series"], stats["instances"]) == (1, 16, 128)
    assert check_archive(arch).ok


def test_client_disconnecting_mid_transfer_leaves_nothing_stored(listen: Any, secured: Any,
                                                                 make_instance: Callable[..., bytes]) -> None:
    """Half of a C-STORE's P-DATA fragments, then the TCP connection drops: nothing is stored, the
    listener keeps serving, and the archive stays consistent."""
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import encode
    from pynetdicom.pdu import P_DATA_TF

    from imagebank.archive.consistency import check_archive

    listener = listen(max_pdu_length=16382)  # the common PDU size: an image is many fragments
    arch = secured[0]
    ds = _dataset(make_instance(1, pixels=True))
    assoc = _scu("CT01").associate("127.0.0.1", listener.port, max_pdu=4096)
    assert assoc.is_established
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage)
    primitive = C_STORE()
    primitive.MessageID, primitive.AffectedSOPClassUID = 1, ds.SOPClassUID
    primitive.AffectedSOPInstanceUID, primitive.Priority = ds.SOPInstanceUID, 2
    syntax = context.transfer_syntax[0]
    primitive.DataSet = io.BytesIO(encode(ds, syntax.is_implicit_VR, syntax.is_little_endian))
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    fragments = list(message.encode_msg(context.context_id, assoc.acceptor.maximum_length))
    assert len(fragments) > 10
    sock = assoc.dul.socket.socket
    for fragment in fragments[: len(fragments) // 2]:
        pdu = P_DATA_TF()
        pdu.from_primitive(fragment)
        sock.sendall(pdu.encode())
    sock.close()  # no A-ABORT, no release: the cable is pulled
    assoc.dul.kill_dul()

    again = _scu("CT01").associate("127.0.0.1", listener.port)
    assert again.is_established and again.send_c_echo().Status == 0x0000
    again.release()
    assert arch.index.stats()["instances"] == 0
    assert check_archive(arch).ok


def test_relational_queries_are_negotiated_and_answered(listen: Any, secured: Any,
                                                        make_instance: Callable[..., bytes]) -> None:
    """SOP Class Extended Negotiation (PS3.4 C.5.1.1): relational queries accepted; a SERIES-level
    query with no Study Instance UID matches series across studies."""
    from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND  # type: ignore[attr-defined]

    arch = secured[0]
    arch.ingest(make_instance(1))
    arch.ingest(make_instance(2, StudyInstanceUID="1.2.826.0.1.3680043.2.1125.66",
                              SeriesInstanceUID="1.2.826.0.1.3680043.2.1125.66.1"))
    listener = listen(peers=PEERS + [DicomPeerSettings(ae_title="FINDER", permissions=["archive:read"])])
    scu = AE(ae_title="FINDER")
    scu.add_requested_context(FIND)
    item = SOPClassExtendedNegotiation()
    item.sop_class_uid, item.service_class_application_information = FIND, b"\x01\x01\x01\x01"
    assoc = scu.associate("127.0.0.1", listener.port, ext_neg=[item])
    assert assoc.is_established
    replies = {str(i.sop_class_uid): i.service_class_application_information
               for i in assoc.acceptor.user_information if isinstance(i, SOPClassExtendedNegotiation)}
    assert replies == {str(FIND): b"\x01\x00\x00\x00"}  # relational yes; combined date-time, fuzzy, timezone no
    series_found = _find(assoc, {"QueryRetrieveLevel": "SERIES", "Modality": "", "SeriesInstanceUID": "",
                                 "StudyInstanceUID": ""}, FIND)
    assert [s for s, _ in series_found] == [0xFF00, 0xFF00, 0x0000]
    assoc.release()


def _client_certificate(folder: Path, common_name: str) -> tuple[Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


def test_mutual_tls_binds_the_certificate_to_the_ae_title(listen: Any, tmp_path: Path) -> None:
    """A peer with tls_subject is recognised only over a client certificate naming it: the CT01
    certificate cannot call in as CT02 (nor as CT01 without a certificate: TLS requires one)."""
    server_cert, server_key = _self_signed(tmp_path)
    client_cert, client_key = _client_certificate(tmp_path / "ct01", "ct01.radiology.example")
    peers = [DicomPeerSettings(ae_title="CT01", tls_subject="ct01.radiology.example"),
             DicomPeerSettings(ae_title="CT02", tls_subject="ct02.radiology.example")]
    listener = listen(peers=peers, tls_certfile=str(server_cert), tls_keyfile=str(server_key),
                      tls_ca_file=str(client_cert))

    def call(title: str) -> Any:
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(server_cert))
        client.load_cert_chain(str(client_cert), str(client_key))
        return _scu(title).associate("127.0.0.1", listener.port, tls_args=(client, "127.0.0.1"))

    own = call("CT01")
    assert own.is_established and own.send_c_echo().Status == 0x0000
    own.release()
    assert call("CT02").is_rejected


def test_listener_processes_share_connections_by_load() -> None:
    """Listener processes share one socket; the one with fewer open associations accepts, and a busier one
    takes a connection itself only when no sibling did within its grace period."""
    import multiprocessing
    import socket
    import time

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from imagebank.accept import YIELD_FOR
    from imagebank.dimse.scp import SharedListener, _SharedServer

    loads = multiprocessing.get_context("spawn").Array("i", [0, 0], lock=False)
    ae = AE()
    ae.add_supported_context(Verification)
    first = ae.make_server(("127.0.0.1", 0), server_class=_SharedServer, share=SharedListener(loads, 0))
    second = ae.make_server(("127.0.0.1", 0), server_class=_SharedServer,
                            share=SharedListener(loads, 1, first.socket))
    clients = []
    try:
        assert second.server_address == first.server_address
        with pytest.raises(BlockingIOError):
            first.get_request()  # nobody waiting: returns at once instead of blocking the serve loop
        clients.append(socket.create_connection(first.server_address))
        loads[0] = 2  # the first process is busier
        with pytest.raises(BlockingIOError):
            first.get_request()
        accepted, _ = second.get_request()
        accepted.close()
        assert loads[1] == 1
        clients.append(socket.create_connection(first.server_address))
        loads[1] = 1  # now the second one is less busy but does not take it (stuck sibling)
        with pytest.raises(BlockingIOError):
            first.get_request()
        time.sleep(YIELD_FOR)
        accepted, _ = first.get_request()
        accepted.close()
        # the load is counted, not incremented: this process's one accepted connection (its association
        # thread not started yet still counts), whatever was written there before
        assert loads[0] == 1
    finally:
        for client in clients:
            client.close()
        second.server_close()
        first.server_close()
