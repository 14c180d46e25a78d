"""The authorization decision: one pure function every protocol adapter asks (HTTP routes, DICOM
associations, CLI). Default deny: anything not granted below is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imagebank.security.roles import ROLE_PERMISSIONS, Permission, Role


@dataclass(frozen=True)
class Principal:
    """Who is asking. ``kind`` is ``user``, ``token``, ``dicom-peer`` or ``anonymous``."""

    kind: str
    name: str
    roles: frozenset[Role] = frozenset()
    #: Token scopes narrow a token below its user's roles (empty = the roles' full permissions).
    scopes: frozenset[Permission] = frozenset()
    #: For patients: the patient records (PatientID@issuer) that are theirs.
    own_patients: frozenset[str] = frozenset()
    user_id: int | None = None
    address: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def authenticated(self) -> bool:
        return self.kind != "anonymous"

    def permissions(self) -> frozenset[Permission]:
        granted: set[Permission] = set()
        for role in self.roles:
            granted |= ROLE_PERMISSIONS.get(role, frozenset())
        if self.scopes:
            granted &= self.scopes
        return frozenset(granted)


ANONYMOUS = Principal(kind="anonymous", name="anonymous")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def decide(principal: Principal, permission: Permission, *, patient: str | None = None) -> Decision:
    """May ``principal`` use ``permission`` (on ``patient``'s data, when the resource is known)?"""
    if permission is Permission.PUBLIC:
        return Decision(True, "public")
    if not principal.authenticated:
        return Decision(False, "authentication required")
    if permission is Permission.AUTHENTICATED:
        return Decision(True, "authenticated")
    if permission not in principal.permissions():
        return Decision(False, f"{permission.value} not granted to roles "
                               f"{', '.join(sorted(r.value for r in principal.roles)) or 'none'}")
    if permission is Permission.PHR_OWN and patient is not None and patient not in principal.own_patients:
        return Decision(False, "patients may only reach their own records")
    return Decision(True, f"granted by role: {permission.value}")


# ------------------------------------------------------------------ DICOM associations

@dataclass(frozen=True)
class DicomPeer:
    """A known DICOM application entity: who it is (AE title, optionally from which address) and what
    it may do (a token-like set of permissions; C-ECHO needs only to be known)."""

    ae_title: str
    host: str | None = None  # None: any address
    permissions: frozenset[Permission] = frozenset({Permission.ARCHIVE_WRITE})
    tls_subject: str | None = None  # None: any (or no) client certificate


#: DIMSE service -> permission it needs (PS3.4 Annex A Verification, B Storage, C Query/Retrieve).
DIMSE_PERMISSIONS: dict[str, Permission] = {
    "C-ECHO": Permission.AUTHENTICATED,
    "C-STORE": Permission.ARCHIVE_WRITE,
    "C-FIND": Permission.ARCHIVE_READ,
    "C-MOVE": Permission.ARCHIVE_READ,
    "C-GET": Permission.ARCHIVE_READ,
}


def peer_principal(calling_ae: str, address: str, peers: list[DicomPeer],
                   certificate_names: frozenset[str] = frozenset()) -> Principal | None:
    """The principal of an association request, or ``None``: unknown callers are refused by default.

    AE titles compare without the space padding DICOM allows (PS3.5 6.2, AE value representation).
    A peer bound to a TLS subject matches only over an association whose verified client certificate
    names it (``certificate_names``: subject CN and DNS SANs; PS3.15 B.1 identifies TLS nodes by certificate).
    """
    title = calling_ae.strip()
    for peer in peers:
        if peer.tls_subject is not None and peer.tls_subject not in certificate_names:
            continue
        if peer.ae_title.strip() == title and (peer.host is None or peer.host == address):
            return Principal(kind="dicom-peer", name=title, roles=frozenset({Role.SERVICE}),
                             scopes=peer.permissions | {Permission.AUTHENTICATED}, address=address)
    return None


def decide_dimse(principal: Principal | None, service: str) -> Decision:
    if principal is None:
        return Decision(False, "unknown calling AE title or address")
    permission = DIMSE_PERMISSIONS.get(service)
    if permission is None:
        return Decision(False, f"{service} is not offered")
    if permission is Permission.AUTHENTICATED:
        return Decision(True, "known peer")
    if permission not in principal.scopes:
        return Decision(False, f"{service} needs {permission.value}, not granted to this peer")
    return Decision(True, f"peer granted {permission.value}")
