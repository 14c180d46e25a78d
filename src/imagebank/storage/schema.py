"""The metadata index schema (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Columns carry every attribute that QIDO-RS (PS3.18 Table 10.6.1-5, required matching and return keys)
and C-FIND (PS3.4 C.6.1.1 / C.6.2.1 patient, study, series and instance level keys) match on or
return, plus the computed counts and Modalities in Study, so a query never has to open a blob.

Representation choices:
- DA/TM/DT values are kept as their DICOM strings (``YYYYMMDD``, ``HHMMSS.FFFFFF``). Their fixed
  width makes lexical order equal to time order, so range matching (PS3.4 C.2.2.2.5) is a plain
  ``BETWEEN`` on both databases, and a malformed date in a real-world file cannot block its ingest.
- Absent Type 2/3 values are stored as ``''`` only where a column takes part in a unique key
  (Issuer of Patient ID); elsewhere as NULL.
- Person names keep the DICOM string (``Family^Given``) plus a folded copy (upper case, no accents,
  components separated by spaces) for fuzzy matching (PS3.18 8.3.4.1 ``fuzzymatching``).
- The full DICOM JSON header (PS3.18 F.2) of each instance, without pixel data and with large values
  as BulkDataURIs, sits in its own table so index scans never drag it along.

Any change here needs a new Alembic revision in ``migrations/versions``; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

UID = String(64)  # PS3.5 9.1: at most 64 characters
PN = String(324)  # PS3.5 6.2: 64 chars per component group, up to five groups
LO = String(64)
SH = String(16)
DA = String(8)
TM = String(16)
CS = String(16)

patients = Table(
    "patients",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("patient_id", LO, nullable=False),
    Column("issuer_of_patient_id", LO, nullable=False, server_default=""),
    Column("patient_name", PN),
    Column("patient_name_search", PN),
    Column("patient_birth_date", DA),
    Column("patient_birth_time", TM),
    Column("patient_sex", CS),
    Column("other_patient_ids", Text),
    Column("ethnic_group", SH),
    Column("patient_comments", Text),
    Column("number_of_patient_related_studies", Integer, nullable=False, server_default="0"),
    Column("number_of_patient_related_series", Integer, nullable=False, server_default="0"),
    Column("number_of_patient_related_instances", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("patient_id", "issuer_of_patient_id"),
    Index(None, "patient_name_search"),
    Index(None, "patient_birth_date"),
)

studies = Table(
    "studies",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("study_instance_uid", UID, nullable=False, unique=True),
    Column("patient_pk", ForeignKey("patients.id", ondelete="CASCADE"), nullable=False),
    Column("study_date", DA),
    Column("study_time", TM),
    Column("accession_number", SH),
    Column("issuer_of_accession_number", LO),
    Column("study_id", SH),
    Column("study_description", LO),
    Column("referring_physician_name", PN),
    Column("referring_physician_name_search", PN),
    Column("name_of_physicians_reading_study", PN),
    Column("institution_name", LO),
    Column("patient_age", String(4)),
    Column("patient_size", String(16)),
    Column("patient_weight", String(16)),
    Column("timezone_offset_from_utc", String(5)),
    Column("specific_character_set", String(128)),
    #: Distinct Modality values of the study's series, sorted, backslash-separated (as a DICOM CS VM 1-n).
    Column("modalities_in_study", String(256)),
    #: Distinct SOP Class UIDs of the study's instances, backslash-separated.
    Column("sop_classes_in_study", Text),
    Column("number_of_study_related_series", Integer, nullable=False, server_default="0"),
    Column("number_of_study_related_instances", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index(None, "patient_pk", "study_date"),
    Index(None, "study_date", "study_time"),
    Index(None, "accession_number"),
    Index(None, "referring_physician_name_search"),
    Index(None, "updated_at"),
)

series = Table(
    "series",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("series_instance_uid", UID, nullable=False, unique=True),
    Column("study_pk", ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
    Column("modality", CS),
    Column("series_number", Integer),
    Column("series_description", LO),
    Column("series_date", DA),
    Column("series_time", TM),
    Column("body_part_examined", CS),
    Column("laterality", CS),
    Column("protocol_name", LO),
    Column("manufacturer", LO),
    Column("manufacturer_model_name", LO),
    Column("station_name", SH),
    Column("institution_name", LO),
    Column("performed_procedure_step_start_date", DA),
    Column("performed_procedure_step_start_time", TM),
    # Request Attributes Sequence (0040,0275), first item: QIDO-RS series-level matching keys.
    Column("requested_procedure_id", SH),
    Column("scheduled_procedure_step_id", SH),
    Column("number_of_series_related_instances", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Cohort queries ("prostate MR") filter on modality and body part, then join to the study.
    Index(None, "modality", "body_part_examined", "study_pk"),
    Index(None, "study_pk", "series_number"),
)

instances = Table(
    "instances",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("sop_instance_uid", UID, nullable=False, unique=True),
    Column("series_pk", ForeignKey("series.id", ondelete="CASCADE"), nullable=False),
    Column("sop_class_uid", UID, nullable=False),
    Column("instance_number", Integer),
    Column("transfer_syntax_uid", UID, nullable=False),
    Column("rows", Integer),
    Column("columns", Integer),
    Column("bits_allocated", Integer),
    Column("number_of_frames", Integer),
    Column("content_date", DA),
    Column("content_time", TM),
    Column("acquisition_datetime", String(26)),
    Column("image_type", String(128)),
    Column("completion_flag", CS),
    Column("verification_flag", CS),
    Column("blob_key", String(80), nullable=False),
    Column("size", BigInteger, nullable=False),
    #: Hex digest of the stored bytes, by the archive's algorithm (``archive_settings.content_digest``).
    Column("content_digest", String(64), nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False),
    Column("origin", String(32), nullable=False),
    Index(None, "series_pk", "instance_number"),
    Index(None, "sop_class_uid"),
    Index(None, "blob_key"),
)

instance_headers = Table(
    "instance_headers",
    metadata,
    Column("instance_pk", ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True),
    #: DICOM JSON (PS3.18 F.2) of the whole header, without File Meta and Pixel Data.
    Column("dicom_json", Text, nullable=False),
)

#: Conflicting duplicates (rejected or replaced): the "recorded" half of the duplicate policy.
ingest_log = Table(
    "ingest_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("sop_instance_uid", UID, nullable=False),
    Column("action", String(32), nullable=False),
    Column("previous_digest", String(64)),
    Column("new_digest", String(64)),
    Column("origin", String(32), nullable=False),
    Index(None, "sop_instance_uid"),
    Index(None, "at"),
)

#: Choices made once for the life of an archive (``content_digest``: see :mod:`imagebank.storage.digest`).
archive_settings = Table(
    "archive_settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

#: Bulk-ingest journal: which source files a job already committed, so a rerun resumes.
ingest_sources = Table(
    "ingest_sources",
    metadata,
    Column("job_key", String(64), primary_key=True),
    Column("source_key", String(64), primary_key=True),  # SHA-256 of the source path
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("outcome", String(16), nullable=False),
)

# --------------------------------------------------------------------------- security

users = Table(
    "users",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("username", String(128), nullable=False, unique=True),
    Column("display_name", String(256)),
    #: argon2id PHC string; NULL for accounts that only sign in through OpenID Connect.
    Column("password_hash", String(256)),
    #: Comma-separated role names (see imagebank.security.roles.Role).
    Column("roles", String(256), nullable=False),
    #: For patient accounts: their records as PatientID@Issuer, comma-separated.
    Column("patient_links", Text),
    Column("oidc_issuer", String(512)),
    Column("oidc_subject", String(256)),
    Column("disabled", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("oidc_issuer", "oidc_subject"),
)

#: Sign-in sessions. Only the SHA-256 of the session secret is stored.
sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("address", String(64)),
    Index(None, "user_id"),
)

#: API tokens for machine clients and scripts: hashed, scoped, expiring, revocable.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    #: Comma-separated permissions the token is limited to ('' = all of its user's).
    Column("scopes", String(512), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    Index(None, "user_id"),
)

#: Failed-attempt counters for lockout (passwords, access codes), keyed by what is being guessed.
auth_lockouts = Table(
    "auth_lockouts",
    metadata,
    Column("subject", String(256), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("locked_until", DateTime(timezone=True)),
)

#: ATNA-shaped audit events (RFC 3881 / DICOM PS3.15 A.5), append-only, HMAC hash-chained.
audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("event_id", String(64), nullable=False),  # DCM code, e.g. 110110 Patient Record
    Column("event_action", String(1), nullable=False),  # C R U D E
    Column("outcome", Integer, nullable=False),  # 0 success, 4 minor, 8 serious, 12 major failure
    Column("user_name", String(128)),
    Column("user_roles", String(256)),
    Column("network_address", String(64)),
    Column("patient_id", String(130)),  # PatientID@Issuer of the participant patient, if any
    Column("object_type", String(32)),  # study, series, instance, user, token, config, export ...
    Column("object_id", String(256)),
    Column("detail", Text),  # canonical JSON
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index(None, "patient_id", "at"),
    Index(None, "user_name", "at"),
    Index(None, "at"),
)

#: The chain head (one row): the last sequence number and hash, so a deleted tail is detected too.
audit_chain_head = Table(
    "audit_chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    #: HMAC of (last_seq, last_hash) under the audit key: the head cannot be rewound without the key.
    Column("mac", String(64)),
)

# --------------------------------------------------------------------------- EHR (FHIR R4) and patient index
#
# One row per FHIR resource (current version) with the facts that searches, the timeline and cohort
# queries use pulled out into columns; the resource itself is kept as JSON. Earlier versions move to
# ``ehr_resource_history`` (FHIR R4 http.html#history: versioned updates, never duplicates).
# Identity: a *patient record* is one person; the FHIR Patient resources, their identifiers (MRNs of
# several systems) and, through ``identifier_systems``, the DICOM PatientID + IssuerOfPatientID that
# carry the same identifier all point at it. Merges (Patient.link, a shared identifier) re-point rows
# to the surviving record and leave ``merged_into`` behind so old record ids still resolve.

patient_records = Table(
    "patient_records",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("merged_into", BigInteger().with_variant(Integer, "sqlite")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index(None, "merged_into"),
)

#: Business identifiers of a patient (FHIR Patient.identifier: system + value), one record each.
patient_identifiers = Table(
    "patient_identifiers",
    metadata,
    Column("system", String(256), nullable=False),
    Column("value", String(128), nullable=False),
    Column("record_id", ForeignKey("patient_records.id"), nullable=False),
    Column("use", String(16)),
    UniqueConstraint("system", "value"),
    Index(None, "record_id"),
    Index(None, "value"),
)

#: FHIR Patient logical ids -> record. A row may exist before its Patient resource arrives
#: (a Condition naming ``Patient/123`` loaded first: NDJSON files come one resource type at a time).
fhir_patient_ids = Table(
    "fhir_patient_ids",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("record_id", ForeignKey("patient_records.id"), nullable=False),
    Column("received", Integer, nullable=False, server_default="0"),  # 1 once the Patient itself arrived
    Index(None, "record_id"),
)

#: Which identifier system a DICOM Issuer of Patient ID (0010,0021) stands for (from ``[ehr]`` settings).
identifier_systems = Table(
    "identifier_systems",
    metadata,
    Column("issuer", String(64), primary_key=True),
    Column("system", String(256), nullable=False),
    Index(None, "system"),
)

ehr_resources = Table(
    "ehr_resources",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("resource_type", String(40), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("record_id", ForeignKey("patient_records.id")),
    Column("status", String(32)),
    #: Start of the clinically relevant time (effective, onset, performed, period.start, started,
    #: authoredOn; birthDate for Patient): its date for range search and cohort intervals, and the
    #: original FHIR string (date or dateTime) for display and ordering.
    Column("effective_date", Date),
    Column("effective_at", String(40)),
    Column("effective_end", Date),
    Column("code_system", String(256)),
    Column("code", String(128)),
    #: Code display, or for Patient the folded name ("FAMILY GIVEN") used by name search.
    Column("label", String(512)),
    Column("value_num", Float),
    Column("value_unit", String(64)),
    Column("value_text", String(512)),
    Column("accession_number", String(64)),
    Column("study_instance_uid", UID),
    Column("encounter_id", String(64)),
    Column("content_hash", String(64), nullable=False),
    Column("resource_json", Text, nullable=False),
    UniqueConstraint("resource_type", "resource_id"),
    Index(None, "record_id", "effective_date"),
    Index(None, "resource_type", "effective_date"),
    Index(None, "accession_number"),
    Index(None, "study_instance_uid"),
)

#: Every coding and identifier of a resource, so searches and cohorts can use any code system:
#: ``role`` is code, category, value, component, component-value, reason, body-site or identifier.
ehr_resource_codes = Table(
    "ehr_resource_codes",
    metadata,
    Column("resource_pk", ForeignKey("ehr_resources.id", ondelete="CASCADE"), nullable=False),
    Column("role", String(16), nullable=False),
    Column("system", String(256), nullable=False, server_default=""),
    Column("code", String(128), nullable=False),
    Index(None, "code", "system", "role"),
    Index(None, "resource_pk"),
)

ehr_resource_history = Table(
    "ehr_resource_history",
    metadata,
    Column("resource_type", String(40), primary_key=True),
    Column("resource_id", String(64), primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("resource_json", Text, nullable=False),
)

#: Resumable file ingest: how far into each NDJSON/Bundle file a job has committed.
ehr_ingest_progress = Table(
    "ehr_ingest_progress",
    metadata,
    Column("job_key", String(64), primary_key=True),
    Column("source_key", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("done", Integer, nullable=False, server_default="0"),
)
