"""Passwords, lockout under brute force, sessions and API tokens (on SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from imagebank.security.accounts import AccountError, LockedOut
from imagebank.security.roles import Permission, Role
from imagebank.security.secrets import new_token
from imagebank.storage.schema import api_tokens, users

PASSWORD = "correct horse battery"


def test_password_is_stored_as_argon2id_and_verified(secured: Any) -> None:
    _, accounts, _ = secured
    accounts.create_user("alice", [Role.RADIOLOGIST], PASSWORD)
    with accounts.engine.connect() as conn:
        stored = conn.execute(users.select()).one().password_hash
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert accounts.authenticate_password("alice", PASSWORD).roles == {Role.RADIOLOGIST}
    with pytest.raises(AccountError):
        accounts.authenticate_password("alice", "wrong password!!")
    with pytest.raises(AccountError):
        accounts.authenticate_password("nobody", PASSWORD)


def test_short_passwords_and_role_less_users_are_refused(secured: Any) -> None:
    _, accounts, _ = secured
    with pytest.raises(AccountError, match="12 characters"):
        accounts.create_user("bob", [Role.CLINICIAN], "short")
    with pytest.raises(AccountError, match="role"):
        accounts.create_user("bob", [], PASSWORD)


def test_brute_force_of_a_password_hits_the_lockout(secured: Any) -> None:
    _, accounts, _ = secured
    accounts.create_user("alice", [Role.CLINICIAN], PASSWORD)
    for attempt in range(accounts.lockout.max_failures):
        with pytest.raises(AccountError):
            accounts.authenticate_password("alice", f"guess number {attempt}")
    with pytest.raises(LockedOut):
        accounts.authenticate_password("alice", PASSWORD)  # even the right password, while locked


def test_sessions_expire_and_can_be_revoked(secured: Any) -> None:
    _, accounts, _ = secured
    user = accounts.create_user("alice", [Role.CLINICIAN], PASSWORD)
    token = accounts.create_session(user, "127.0.0.1")
    assert accounts.principal_for_session(token).name == "alice"
    accounts.revoke_session(token)
    assert accounts.principal_for_session(token) is None
    accounts.SESSION_LIFETIME = dt.timedelta(seconds=-1)
    assert accounts.principal_for_session(accounts.create_session(user)) is None


def test_disabling_a_user_ends_sessions_and_tokens(secured: Any) -> None:
    _, accounts, _ = secured
    user = accounts.create_user("alice", [Role.CLINICIAN], PASSWORD)
    session = accounts.create_session(user)
    token = accounts.create_token("alice", "script")
    accounts.set_disabled("alice", True)
    assert accounts.principal_for_session(session) is None
    assert accounts.principal_for_token(token) is None


def test_api_tokens_are_random_hashed_scoped_expiring_and_revocable(secured: Any) -> None:
    _, accounts, _ = secured
    accounts.create_user("pacs", [Role.SERVICE], None)
    token = accounts.create_token("pacs", "store-only", scopes=[Permission.ARCHIVE_WRITE])
    assert len(token.split("_", 1)[1]) >= 43  # 256 bits, url-safe base64
    with accounts.engine.connect() as conn:
        assert token not in str(conn.execute(api_tokens.select()).one())
    principal = accounts.principal_for_token(token)
    assert principal.permissions() == {Permission.ARCHIVE_WRITE}
    assert accounts.revoke_token("store-only", "pacs") == 1
    assert accounts.principal_for_token(token) is None
    expired = accounts.create_token("pacs", "old", lifetime=dt.timedelta(seconds=-1))
    assert accounts.principal_for_token(expired) is None
    assert accounts.principal_for_token(new_token("ibt")) is None


def test_parallel_guesses_cannot_outrun_the_lockout(secured: Any) -> None:
    import threading

    _, accounts, _ = secured
    accounts.create_user("alice", [Role.CLINICIAN], PASSWORD)
    outcomes: list[str] = []

    def guess(i: int) -> None:
        try:
            accounts.authenticate_password("alice", f"parallel guess {i}")
        except LockedOut:
            outcomes.append("locked")
        except AccountError:
            outcomes.append("wrong")

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("wrong") == accounts.lockout.max_failures  # only that many guesses were tried
    assert outcomes.count("locked") == 16 - accounts.lockout.max_failures


def test_token_last_use_is_recorded_without_a_write_per_request(secured: Any) -> None:
    _, accounts, _ = secured
    accounts.create_user("feed", [Role.SERVICE], PASSWORD)
    token = accounts.create_token("feed", "t")

    def last_used() -> Any:
        with accounts.engine.connect() as conn:
            return conn.execute(api_tokens.select()).one().last_used_at

    assert last_used() is None
    assert accounts.principal_for_token(token) is not None
    first = last_used()
    assert first is not None
    assert accounts.principal_for_token(token) is not None
    assert last_used() == first  # within the minute: no write
    with accounts.engine.begin() as conn:
        conn.execute(api_tokens.update().values(last_used_at=first - dt.timedelta(minutes=5)))
    accounts.forget_verified()  # as when the seconds it is trusted without asking have passed
    assert accounts.principal_for_token(token) is not None
    assert last_used() > first - dt.timedelta(minutes=5)


def test_a_revocation_elsewhere_takes_effect_within_the_verified_period(secured: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Each process trusts a credential the database confirmed for VERIFIED_FOR seconds: a token revoked or an
    account disabled by another process (the CLI, another server) is refused once that time is over."""
    from imagebank.security import accounts as module
    from imagebank.security.accounts import Accounts

    _, accounts, _ = secured
    accounts.create_user("feed", [Role.SERVICE], PASSWORD)
    token = accounts.create_token("feed", "t")
    session = accounts.create_session(accounts.get_user("feed"))
    assert accounts.principal_for_token(token, "10.0.0.1").address == "10.0.0.1"
    assert accounts.principal_for_token(token, "10.0.0.2").address == "10.0.0.2"  # the caller's own address
    assert accounts.principal_for_session(session) is not None
    elsewhere = Accounts(accounts.engine)
    elsewhere.revoke_token("t", "feed")
    elsewhere.set_disabled("feed", True)
    assert elsewhere.principal_for_token(token) is None and elsewhere.principal_for_session(session) is None
    assert accounts.principal_for_token(token) is not None  # still within its verified period here
    clock = module.time.monotonic() + module.VERIFIED_FOR + 0.01
    monkeypatch.setattr(module.time, "monotonic", lambda: clock)
    assert accounts.principal_for_token(token) is None
    assert accounts.principal_for_session(session) is None
