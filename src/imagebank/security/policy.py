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
