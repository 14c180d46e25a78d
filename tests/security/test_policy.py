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


def test_unknown_dicom_callers_are_refused_and_peers_get_what_they_are_granted() -> None:
    from imagebank.security.policy import DicomPeer, decide_dimse, peer_principal

    peers = [DicomPeer("CT01", "10.0.0.5", frozenset({Permission.ARCHIVE_WRITE})),
             DicomPeer("PACS", permissions=frozenset({Permission.ARCHIVE_READ, Permission.ARCHIVE_WRITE}))]
    assert peer_principal("EVIL", "10.0.0.9", peers) is None
    assert not decide_dimse(None, "C-ECHO").allowed
    assert peer_principal("CT01", "10.0.0.6", peers) is None  # right title, wrong address
    scanner = peer_principal("CT01  ", "10.0.0.5", peers)
    assert decide_dimse(scanner, "C-ECHO").allowed and decide_dimse(scanner, "C-STORE").allowed
    assert not decide_dimse(scanner, "C-FIND").allowed and not decide_dimse(scanner, "C-MOVE").allowed
    pacs = peer_principal("PACS", "192.0.2.1", peers)
    assert all(decide_dimse(pacs, s).allowed for s in ("C-STORE", "C-FIND", "C-MOVE", "C-GET"))
    assert not decide_dimse(pacs, "N-DELETE").allowed
