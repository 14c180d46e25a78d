from imagebank.security.policy import ANONYMOUS, Principal, decide
from imagebank.security.roles import IDENTIFIED_DATA, ROLE_PERMISSIONS, Permission, Role


def _as(*roles: Role, scopes: frozenset[Permission] = frozenset(), own: frozenset[str] = frozenset()) -> Principal:
    return Principal(kind="user", name="u", roles=frozenset(roles), scopes=scopes, own_patients=own)


def test_default_deny_for_anonymous_and_unknown_permissions() -> None:
    assert decide(ANONYMOUS, Permission.PUBLIC).allowed
    for permission in Permission:
        if permission is not Permission.PUBLIC:
            assert not decide(ANONYMOUS, permission).allowed
    assert not decide(_as(), Permission.ARCHIVE_READ).allowed  # a user with no role gets nothing


def test_researchers_never_reach_identified_data() -> None:
    researcher = _as(Role.RESEARCHER)
    for permission in IDENTIFIED_DATA:
        assert not decide(researcher, permission).allowed
    assert decide(researcher, Permission.RESEARCH_READ).allowed


def test_only_the_honest_broker_reads_the_linkage_vault() -> None:
    holders = {role for role, perms in ROLE_PERMISSIONS.items() if Permission.LINKAGE_READ in perms}
    assert holders == {Role.HONEST_BROKER}


def test_patients_reach_only_their_own_records() -> None:
    patient = _as(Role.PATIENT, own=frozenset({"MRN1@IBGH"}))
    assert decide(patient, Permission.PHR_OWN, patient="MRN1@IBGH").allowed
    assert not decide(patient, Permission.PHR_OWN, patient="MRN2@IBGH").allowed
    assert not decide(patient, Permission.ARCHIVE_READ).allowed


def test_token_scopes_narrow_but_never_widen() -> None:
    narrowed = _as(Role.ADMIN, scopes=frozenset({Permission.ARCHIVE_READ}))
    assert decide(narrowed, Permission.ARCHIVE_READ).allowed
    assert not decide(narrowed, Permission.ARCHIVE_WRITE).allowed
    widened = _as(Role.CLINICIAN, scopes=frozenset({Permission.USERS_MANAGE}))
    assert not decide(widened, Permission.USERS_MANAGE).allowed
