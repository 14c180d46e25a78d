"""Roles, permissions and which role holds which permission: the whole access model in one table.

Reading this file should answer "who may do what". Zones (DESIGN.md): identified data lives in the
clinical zone; researchers hold only research-zone permissions; the linkage vault (pseudonym ->
patient) is the honest broker's alone; patients reach only their own records.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    ADMIN = "admin"
    CLINICIAN = "clinician"
    RADIOLOGIST = "radiologist"
    RESEARCHER = "researcher"
    HONEST_BROKER = "honest_broker"
    PATIENT = "patient"
    #: Machine clients (modalities, PACS, EHR interfaces) authenticating with API tokens.
    SERVICE = "service"


class Permission(enum.StrEnum):
    PUBLIC = "public"  # no authentication at all (health check, login page, static assets)
    AUTHENTICATED = "authenticated"  # any signed-in principal (own profile, sign-out)
    ARCHIVE_READ = "archive:read"  # identified images and index (QIDO/WADO, C-FIND/MOVE/GET)
    ARCHIVE_WRITE = "archive:write"  # ingest (STOW, C-STORE, CLI import)
    ARCHIVE_DELETE = "archive:delete"
    EHR_READ = "ehr:read"
    EHR_WRITE = "ehr:write"
    RESEARCH_READ = "research:read"  # de-identified research zone only
    RESEARCH_EXPORT = "research:export"
    LINKAGE_READ = "linkage:read"  # pseudonym -> identity: honest broker only, always audited
    AUDIT_READ = "audit:read"
    USERS_MANAGE = "users:manage"
    CONFIG_MANAGE = "config:manage"
    PHR_OWN = "phr:own"  # a patient's own vault; the resource check narrows it to their records


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset({
        Permission.ARCHIVE_READ, Permission.ARCHIVE_WRITE, Permission.ARCHIVE_DELETE, Permission.EHR_READ,
        Permission.EHR_WRITE, Permission.AUDIT_READ, Permission.USERS_MANAGE, Permission.CONFIG_MANAGE,
    }),
    Role.CLINICIAN: frozenset({Permission.ARCHIVE_READ, Permission.EHR_READ}),
    Role.RADIOLOGIST: frozenset({Permission.ARCHIVE_READ, Permission.ARCHIVE_WRITE, Permission.EHR_READ}),
    Role.RESEARCHER: frozenset({Permission.RESEARCH_READ, Permission.RESEARCH_EXPORT}),
    Role.HONEST_BROKER: frozenset({Permission.LINKAGE_READ, Permission.RESEARCH_READ, Permission.AUDIT_READ}),
    Role.PATIENT: frozenset({Permission.PHR_OWN}),
    Role.SERVICE: frozenset({Permission.ARCHIVE_READ, Permission.ARCHIVE_WRITE, Permission.EHR_WRITE}),
}

#: Permissions that touch identified (clinical-zone) data: every use is written to the audit trail.
IDENTIFIED_DATA = frozenset({
    Permission.ARCHIVE_READ, Permission.ARCHIVE_WRITE, Permission.ARCHIVE_DELETE, Permission.EHR_READ,
    Permission.EHR_WRITE, Permission.LINKAGE_READ, Permission.PHR_OWN,
})
