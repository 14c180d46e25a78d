"""The audit trail is append-only and tamper-evident; it exports as DICOM XML and FHIR AuditEvent."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from imagebank.security.audit import AuditEvent, AuditTrail, AuditWriteFailed, to_dicom_xml, to_fhir
from imagebank.storage.schema import audit_chain_head, audit_events


def _fill(trail: AuditTrail, n: int = 5) -> None:
    for i in range(n):
        trail.record(AuditEvent("110110", "R", user_name=f"user{i % 2}", network_address="127.0.0.1",
                                patient_id=f"MRN{i % 3}@IBGH", object_type="study", object_id=f"1.2.3.{i}"))


def test_intact_chain_verifies_and_queries_by_patient_and_user(secured: Any) -> None:
    _, _, trail = secured
    _fill(trail, 6)
    assert trail.verify() == []
    assert [e.seq for e in trail.query(patient_id="MRN0@IBGH")] == [1, 4]
    assert len(trail.query(user_name="user1")) == 3


def test_modified_record_is_detected(secured: Any) -> None:
    _, _, trail = secured
    _fill(trail)
    with trail.engine.begin() as conn:
        conn.execute(update(audit_events).where(audit_events.c.seq == 3).values(user_name="someone-else"))
    assert trail.verify() == ["record 3 was modified"]


def test_deleted_record_is_detected(secured: Any) -> None:
    _, _, trail = secured
    _fill(trail)
    with trail.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq == 2))
    problems = trail.verify()
    assert "records 2..2 are missing" in problems and "record 3 does not follow the record before it" in problems


def test_truncated_tail_is_detected(secured: Any) -> None:
    _, _, trail = secured
    _fill(trail)
    with trail.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq >= 4))
    assert any("removed from the end" in p for p in trail.verify())


def test_rewriting_the_chain_without_the_key_is_detected(secured: Any) -> None:
    _, _, trail = secured
    _fill(trail, 3)
    forger = AuditTrail(trail.engine, b"not the key")
    with trail.engine.begin() as conn:
        conn.execute(delete(audit_events))
        conn.execute(delete(audit_chain_head))
    for _ in range(3):
        forger.record(AuditEvent("110110", "R", user_name="forger"))
    assert trail.verify() == [f"record {i} was modified" for i in (1, 2, 3)] + [
        "the chain head was rewritten without the audit key"]


def test_exports_are_well_formed(secured: Any) -> None:
    _, _, trail = secured
    _fill(trail, 1)
    event = trail.query()[0]
    root = ET.fromstring(to_dicom_xml(event))
    assert root.tag == "AuditMessage"
    assert root.find("EventIdentification/EventID").get("csd-code") == "110110"
    assert root.find("ActiveParticipant").get("NetworkAccessPointID") == "127.0.0.1"
    assert root.find("ParticipantObjectIdentification").get("ParticipantObjectID") == "MRN0@IBGH"
    fhir = to_fhir(event)
    assert fhir["resourceType"] == "AuditEvent" and fhir["type"]["code"] == "110110" and fhir["outcome"] == "0"
    assert fhir["entity"][0]["what"]["identifier"]["value"] == "MRN0@IBGH"


def test_rewinding_the_head_after_cutting_the_tail_is_detected(secured: Any) -> None:
    _, _, trail = secured
    _fill(trail, 5)
    third = trail.query()[2]
    with trail.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq > 3))
        conn.execute(update(audit_chain_head).values(last_seq=3, last_hash=third.hash))
    assert trail.verify() == ["the chain head was rewritten without the audit key"]


def test_concurrent_appends_from_a_fresh_database_form_one_unbroken_chain(secured: Any) -> None:
    """Threads racing from the very first record (no chain head yet) all land, each exactly once, in one
    chain: the head row serializes them and the loser of the head creation retries behind it."""
    from concurrent.futures import ThreadPoolExecutor

    _, _, trail = secured
    barrier = threading.Barrier(8)

    def append(worker: int) -> list[int]:
        barrier.wait()
        return [trail.record(AuditEvent("110112", "E", user_name=f"w{worker}", object_type="http",
                                        object_id=f"GET /q/{worker}/{i}")).seq for i in range(15)]

    with ThreadPoolExecutor(8) as pool:
        seqs = [seq for chunk in pool.map(append, range(8)) for seq in chunk]
    assert sorted(seqs) == list(range(1, 121))
    assert trail.verify() == []
    stored = trail.query(limit=200)
    assert len({e.object_id for e in stored}) == 120
    assert all(e.at.tzinfo is not None for e in stored)  # timestamps read back as written (UTC)


def test_a_failed_append_leaves_neither_a_record_nor_a_moved_head(secured: Any) -> None:
    """The record's insert fails after the head was read: the whole append is rolled back."""
    _, _, trail = secured
    _fill(trail, 2)
    with trail.engine.begin() as conn:  # the head now points one record back: the next insert collides
        conn.execute(update(audit_chain_head).values(last_seq=1))
    with pytest.raises(AuditWriteFailed, match=r"could not be written \((IntegrityError|UniqueViolation)\)"):
        trail.record(AuditEvent("110110", "R", user_name="x", object_type="study", object_id="1.2.3"))
    with trail.engine.begin() as conn:
        assert conn.execute(select(audit_chain_head.c.last_seq)).scalar_one() == 1  # not moved
        conn.execute(update(audit_chain_head).values(last_seq=2))
    assert [e.seq for e in trail.query()] == [1, 2]
    _fill(trail, 1)
    assert trail.verify() == [] and [e.seq for e in trail.query()] == [1, 2, 3]
