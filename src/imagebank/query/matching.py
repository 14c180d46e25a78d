"""PS3.4 C.2.2.2 attribute matching, as SQL conditions on index columns (pure: no I/O).

Supported: universal (empty value), single value, list of values (backslash; C.2.2.2.2 for UIDs and,
as QIDO-RS allows, for other keys), wild card ``*``/``?`` (C.2.2.2.4; not for UIDs, dates, times or
numbers) and range (C.2.2.2.5, for DA, TM and DT: ``a-b``, ``-b``, ``a-``).
Person names (PN) are matched case- and accent-insensitively on a folded copy, which C.2.2.2.1 allows.
Dates are stored as ``YYYYMMDD`` strings, times as ``HHMMSS.FFFFFF``, so ranges compare as strings.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import and_, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from imagebank.dicom.names import fold_person_name
from imagebank.query.model import Attribute
from imagebank.storage.schema import series, studies

_DATE_RE = re.compile(r"^\d{8}$")
_TIME_RE = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_RANGE_VRS = {"DA", "TM", "DT"}
_NO_WILDCARD_VRS = {"UI", "DA", "TM", "DT", "IS", "DS", "US", "UL", "SS", "SL", "FL", "FD"}


class MatchError(ValueError):
    """The query value is not valid for the attribute; the message names both."""


ESCAPE = "!"  # explicit LIKE escape: PostgreSQL's default is backslash, SQLite has none


def _like(value: str) -> str:
    """DICOM wild cards to a LIKE pattern; ``%``, ``_`` and the escape itself match literally."""
    escaped = value.replace(ESCAPE, ESCAPE * 2).replace("%", ESCAPE + "%").replace("_", ESCAPE + "_")
    return escaped.replace("*", "%").replace("?", "_")


_ALNUM = re.compile(r"^[A-Z0-9]*[A-Y0-8]$")


def _prefixed_like(column: Any, pattern: str) -> ColumnElement[bool]:
    """``column LIKE pattern`` plus, for a pattern with a literal prefix, the equivalent range on the
    column so a B-tree index can answer it (SQLite's case-insensitive LIKE and PostgreSQL's LIKE under
    a non-C collation cannot use a plain index). Only letter/digit prefixes get the range: those sort
    the same way bytewise and under the usual collations."""
    like = column.like(_like(pattern), escape=ESCAPE)
    literal = re.split(r"[*?]", pattern, maxsplit=1)[0]
    if len(literal) < 1 or not _ALNUM.match(literal):
        return like
    upper = literal[:-1] + chr(ord(literal[-1]) + 1)
    return and_(column >= literal, column < upper, like)


def _check_temporal(attr: Attribute, value: str) -> str:
    if attr.vr == "DA":
        value = value.replace(".", "")  # ACR-NEMA "YYYY.MM.DD" is still seen in the wild
        try:
            if not _DATE_RE.match(value):
                raise ValueError(value)
            dt.datetime.strptime(value, "%Y%m%d")
        except ValueError:
            raise MatchError(f"{attr.keyword}: {value!r} is not a date (YYYYMMDD)") from None
    elif attr.vr == "TM":
        value = value.replace(":", "")
        if not _TIME_RE.match(value):
            raise MatchError(f"{attr.keyword}: {value!r} is not a time (HHMMSS.FFFFFF)")
    return value


def _range(attr: Attribute, value: str) -> ColumnElement[bool]:
    low, _, high = (part.strip() for part in value.partition("-"))
    if not low and not high:
        raise MatchError(f"{attr.keyword}: a range needs at least one bound")
    low = _check_temporal(attr, low) if low else ""
    high = _check_temporal(attr, high) if high else ""
    if low and high and low > high:
        raise MatchError(f"{attr.keyword}: range {value!r} ends before it starts")
    conditions = [attr.column.is_not(None), attr.column != ""]
    if low:
        conditions.append(attr.column >= low)
    if high:
        if attr.vr == "TM":  # "up to 12" includes 12:59:59.999999: pad the bound to the end of its unit
            high = high.ljust(6, "9") + ("" if "." in high else ".999999")
        conditions.append(attr.column <= high)
    return and_(*conditions)


def _single(attr: Attribute, value: str, fuzzy: bool = False, counting: bool = False) -> ColumnElement[bool]:
    wild = ("*" in value or "?" in value) and attr.vr not in _NO_WILDCARD_VRS
    if wild and value.strip("*") == "":
        return true()  # "*" alone is universal matching
    if attr.vr in _RANGE_VRS and "-" in value:
        return _range(attr, value)
    if attr.vr in ("DA", "TM"):
        value = _check_temporal(attr, value)
        if attr.vr == "TM":  # a single time matches that moment at its own precision
            return attr.column.like(_like(value) + "%", escape=ESCAPE)
        return attr.column == value
    if attr.keyword == "ModalitiesInStudy":  # any one of the study's modalities matches (C.2.2.2.8)
        if counting:
            # Counting every match: asked of the series, whose Modality is indexed (a scan of every study's
            # stored list cost twice as much at 100,000 studies).
            modality = series.c.modality
            matched = _prefixed_like(modality, value) if wild else modality == value
            return studies.c.id.in_(select(series.c.study_pk).where(matched))
        # The first page in study order: the stored list ("CT\\SR"), tested study by study along the
        # study-date index, stops as soon as the page is full.
        return ("\\" + attr.column + "\\").like("%\\" + _like(value) + "\\%", escape=ESCAPE)
    if attr.vr == "PN" and attr.search_column is not None:
        folded = fold_person_name(value) or ""
        if fuzzy and folded.strip("*?"):
            # Fuzzy (PS3.18 8.3.4.1; the behaviour is the archive's to define): the value matches the
            # start of any word of the name, family or given, in any case and without accents.
            start = folded if folded.endswith("*") else folded + "*"
            return or_(_prefixed_like(attr.search_column, start),
                       attr.search_column.like("% " + _like(start), escape=ESCAPE))
        if "*" in folded or "?" in folded:
            return _prefixed_like(attr.search_column, folded)
        return attr.search_column == folded
    if wild:
        return _prefixed_like(attr.column, value)
    if attr.vr == "IS":
        try:
            return attr.column == int(value)
        except ValueError:
            raise MatchError(f"{attr.keyword}: {value!r} is not an integer") from None
    if attr.vr == "UI" and ("*" in value or "?" in value):
        raise MatchError(f"{attr.keyword}: wild cards are not allowed in UIDs (PS3.4 C.2.2.2.4)")
    return attr.column == value


def condition(attr: Attribute, value: Any, *, fuzzy: bool = False, counting: bool = False) -> ColumnElement[bool] | None:
    """The SQL condition for ``attr`` matching ``value``; ``None`` for universal matching.

    ``counting``: the condition is for counting all matches rather than finding the first ones in order;
    where the two are best asked differently of the index, they still select the same entities."""
    if value is None:
        return None
    text = str(value).strip() if not isinstance(value, (list, tuple)) else "\\".join(str(v) for v in value)
    if text == "":
        return None
    values = [v.strip() for v in text.split("\\")]
    if any(v == "" for v in values):
        raise MatchError(f"{attr.keyword}: empty value in a list")
    if len(values) == 1:
        return _single(attr, values[0], fuzzy, counting)
    return or_(*(_single(attr, v, fuzzy, counting) for v in values))
