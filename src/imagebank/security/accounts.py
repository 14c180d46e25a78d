"""Users, sessions, API tokens and lockout counters (SQLAlchemy adapter over the index database)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine, bindparam, insert, select, update

from imagebank.errors import ImagebankError, NotFound
from imagebank.security.policy import Principal
from imagebank.security.roles import Permission, Role
from imagebank.security.secrets import hash_password, new_token, token_hash, verify_password
from imagebank.storage.database import read_only
from imagebank.storage.schema import api_tokens, auth_lockouts, sessions, users

LAST_USED_PRECISION = dt.timedelta(minutes=1)
#: A session or API token the database confirmed is trusted again for this many seconds without asking it,
#: per process (a client sending requests back to back costs one lookup, not one per request). A revocation,
#: a disabled account or a new password takes effect at once in the process that made it and within this
#: time in the others (the other ``imagebank serve`` processes, another server on the same database).
VERIFIED_FOR = 2.0


def _insert(engine: Engine, table: Any) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql if engine.dialect.name == "postgresql" else sqlite).insert(table)


# Built once: one of these runs on every authenticated request.
_TOKEN_USER = (select(users, api_tokens.c.scopes, api_tokens.c.expires_at, api_tokens.c.revoked_at,
                      api_tokens.c.last_used_at)
               .join(api_tokens, api_tokens.c.user_id == users.c.id)
               .where(api_tokens.c.token_hash == bindparam("digest")))
_SESSION_USER = (select(users, sessions.c.expires_at, sessions.c.revoked_at)
                 .join(sessions, sessions.c.user_id == users.c.id)
                 .where(sessions.c.token_hash == bindparam("digest")))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite returns naive datetimes for timezone-aware columns; they were stored in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class AccountError(ImagebankError):
    pass


class LockedOut(ImagebankError):
    def __init__(self, until: dt.datetime) -> None:
        super().__init__(f"too many failed attempts: locked until {until.isoformat(timespec='seconds')}")
        self.until = until


@dataclass(frozen=True)
class LockoutPolicy:
    """N failures within ``window`` lock the subject for ``duration`` (NIST SP 800-63B 5.2.2)."""

    max_failures: int = 5
    window: dt.timedelta = dt.timedelta(minutes=15)
    duration: dt.timedelta = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class User:
    id: int
    username: str
    roles: frozenset[Role]
    patient_links: frozenset[str]
    disabled: bool
    display_name: str | None = None

    def principal(self, kind: str = "user", scopes: frozenset[Permission] = frozenset(),
                  address: str | None = None) -> Principal:
        return Principal(kind=kind, name=self.username, roles=self.roles, scopes=scopes,
                         own_patients=self.patient_links, user_id=self.id, address=address)


def _split(value: str | None) -> list[str]:
    return [v for v in (value or "").split(",") if v]


def _user(row: object) -> User:
    return User(id=row.id, username=row.username, roles=frozenset(Role(r) for r in _split(row.roles)),  # type: ignore[attr-defined]
                patient_links=frozenset(_split(row.patient_links)), disabled=bool(row.disabled),  # type: ignore[attr-defined]
                display_name=row.display_name)  # type: ignore[attr-defined]


class Accounts:
    SESSION_LIFETIME = dt.timedelta(hours=8)

    def __init__(self, engine: Engine, lockout: LockoutPolicy | None = None) -> None:
        self.engine = engine
        self.lockout = lockout or LockoutPolicy()
        #: ``(kind, credential digest) -> (monotonic deadline, principal)``: see :data:`VERIFIED_FOR`.
        self._verified: dict[tuple[str, str], tuple[float, Principal]] = {}

    def _recall(self, kind: str, digest: str, address: str | None) -> Principal | None:
        hit = self._verified.get((kind, digest))
        if hit is None:
            return None
        if time.monotonic() >= hit[0]:
            self._verified.pop((kind, digest), None)
            return None
        principal = hit[1]
        return principal if principal.address == address else replace(principal, address=address)

    def _remember(self, kind: str, digest: str, principal: Principal, expires_at: dt.datetime) -> None:
        if len(self._verified) >= 10_000:
            self._verified.clear()
        valid_for = min(VERIFIED_FOR, (expires_at - _now()).total_seconds())
        self._verified[(kind, digest)] = (time.monotonic() + valid_for, principal)

    def forget_verified(self) -> None:
        """Ask the database again for every credential (after a revocation, a disabled account...)."""
        self._verified.clear()

    # ---------------------------------------------------------------- users

    def create_user(self, username: str, roles: Iterable[Role | str], password: str | None = None, *,
                    display_name: str | None = None, patient_links: Iterable[str] = ()) -> User:
        role_set = {Role(r) for r in roles}
        if not role_set:
            raise AccountError("a user needs at least one role")
        if password is not None and len(password) < 12:
            raise AccountError("passwords must have at least 12 characters")
        with self.engine.begin() as conn:
            if conn.execute(select(users.c.id).where(users.c.username == username)).first():
                raise AccountError(f"user {username!r} already exists")
            conn.execute(insert(users).values(
                username=username, display_name=display_name, roles=",".join(sorted(role_set)),
                password_hash=hash_password(password) if password else None,
                patient_links=",".join(sorted(patient_links)) or None, created_at=_now()))
        return self.get_user(username)

    def get_user(self, username: str) -> User:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.username == username)).first()
        if row is None:
            raise NotFound(f"no user {username!r}")
        return _user(row)

    def list_users(self) -> list[User]:
        with self.engine.connect() as conn:
            return [_user(r) for r in conn.execute(select(users).order_by(users.c.username))]

    def count_users(self) -> int:
        return len(self.list_users())

    def set_password(self, username: str, password: str) -> None:
        self.forget_verified()
        if len(password) < 12:
            raise AccountError("passwords must have at least 12 characters")
        with self.engine.begin() as conn:
            done = conn.execute(update(users).where(users.c.username == username).values(
                password_hash=hash_password(password))).rowcount
        if not done:
            raise NotFound(f"no user {username!r}")

    def set_disabled(self, username: str, disabled: bool) -> None:
        self.forget_verified()
        with self.engine.begin() as conn:
            conn.execute(update(users).where(users.c.username == username).values(disabled=int(disabled)))
            if disabled:  # a disabled account loses its sessions at once
                uid = conn.execute(select(users.c.id).where(users.c.username == username)).scalar()
                conn.execute(update(sessions).where(sessions.c.user_id == uid, sessions.c.revoked_at.is_(None))
                             .values(revoked_at=_now()))

    def user_for_oidc(self, issuer: str, subject: str, *, preferred_username: str | None,
                      display_name: str | None, default_roles: Iterable[Role | str]) -> User:
        """The account bound to ``(issuer, subject)``; created with ``default_roles`` on first sign-in.

        An OIDC identity is never bound to an existing local account by a matching name or e-mail
        (that would let whoever controls the provider take over local accounts).
        """
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.oidc_issuer == issuer, users.c.oidc_subject == subject)).first()
        if row is not None:
            if row.disabled:
                raise AccountError("this account is disabled")
            return _user(row)
        roles = [Role(r) for r in default_roles]
        if not roles:
            raise AccountError("no Imagebank account for this identity: ask an administrator to create one")
        base = (preferred_username or subject).strip() or subject
        username = base
        with self.engine.connect() as conn:
            n = 1
            while conn.execute(select(users.c.id).where(users.c.username == username)).first():
                n += 1
                username = f"{base}-{n}"
        with self.engine.begin() as conn:
            conn.execute(insert(users).values(
                username=username, display_name=display_name, roles=",".join(sorted(roles)), password_hash=None,
                oidc_issuer=issuer, oidc_subject=subject, created_at=_now()))
        return self.get_user(username)

    # -------------------------------------------------------------- lockout

    def check_lockout(self, subject: str) -> None:
        with self.engine.connect() as conn:
            row = conn.execute(select(auth_lockouts).where(auth_lockouts.c.subject == subject)).first()
        if row is not None and row.locked_until is not None and _aware(row.locked_until) > _now():
            raise LockedOut(_aware(row.locked_until))

    def attempt(self, subject: str, verify: Callable[[], bool]) -> bool:
        """Run one guess at ``subject`` (a password, an access code) under the lockout policy.

        The subject's counter row is locked for the whole check -> verify -> count sequence, so
        parallel guesses queue up instead of all being tried before the lock engages (PostgreSQL;
        SQLite serialises writers anyway). Raises :class:`LockedOut` while locked; returns whether
        ``verify`` accepted the guess.
        """
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(_insert(self.engine, auth_lockouts).values(subject=subject, failures=0, window_start=now)
                         .on_conflict_do_nothing(index_elements=["subject"]))
            row = conn.execute(select(auth_lockouts).where(auth_lockouts.c.subject == subject).with_for_update()).one()
            locked_until = _aware(row.locked_until) if row.locked_until is not None else None
            if locked_until is not None and locked_until > now:
                ok = None
            else:
                ok = verify()
                if ok:
                    values: dict[str, object] = {"failures": 0, "window_start": now, "locked_until": None}
                else:
                    fresh = now - _aware(row.window_start) > self.lockout.window or locked_until is not None
                    failures = 1 if fresh else row.failures + 1
                    values = {"failures": failures, "window_start": now if fresh else row.window_start,
                              "locked_until": now + self.lockout.duration if failures >= self.lockout.max_failures
                              else None}
                conn.execute(update(auth_lockouts).where(auth_lockouts.c.subject == subject).values(**values))
        if ok is None and locked_until is not None:
            raise LockedOut(locked_until)
        return bool(ok)

    # ------------------------------------------------------ password sign-in

    def authenticate_password(self, username: str, password: str) -> User:
        """Verify a password under the lockout policy; raises :class:`LockedOut` or :class:`AccountError`."""
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.username == username)).first()
        usable = row is not None and not row.disabled
        if not self.attempt(f"password:{username.lower()}",
                            lambda: verify_password(row.password_hash if row is not None else None, password)
                            and usable):
            raise AccountError("unknown user or wrong password")
        return _user(row)

    # -------------------------------------------------------------- sessions

    def create_session(self, user: User, address: str | None = None) -> str:
        token = new_token("ibs")
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(insert(sessions).values(token_hash=token_hash(token), user_id=user.id, created_at=now,
                                                 expires_at=now + self.SESSION_LIFETIME, address=address))
        return token

    def revoke_session(self, token: str) -> None:
        self.forget_verified()
        with self.engine.begin() as conn:
            conn.execute(update(sessions).where(sessions.c.token_hash == token_hash(token)).values(revoked_at=_now()))

    def principal_for_session(self, token: str, address: str | None = None) -> Principal | None:
        digest = token_hash(token)
        if (known := self._recall("session", digest, address)) is not None:
            return known
        with read_only(self.engine) as conn:
            row = conn.execute(_SESSION_USER, {"digest": digest}).first()
        if row is None or row.revoked_at is not None or _aware(row.expires_at) <= _now() or row.disabled:
            return None
        principal = _user(row).principal("user", address=address)
        self._remember("session", digest, principal, _aware(row.expires_at))
        return principal

    # ---------------------------------------------------------------- tokens

    def create_token(self, username: str, name: str, *, scopes: Iterable[Permission | str] = (),
                     lifetime: dt.timedelta = dt.timedelta(days=90)) -> str:
        user = self.get_user(username)
        scope_set = {Permission(s) for s in scopes}
        token = new_token("ibt")
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(insert(api_tokens).values(
                token_hash=token_hash(token), user_id=user.id, name=name, scopes=",".join(sorted(scope_set)),
                created_at=now, expires_at=now + lifetime))
        return token

    def revoke_token(self, name: str, username: str) -> int:
        self.forget_verified()
        user = self.get_user(username)
        with self.engine.begin() as conn:
            return int(conn.execute(update(api_tokens).where(
                api_tokens.c.user_id == user.id, api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None),
            ).values(revoked_at=_now())).rowcount)

    def principal_for_token(self, token: str, address: str | None = None) -> Principal | None:
        digest = token_hash(token)
        if (known := self._recall("token", digest, address)) is not None:
            return known
        with read_only(self.engine) as conn:
            row = conn.execute(_TOKEN_USER, {"digest": digest}).first()
        if row is None or row.revoked_at is not None or _aware(row.expires_at) <= _now() or row.disabled:
            return None
        # "Last used" is for spotting stale tokens, not an access log (the audit trail is): a minute's
        # precision spares a write transaction on every request of a busy client.
        if row.last_used_at is None or _now() - _aware(row.last_used_at) > LAST_USED_PRECISION:
            with self.engine.begin() as conn:
                conn.execute(update(api_tokens).where(api_tokens.c.token_hash == digest).values(last_used_at=_now()))
        scopes = frozenset(Permission(s) for s in _split(row.scopes))
        principal = _user(row).principal("token", scopes=scopes, address=address)
        self._remember("token", digest, principal, _aware(row.expires_at))
        return principal
