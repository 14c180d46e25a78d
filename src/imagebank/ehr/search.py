"""FHIR R4 search over the EHR store (search.html), translated to SQL on the extracted facts.

Parameters (per type, below): ``_id``, ``patient``/``subject`` (a Patient reference or id; the whole
linked patient record is searched, merged Patients included), ``patient.identifier`` (``system|value``),
``code`` / ``category`` / ``identifier`` / ``status`` (tokens: ``code``, ``system|code``, ``|code``,
``system|``; a comma is OR), ``date`` (with the R4 prefixes eq ne lt gt le ge sa eb), ``accession``,
``encounter``, and for Patient ``name``/``family``/``given`` (case- and accent-insensitive prefix),
``birthdate``, ``gender``; paging with ``_count`` and ``_offset``, ``_sort`` by ``date``/``-date``,
``_total=none`` to skip counting. Repeating a parameter ANDs it. Unknown parameters are refused (400)
unless the client asks for ``Prefer: handling=lenient`` (search.html#errors).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, exists, false, func, or_, select

from imagebank.dicom.names import fold_person_name
from imagebank.ehr import identity
from imagebank.ehr.facts import parse_fhir_date, reference_id
from imagebank.ehr.outcome import FhirError, Issue
from imagebank.storage.schema import ehr_resource_codes, ehr_resources, fhir_patient_ids

COMMON = {"_id", "patient", "subject", "patient.identifier", "subject.identifier", "code", "category",
          "identifier", "status", "date", "encounter", "_count", "_offset", "_sort", "_total", "_format",
          "_lastUpdated"}
PER_TYPE: dict[str, set[str]] = {
    "Patient": {"_id", "identifier", "name", "family", "given", "birthdate", "gender", "_count", "_offset",
                "_sort", "_total", "_format", "_lastUpdated"},
    "ServiceRequest": COMMON | {"accession"},
    "DiagnosticReport": COMMON | {"accession"},
    "ImagingStudy": COMMON | {"accession"},
}
DATE_PREFIXES = ("eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap")
SORT_COLUMNS = {"date": ehr_resources.c.effective_date, "_lastUpdated": ehr_resources.c.last_updated,
                "_id": ehr_resources.c.resource_id}


@dataclass
class SearchResult:
    resources: list[dict[str, Any]]
    total: int | None
    offset: int
    count: int
    params: list[tuple[str, str]] = field(default_factory=list)


def _bad(name: str, message: str) -> FhirError:
    return FhirError(400, [Issue("invalid", message, name)])


def split_token(value: str) -> tuple[str | None, str | None]:
    """FHIR token syntax: ``code``, ``system|code``, ``|code`` (no system), ``system|`` (any code)."""
    if "|" not in value:
        return None, value
    system, code = value.split("|", 1)
    return system, code or None


def _token_condition(role_filter: list[str] | None, value: str) -> ColumnElement[bool]:
    options = []
    for part in value.split(","):
        system, code = split_token(part)
        conds = [ehr_resource_codes.c.resource_pk == ehr_resources.c.id]
        if role_filter:
            conds.append(ehr_resource_codes.c.role.in_(role_filter))
        if system is not None:  # "|code": explicitly no system, stored as ""
            conds.append(ehr_resource_codes.c.system == system)
        if code is not None:
            conds.append(ehr_resource_codes.c.code == code)
        options.append(exists().where(and_(*conds)))
    return or_(*options)


def date_condition(name: str, value: str, start_col: Any, end_col: Any | None = None, *,
                   dicom_da: bool = False) -> ColumnElement[bool]:
    """An R4 date parameter against a date column (search.html#date; day precision), or against a
    DICOM DA string column (``YYYYMMDD``, lexically ordered) when ``dicom_da``."""
    prefix = value[:2] if value[:2] in DATE_PREFIXES else "eq"
    literal = value[2:] if value[:2] in DATE_PREFIXES else value
    span = parse_fhir_date(literal)
    if span is None:
        raise _bad(name, f"{name}: {value!r} is not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD, optionally "
                         "with a prefix eq, ne, lt, gt, le, ge, sa, eb)")
    low, high = span
    if dicom_da:
        low, high = low.strftime("%Y%m%d"), high.strftime("%Y%m%d")  # type: ignore[assignment]
    # The resource's time is the range [start, end] (end = start for a single day; a period or a partial
    # date like "2024" spans more). search.html#prefix compares that range with the parameter's range.
    end = func.coalesce(end_col, start_col) if end_col is not None else start_col
    if prefix in ("eq", "ap"):  # the resource's range lies within the parameter's
        return and_(start_col >= low, end <= high)
    if prefix == "ne":
        return or_(start_col < low, end > high)
    if prefix == "lt":  # some of the range is before the parameter
        return start_col < low
    if prefix == "gt":  # some of the range is after it
        return end > high
    if prefix == "le":
        return start_col <= high
    if prefix == "ge":
        return end >= low
    if prefix == "sa":  # starts after the parameter's range ends
        return start_col > high
    return end < low  # eb: ends before the parameter's range starts


def patient_records(conn: Connection, name: str, value: str) -> list[int]:
    """Records named by a ``patient`` parameter value (comma = any of)."""
    ids = []
    for part in value.split(","):
        ident = reference_id(part, "Patient") or (part if "/" not in part else None)
        if ident is None:
            raise _bad(name, f"{name}: {part!r} is not a Patient reference")
        ids.append(ident)
    rows = conn.execute(select(fhir_patient_ids.c.record_id).where(fhir_patient_ids.c.patient_id.in_(ids)))
    return sorted({int(r.record_id) for r in rows})


def identifier_records(conn: Connection, name: str, value: str) -> list[int]:
    found: set[int] = set()
    for part in value.split(","):
        system, ident = split_token(part)
        if not system or not ident:
            raise _bad(name, f"{name}: give the identifier as system|value")
        found.update(identity.records_for_identifiers(conn, [(system, ident)], create=False).values())
    return sorted(found)


def _name_condition(value: str, mode: str) -> ColumnElement[bool]:
    options: list[ColumnElement[bool]] = []
    for part in value.split(","):
        folded = fold_person_name(part) or ""
        if not folded:
            continue
        escaped = folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        if mode == "family":
            options.append(ehr_resources.c.label.like(f"{escaped}%", escape="\\"))
        else:  # any word of the name starts with it
            options.append(or_(ehr_resources.c.label.like(f"{escaped}%", escape="\\"),
                               ehr_resources.c.label.like(f"% {escaped}%", escape="\\")))
    return or_(*options) if options else false()


def _int(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _bad(name, f"{name}: {value!r} is not a whole number") from None
    if not low <= number <= high:
        raise _bad(name, f"{name} must be between {low} and {high}")
    return number


@dataclass
class Controls:
    """The result parameters of a search (search.html#return): page, order, total; and the filters left."""

    count: int
    offset: int = 0
    sort_key: str = "date"
    descending: bool = False
    want_total: bool = True
    kept: list[tuple[str, str]] = field(default_factory=list)
    filters: list[tuple[str, str]] = field(default_factory=list)  # (parameter, value) to turn into SQL


def read_params(resource_type: str, params: list[tuple[str, str]], allowed: set[str], sort_keys: set[str], *,
                max_page: int, strict: bool) -> Controls:
    """Check every parameter (unknown ones and modifiers refused), take the result parameters."""
    controls = Controls(count=min(100, max_page))
    for name, value in params:
        base, _, modifier = name.partition(":")
        if modifier:
            raise _bad(name, f"the search modifier ':{modifier}' is not supported here")
        if base not in allowed:
            if strict:
                raise _bad(name, f"unknown search parameter {name!r} for {resource_type}; supported: "
                                 + ", ".join(sorted(p for p in allowed if p != "_format")))
            continue
        if value == "":
            continue  # a parameter without a value is ignored (search.html#errors)
        controls.kept.append((name, value))
        if base == "_count":
            controls.count = min(_int(name, value, 0, 10**9), max_page)  # a larger page is cut (search.html#count)
        elif base == "_offset":
            controls.offset = _int(name, value, 0, 10**9)
        elif base == "_sort":
            if value.lstrip("-") not in sort_keys:
                raise _bad(name, f"_sort supports {', '.join(sorted(sort_keys))} (prefix - for descending)")
            controls.descending, controls.sort_key = value.startswith("-"), value.lstrip("-")
        elif base == "_total":
            controls.want_total = value != "none"
        elif base != "_format":
            controls.filters.append((base, value))
    return controls


def search(conn: Connection, resource_type: str, params: list[tuple[str, str]], *, max_page: int = 1000,
           strict: bool = True) -> SearchResult:
    controls = read_params(resource_type, params, PER_TYPE.get(resource_type, COMMON), set(SORT_COLUMNS),
                           max_page=max_page, strict=strict)
    conditions: list[ColumnElement[bool]] = [ehr_resources.c.resource_type == resource_type]
    for base, value in controls.filters:
        name = base
        if base == "_id":
            conditions.append(ehr_resources.c.resource_id.in_(value.split(",")))
        elif base in ("patient", "subject"):
            conditions.append(ehr_resources.c.record_id.in_(patient_records(conn, name, value)))
        elif base in ("patient.identifier", "subject.identifier"):
            conditions.append(ehr_resources.c.record_id.in_(identifier_records(conn, name, value)))
        elif base in ("code", "category", "identifier"):
            roles = {"code": ["code"], "category": ["category"], "identifier": ["identifier"]}[base]
            conditions.append(_token_condition(roles, value))
        elif base == "status":
            conditions.append(ehr_resources.c.status.in_(value.split(",")))
        elif base in ("date", "birthdate"):
            conditions.append(date_condition(name, value, ehr_resources.c.effective_date,
                                             ehr_resources.c.effective_end))
        elif base == "_lastUpdated":
            conditions.append(instant_condition(name, value, ehr_resources.c.last_updated))
        elif base == "encounter":
            conditions.append(ehr_resources.c.encounter_id.in_(
                [reference_id(v, "Encounter") or v for v in value.split(",")]))
        elif base == "accession":
            conditions.append(ehr_resources.c.accession_number.in_(value.split(",")))
        elif base in ("name", "family", "given"):
            conditions.append(_name_condition(value, base))
        elif base == "gender":
            conditions.append(ehr_resources.c.value_text.in_(value.split(",")))
    where = and_(*conditions)
    total = conn.execute(select(func.count()).select_from(ehr_resources).where(where)).scalar_one() \
        if controls.want_total else None
    column = SORT_COLUMNS[controls.sort_key]
    # Resources without a date sort last on both databases (NULLS LAST is not SQLite's default).
    order = [column.is_(None), column.desc() if controls.descending else column, ehr_resources.c.id]
    rows: Any = conn.execute(select(ehr_resources.c.resource_json).where(where).order_by(*order)
                             .offset(controls.offset).limit(controls.count)) if controls.count else []
    return SearchResult([json.loads(r.resource_json) for r in rows], total, controls.offset, controls.count,
                        controls.kept)


def instant_condition(name: str, value: str, column: Any) -> ColumnElement[bool]:
    """A date parameter against a timestamp column, the days taken in UTC on both databases."""
    prefix = value[:2] if value[:2] in DATE_PREFIXES else "eq"
    span = parse_fhir_date(value[2:] if value[:2] in DATE_PREFIXES else value)
    if span is None:
        raise _bad(name, f"{name}: {value!r} is not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)")
    low = dt.datetime.combine(span[0], dt.time(), dt.UTC)
    after = dt.datetime.combine(span[1] + dt.timedelta(days=1), dt.time(), dt.UTC)
    conditions = {"eq": and_(column >= low, column < after), "ap": and_(column >= low, column < after),
                  "ne": or_(column < low, column >= after), "lt": column < low, "eb": column < low,
                  "gt": column >= after, "sa": column >= after, "le": column < after, "ge": column >= low}
    return conditions[prefix]


def searchset(result: SearchResult, base: str, resource_type: str, fhir_base: str) -> dict[str, Any]:
    """The searchset Bundle (bundle.html#searchset) with self/next/previous links for ``_offset`` paging."""
    from urllib.parse import urlencode

    def link(offset: int) -> str:
        params = [(k, v) for k, v in result.params if k != "_offset"] + [("_offset", str(offset))]
        return f"{base}?{urlencode(params)}"

    links = [{"relation": "self", "url": link(result.offset)}]
    if result.count and (result.total is None or result.offset + result.count < result.total) \
            and len(result.resources) == result.count:
        links.append({"relation": "next", "url": link(result.offset + result.count)})
    if result.offset > 0:
        links.append({"relation": "previous", "url": link(max(0, result.offset - result.count))})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle", "type": "searchset",
        "meta": {"lastUpdated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
        "link": links,
        "entry": [{"fullUrl": f"{fhir_base}/{r['resourceType']}/{r['id']}", "resource": r,
                   "search": {"mode": "match"}} for r in result.resources],
    }
    if result.total is not None:
        bundle["total"] = result.total
    return bundle
