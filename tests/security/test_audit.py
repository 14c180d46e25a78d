"""The audit trail is append-only and tamper-evident; it exports as DICOM XML and FHIR AuditEvent."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from sqlalchemy import delete, update

from imagebank.security.audit import AuditEvent, AuditTrail, to_dicom_xml, to_fhir
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
