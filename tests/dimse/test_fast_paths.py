"""What the listener changes in pynetdicom's machinery gives the same bytes and the same behaviour:
command sets encoded without pydicom, event-driven association threads, whole-PDU reads."""

from __future__ import annotations

import threading
import time
from io import BytesIO
from typing import Any

import pynetdicom
import pytest
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.dimse_messages import C_ECHO_RSP, C_FIND_RSP, C_GET_RSP, C_MOVE_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from imagebank.dimse import reactor
from imagebank.dimse.commands import encode_command_set
from tests.conftest import free_port


def test_pynetdicom_is_the_version_the_overrides_were_written_for() -> None:
    # dimse.reactor follows pynetdicom 3.0.4's reactor loops and RequestHandler._create_association;
    # a new pynetdicom must be read against them before the pin moves.
    assert pynetdicom.__version__ == "3.0.4"


def _commands() -> list[Dataset]:
    store_rsp = C_STORE()
    store_rsp.MessageIDBeingRespondedTo = 7
    store_rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    store_rsp.AffectedSOPInstanceUID = "1.2.3.4.5"  # odd length: NUL padding
    store_rsp.Status = 0x0000
    failed = C_STORE()
    failed.MessageIDBeingRespondedTo = 65535
    failed.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    failed.AffectedSOPInstanceUID = "2.25.1234"
    failed.Status = 0xA900
    failed.ErrorComment = "StudyInstanceUID is already filed under a different patient"  # LO, odd: space
    store_rq = C_STORE()
    store_rq.MessageID = 3
    store_rq.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    store_rq.AffectedSOPInstanceUID = "1.2.3"
    store_rq.Priority = 2
    store_rq.MoveOriginatorApplicationEntityTitle = "PACS"
    store_rq.MoveOriginatorMessageID = 9
    echo = C_ECHO()
    echo.MessageIDBeingRespondedTo = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    echo.Status = 0
    find = C_FIND()
    find.MessageIDBeingRespondedTo = 2
    find.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    find.Status = 0xFF00
    find.Identifier = BytesIO(b"")
    move = C_MOVE()
    move.MessageIDBeingRespondedTo = 4
    move.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    move.Status = 0xB000
    move.NumberOfRemainingSuboperations = 0
    move.NumberOfCompletedSuboperations = 12
    move.NumberOfFailedSuboperations = 1
    move.NumberOfWarningSuboperations = 0
    get = C_GET()
    get.MessageIDBeingRespondedTo = 5
    get.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.3"
    get.Status = 0xFF00
    get.NumberOfRemainingSuboperations = 100
    get.NumberOfCompletedSuboperations = 0
    get.NumberOfFailedSuboperations = 0
    get.NumberOfWarningSuboperations = 0
    built = []
    for primitive, message in ((store_rsp, C_STORE_RSP), (failed, C_STORE_RSP), (store_rq, C_STORE_RQ),
                               (echo, C_ECHO_RSP), (find, C_FIND_RSP), (move, C_MOVE_RSP), (get, C_GET_RSP)):
        msg = message()
        msg.primitive_to_message(primitive)
        built.append(msg.command_set)
    return built


def test_command_sets_are_encoded_byte_for_byte_as_pydicom_encodes_them() -> None:
    commands = _commands()
    for command in commands:
        assert encode_command_set(command) == encode(command, True, True)
    # the group length pynetdicom computed (with the fast path installed or not) is the encoded length
    for command in commands:
        assert command.CommandGroupLength == len(encode_command_set(command) or b"") - 12


def test_command_sets_with_other_element_types_are_left_to_pydicom() -> None:
    command = _commands()[1]
    command.OffendingElement = [0x00100010]  # AT
    assert encode_command_set(command) is None
    not_a_command = Dataset()
    not_a_command.PatientID = "X"
    assert encode_command_set(not_a_command) is None


@pytest.fixture
def echo_server() -> Any:
    ae = AE(ae_title="FAST")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage)
    port = free_port()
    server = ae.make_server(("127.0.0.1", port), request_handler=reactor.EventDrivenRequestHandler)
    ae._servers.append(server)  # as AE.start_server does
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port, server
    ae.shutdown()


def test_event_driven_association_answers_at_once_and_releases(echo_server: Any) -> None:
    port, server = echo_server
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port)
    assert assoc.is_established
    [acceptor] = server.active_associations
    assert isinstance(acceptor, reactor.EventDrivenAssociation)
    assert isinstance(acceptor.dul, reactor.EventDrivenDUL)
    started = time.perf_counter()
    for _ in range(20):
        assert assoc.send_c_echo().Status == 0
    # pynetdicom's requestor still polls (1 ms sleeps): 20 echoes stay far below a poll interval each
    assert time.perf_counter() - started < 20 * reactor.MAX_WAIT
    assoc.release()
    assert assoc.is_released
    deadline = time.monotonic() + 5
    while acceptor.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not acceptor.is_alive() and not acceptor.dul.is_alive()


def test_event_driven_association_notices_an_abort_and_a_dropped_connection(echo_server: Any) -> None:
    port, server = echo_server
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    for end in ("abort", "drop"):
        assoc = ae.associate("127.0.0.1", port)
        assert assoc.is_established
        acceptor = next(a for a in server.active_associations if a.is_established)
        if end == "abort":
            assoc.abort()
        else:
            assoc.dul.socket.socket.close()
        deadline = time.monotonic() + 5
        while acceptor.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not acceptor.is_alive(), end


def test_whole_pdu_reads_return_what_arrived_when_the_peer_closes() -> None:
    import socket

    left, right = socket.socketpair()
    sock = reactor.WholePduSocket.__new__(reactor.WholePduSocket)
    sock.socket = left
    right.sendall(b"\x04\x00" + b"x" * 1000)
    assert sock.recv(2) == bytearray(b"\x04\x00")
    assert sock.recv(1000) == bytearray(b"x" * 1000)
    right.sendall(b"abc")
    right.close()
    assert sock.recv(10) == bytearray(b"abc")
    left.close()
