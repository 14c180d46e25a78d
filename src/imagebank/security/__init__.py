"""Security: identities and roles, the authorization policy, sign-in, API tokens and the audit trail.

- :mod:`~imagebank.security.roles` -- who may do what (roles -> permissions), in one table.
- :func:`~imagebank.security.policy.decide` -- the single authorization decision, default deny.
- :class:`~imagebank.security.accounts.Accounts` -- users, sessions, API tokens, lockout.
- :class:`~imagebank.security.audit.AuditTrail` -- append-only, hash-chained ATNA events.
"""
