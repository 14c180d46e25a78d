"""Run a hierarchical query (PS3.4 C.4.1.3.1) against the index.

One SQL statement per request: the level's table joined to its ancestors, one condition per
non-empty matching key (:mod:`imagebank.query.matching`), ordered the way a worklist reads.
Return keys come from index columns; at IMAGE level, keys the index does not carry are read from the
instance's cached DICOM JSON header. Keys the archive cannot answer are returned empty (C.4.1.1.3.2).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from sqlalchemy import Engine, Select, func, select

from imagebank.errors import ImagebankError
from imagebank.query.matching import MatchError, condition
from imagebank.query.model import ATTRIBUTES, UNIQUE_KEYS, Level
from imagebank.storage.database import read_only
from imagebank.storage.schema import instance_headers, instances, patients, series, studies

#: Keys that steer the query rather than match anything.
CONTROL_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC"}

_ORDER: dict[Level, list[Any]] = {
    Level.PATIENT: [patients.c.patient_name_search, patients.c.id],
    Level.STUDY: [studies.c.study_date.desc(), studies.c.study_time.desc(), studies.c.id],
    Level.SERIES: [series.c.series_number, series.c.id],
    Level.IMAGE: [instances.c.instance_number, instances.c.id],
}


class InvalidQuery(ImagebankError):
    """The identifier cannot be answered as asked (unknown level, a key below the level, a bad value)."""


def _base(level: Level) -> Select[Any]:
    joined: Any = patients
    if level >= Level.STUDY:
        joined = studies.join(patients, patients.c.id == studies.c.patient_pk)
    if level >= Level.SERIES:
        joined = series.join(joined, studies.c.id == series.c.study_pk)
    if level >= Level.IMAGE:
        joined = instances.join(joined, series.c.id == instances.c.series_pk)
    return select().select_from(joined)


def _header_value(header: dict[str, Any], keyword: str) -> Any:
    element = header.get(f"{tag_for_keyword(keyword):08X}")
    if not element or "Value" not in element:
        return None
    values = element["Value"]
    if element.get("vr") == "PN":
        values = [v.get("Alphabetic", "") if isinstance(v, dict) else v for v in values]
    if element.get("vr") == "SQ":
        return None
    return values[0] if len(values) == 1 else "\\".join(str(v) for v in values)


@dataclass
class _Plan:
    stmt: Select[Any]
    columns: dict[str, Any]
    from_header: list[str]
    requested: list[str]
    level: Level
    #: The matching conditions (also in ``stmt``), and the highest level they name.
    conditions: list[Any] = field(default_factory=list)
    top: Level = Level.IMAGE


def find(engine: Engine, level: Level | str, identifier: Mapping[str, Any], *, root: str = "STUDY",
         limit: int | None = None, offset: int = 0, fuzzy: bool = False) -> list[dict[str, Any]]:
    """Matches of ``identifier`` (keyword -> value; empty value = return key only) at ``level``.

    ``root`` is the information model: ``PATIENT`` (Patient Root) or ``STUDY`` (Study Root, which has
    no PATIENT level). Each result maps every requested keyword, plus the unique keys of ``level`` and
    the levels above it, to its value (``None`` when empty). ``fuzzy``: person names also match on
    the start of any name component (QIDO-RS ``fuzzymatching=true``, PS3.18 8.3.4.1).
    """
    plan = _plan(level, identifier, root, fuzzy)
    stmt = plan.stmt.order_by(*_ORDER[plan.level]).offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    results = []
    with read_only(engine) as conn:
        for row in conn.execute(stmt):
            mapping = row._mapping
            result = {k: mapping[k] for k in plan.columns}
            if plan.from_header:
                header = json.loads(mapping["_header"])
                result.update({k: _header_value(header, k) for k in plan.from_header})
            for keyword in plan.requested:
                result.setdefault(keyword, None)
            results.append(result)
    return results


def count(engine: Engine, level: Level | str, identifier: Mapping[str, Any], *, root: str = "STUDY",
          fuzzy: bool = False) -> int:
    """How many entities :func:`find` would return without a limit (for paging totals).

    Only the levels the matching keys name are joined: every study has its patient, every series its study
    (non-null foreign keys, deleted together), so the inner joins above them change no count, and leaving
    them out spares a lookup per match (at 100,000 studies, most of the time a count took).
    """
    plan = _plan(level, identifier, root, fuzzy, counting=True)
    stmt = select(func.count()).select_from(_levels(plan.level, plan.top)).where(*plan.conditions)
    with read_only(engine) as conn:
        return int(conn.execute(stmt).scalar_one())


def _levels(level: Level, top: Level) -> Any:
    """``level``'s table joined to its ancestors up to ``top``."""
    tables = {Level.PATIENT: patients, Level.STUDY: studies, Level.SERIES: series, Level.IMAGE: instances}
    parents = {Level.STUDY: studies.c.patient_pk, Level.SERIES: series.c.study_pk, Level.IMAGE: instances.c.series_pk}
    joined: Any = tables[level]
    for below in range(level, top, -1):
        parent = tables[Level(below - 1)]
        joined = joined.join(parent, parent.c.id == parents[Level(below)])
    return joined


def _plan(level: Level | str, identifier: Mapping[str, Any], root: str, fuzzy: bool,
          counting: bool = False) -> _Plan:
    try:
        level = Level[level] if isinstance(level, str) else level
    except KeyError:
        raise InvalidQuery(f"QueryRetrieveLevel {level!r} is not PATIENT, STUDY, SERIES or IMAGE") from None
    if root == "STUDY" and level is Level.PATIENT:
        raise InvalidQuery("the Study Root information model has no PATIENT level")
    shape = _shape(level, tuple(k for k in identifier if k not in CONTROL_KEYS), root)
    stmt = shape.stmt
    conditions = []
    top = level
    for keyword in shape.requested:
        value = identifier.get(keyword)
        if value in (None, "", []):
            continue  # a return key only
        attr = ATTRIBUTES.get(keyword)
        if attr is None:
            if dictionary_VR(keyword) != "SQ":
                raise InvalidQuery(f"matching on {keyword} is not supported; ask for it as a return key only")
            continue
        try:
            where = condition(attr, value, fuzzy=fuzzy, counting=counting)
        except MatchError as exc:
            raise InvalidQuery(str(exc)) from None
        if where is not None:
            stmt = stmt.where(where)
            conditions.append(where)
            top = min(top, attr.level)
    return _Plan(stmt, shape.columns, shape.from_header, shape.requested, level, conditions, top)


@lru_cache(maxsize=512)
def _shape(level: Level, keys: tuple[str, ...], root: str) -> _Plan:
    """The joins and return columns of a query (cached: QIDO-RS and C-FIND ask the same shapes over and over,
    and building them cost more than running the query); :func:`_plan` adds the matching conditions."""
    requested = list(keys)
    for unique in range(level + 1):
        key = UNIQUE_KEYS[Level(unique)]
        if key not in requested and not (root == "STUDY" and unique == Level.PATIENT):
            requested.append(key)

    stmt = _base(level)
    columns: dict[str, Any] = {}
    from_header: list[str] = []
    for keyword in requested:
        attr = ATTRIBUTES.get(keyword)
        if attr is None:
            if tag_for_keyword(keyword) is None:
                raise InvalidQuery(f"{keyword!r} is not a DICOM attribute keyword")
            if level is Level.IMAGE:
                from_header.append(keyword)
            continue
        if attr.level > level:
            raise InvalidQuery(f"{keyword} is a {attr.level.name}-level key; it cannot be used in a "
                               f"{level.name}-level query (PS3.4 C.4.1.2.1)")
        columns[keyword] = attr.column.label(keyword)
    stmt = stmt.add_columns(*columns.values())
    if from_header:
        stmt = stmt.join(instance_headers, instance_headers.c.instance_pk == instances.c.id)
        stmt = stmt.add_columns(instance_headers.c.dicom_json.label("_header"))
    return _Plan(stmt, columns, from_header, requested, level, [], level)
