"""Keyed pseudonyms: the same patient, date and UID map to the same output everywhere the key is shared.

Every mapping is HMAC-SHA-256 under the project's secret key with a separate domain per kind of value
("patient", "date-shift", "uid", "fhir-id"...), so:

- the same patient gets the same pseudonym and the same date shift in every study, in the EHR rows, in
  separate runs and on separate machines that share the key;
- nothing can be reversed or recomputed without the key (a plain hash of an MRN can be brute-forced:
  MRNs are short); the way back is the linkage vault, not the function;
- UIDs map to ``2.25.<128-bit integer>`` (PS3.5 B.2: a UUID-derived UID), so references between
  studies, series and instances (Referenced SOP Instance UID, Frame of Reference...) still match.

Date shifts move every date of a patient back by the same number of days (1 to ``max_shift_days``): intervals
between events are kept exactly and the time of day is not touched (PS3.15 E.3.6, Retain Longitudinal
Temporal Information with Modified Dates Option).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets

KEY_BYTES = 32
DEFAULT_MAX_SHIFT_DAYS = 1095

#: DT values: YYYY[MM[DD[hh[mm[ss[.ffffff]]]]]][&ZZXX]
_DT = re.compile(r"^(\d{8})(.*)$")


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


class Pseudonymizer:
    """All keyed mappings of one project."""

    def __init__(self, key: bytes, *, max_shift_days: int = DEFAULT_MAX_SHIFT_DAYS) -> None:
        if len(key) < 16:
            raise ValueError("the pseudonym key must be at least 128 bits")
        if max_shift_days < 1:
            raise ValueError("max_shift_days must be at least 1")
        self._key = key
        self.max_shift_days = max_shift_days
        self._uid_cache: dict[str, str] = {}

    def _mac(self, domain: str, value: str) -> bytes:
        return hmac.new(self._key, f"{domain}\x00{value}".encode(), hashlib.sha256).digest()

    # -- patients ---------------------------------------------------------------------------------------
    def patient(self, subject: str) -> str:
        """The research ID of a patient: ``IB`` + 16 base32 characters (80 bits: no collision in practice)."""
        digest = self._mac("patient", subject)
        return "IB" + base64.b32encode(digest[:10]).decode("ascii")

    def date_shift_days(self, subject: str) -> int:
        """Days to add to every date of this patient: always negative, stable for the key."""
        number = int.from_bytes(self._mac("date-shift", subject)[:8], "big")
        return -(1 + number % self.max_shift_days)

    # -- dates --------------------------------------------------------------------------------------------
    def shift_date(self, date: dt.date, subject: str) -> dt.date:
        try:
            return date + dt.timedelta(days=self.date_shift_days(subject))
        except OverflowError:
            return dt.date.min

    def shift_da(self, value: str, subject: str) -> str:
        """A DA value (``YYYYMMDD``, or a ``-`` range) shifted; an unreadable date becomes empty."""
        value = value.strip()
        if "-" in value:  # a range in a query context: shift both ends
            return "-".join(self.shift_da(part, subject) if part else "" for part in value.split("-", 1))
        parsed = _parse_da(value)
        if parsed is None:
            return ""
        return self.shift_date(parsed, subject).strftime("%Y%m%d")

    def shift_dt(self, value: str, subject: str) -> str:
        """A DT value with its date part shifted; time of day and UTC offset kept."""
        match = _DT.match(value.strip())
        if not match:
            # DT may hold only a year or year+month: too coarse to shift meaningfully, and still a date.
            return ""
        shifted = self.shift_da(match.group(1), subject)
        return shifted + match.group(2) if shifted else ""

    def shift_iso(self, value: str, subject: str) -> str:
        """A FHIR date/dateTime/instant (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD[Thh:mm:ss...]``) shifted.

        Partial dates (year, year-month) are shifted from their first day and keep their precision.
        """
        text = value.strip()
        match = re.match(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(.*)$", text)
        if not match:
            return ""
        year, month, day, rest = match.groups()
        try:
            date = dt.date(int(year), int(month or 1), int(day or 1))
        except ValueError:
            return ""
        shifted = self.shift_date(date, subject)
        if day:
            return shifted.isoformat() + rest
        if month:
            return shifted.strftime("%Y-%m")
        return shifted.strftime("%Y")

    # -- identifiers ---------------------------------------------------------------------------------------
    def uid(self, original: str) -> str:
        """``2.25.`` + a 128-bit integer derived from the original UID (at most 44 characters)."""
        original = original.strip().rstrip("\x00")
        cached = self._uid_cache.get(original)
        if cached is None:
            number = int.from_bytes(self._mac("uid", original)[:16], "big")
            cached = f"2.25.{number}"
            if len(self._uid_cache) < 1_000_000:
                self._uid_cache[original] = cached
        return cached

    def identifier(self, kind: str, original: str) -> str:
        """A stable replacement for an ID that must keep linking records (accession, order, FHIR id).

        ``kind`` separates namespaces so equal strings of different meaning do not collide.
        """
        digest = self._mac(f"id:{kind}", original.strip())
        return base64.b32encode(digest[:15]).decode("ascii")


def _parse_da(value: str) -> dt.date | None:
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return None
