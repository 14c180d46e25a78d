"""QIDO-RS (PS3.18 10.6): query parameters -> archive query -> DICOM JSON results.

The matching itself is the archive's query engine (:mod:`imagebank.query`), shared with C-FIND, so a
study found over DIMSE is found the same way over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from imagebank.dicomweb.dicom_json import UnknownAttribute, dataset, element, keyword_of
from imagebank.query import InvalidQuery, Level
from imagebank.query.engine import count, find
from imagebank.query.model import ATTRIBUTES

#: Query parameters that steer the search (PS3.18 8.3.4) rather than match an attribute.
CONTROL = {"limit", "offset", "fuzzymatching", "includefield", "orderby", "accept", "charset"}

#: Default return attributes, PS3.18 Tables 10.6.3-3 (study), 10.6.3-4 (series), 10.6.3-5 (instance);
#: attributes the index does not hold (RetrieveURL, InstanceAvailability) are added by :func:`search`.
STUDY_DEFAULT = ["SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
                 "ReferringPhysicianName", "TimezoneOffsetFromUTC", "PatientName", "PatientID",
                 "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
                 "StudyDescription", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"]
SERIES_DEFAULT = ["Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
                  "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
                  "PerformedProcedureStepStartTime", "BodyPartExamined"]
INSTANCE_DEFAULT = ["SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "BitsAllocated",
                    "NumberOfFrames"]

_INSTANCE_AVAILABILITY = element("InstanceAvailability", "ONLINE")


class BadQuery(ValueError):
    """A QIDO-RS request that cannot be answered as asked; the text names the parameter."""


@dataclass
class QidoQuery:
    level: Level
    identifier: dict[str, Any]
    limit: int
    offset: int = 0
    fuzzy: bool = False
    return_keys: list[str] = field(default_factory=list)
    #: Scope from the URL path (``/studies/{study}/series``...); these keys are not repeated as matches.
    scope: dict[str, str] = field(default_factory=dict)


def _bool(name: str, text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no", ""):
        return False
    raise BadQuery(f"{name}={text!r}: expected true or false")


def _count(name: str, text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise BadQuery(f"{name}={text!r}: expected a non-negative integer") from None
    if number < 0:
        raise BadQuery(f"{name}={text!r}: expected a non-negative integer")
    return number


#: VRs whose values never contain a comma, so ``a,b`` is a list of values (PS3.18 8.3.4.1).
_LIST_VRS = {"UI", "CS", "DA", "TM", "DT", "IS", "SH"}


def _all_keys(level: Level) -> list[str]:
    return [k for k, a in ATTRIBUTES.items() if a.level <= level]


def parse(params: Iterable[tuple[str, str]], level: Level, scope: Mapping[str, str], *,
          max_results: int) -> QidoQuery:
    """Read the query string (PS3.18 8.3.4): matching keys, ``includefield``, paging, fuzzy matching."""
    identifier: dict[str, Any] = {}
    include: list[str] = []
    include_all = False
    limit, offset, fuzzy = max_results, 0, False
    for raw_name, value in params:
        name = raw_name.strip()
        lowered = name.lower()
        if lowered == "includefield":
            for item in (v.strip() for v in value.split(",")):
                if item.lower() == "all":
                    include_all = True
                elif item:
                    try:
                        include.append(keyword_of(item))
                    except UnknownAttribute as exc:
                        raise BadQuery(f"includefield: {exc}") from None
        elif lowered == "limit":
            limit = min(_count(name, value), max_results)
        elif lowered == "offset":
            offset = _count(name, value)
        elif lowered == "fuzzymatching":
            fuzzy = _bool(name, value)
        elif lowered in ("accept", "charset"):
            continue  # content negotiation (PS3.18 8.3.3), handled by the route
        elif lowered == "orderby":
            raise BadQuery("orderby is not supported; results come newest study first")
        elif "." in name:
            raise BadQuery(f"{name}: matching on sequence items is not supported")
        else:
            try:
                keyword = keyword_of(name)
            except UnknownAttribute as exc:
                raise BadQuery(f"unknown query key: {exc}") from None
            if keyword in identifier and value != identifier[keyword]:
                value = f"{identifier[keyword]}\\{value}"  # a repeated key is a list of values
            attr = ATTRIBUTES.get(keyword)
            identifier[keyword] = value.replace(",", "\\") if attr and attr.vr in _LIST_VRS else value
    for keyword, value in scope.items():
        identifier[keyword] = value
    defaults = {Level.STUDY: STUDY_DEFAULT, Level.SERIES: SERIES_DEFAULT, Level.IMAGE: INSTANCE_DEFAULT}[level]
    keys = list(defaults)
    if level >= Level.SERIES and "StudyInstanceUID" not in scope:
        keys += STUDY_DEFAULT  # not nested under a study: say which study each result belongs to
    if level >= Level.IMAGE and "SeriesInstanceUID" not in scope:
        keys += SERIES_DEFAULT
    if include_all:
        keys += _all_keys(level)
    keys += include
    # Keys the level cannot answer (a series attribute in a study query, a header attribute above the
    # instance level) are left out rather than refused: includefield asks, it does not require (8.3.4.3).
    return_keys = [k for k in dict.fromkeys(keys)
                   if (k in ATTRIBUTES and ATTRIBUTES[k].level <= level) or (k not in ATTRIBUTES and level is Level.IMAGE)]
    for k in return_keys:
        identifier.setdefault(k, "")
    return QidoQuery(level, identifier, limit, offset, fuzzy, return_keys, dict(scope))


def _retrieve_url(base: str, level: Level, result: Mapping[str, Any]) -> str:
    url = f"{base}/studies/{result['StudyInstanceUID']}"
    if level >= Level.SERIES:
        url += f"/series/{result['SeriesInstanceUID']}"
    if level >= Level.IMAGE:
        url += f"/instances/{result['SOPInstanceUID']}"
    return url


def search(engine: Engine, query: QidoQuery, base_url: str) -> tuple[list[dict[str, Any]], int]:
    """The page of results as DICOM JSON objects, and the total number of matches."""
    try:
        rows = find(engine, query.level, query.identifier, limit=query.limit, offset=query.offset,
                    fuzzy=query.fuzzy)
        if len(rows) < query.limit and (rows or query.offset == 0):
            total = query.offset + len(rows)  # the last page: no need to count
        else:
            total = count(engine, query.level, query.identifier, fuzzy=query.fuzzy)
    except InvalidQuery as exc:
        raise BadQuery(str(exc)) from None
    out = []
    for row in rows:
        if "PatientID" not in query.return_keys:
            row.pop("PatientID", None)
        extra = dict([element("RetrieveURL", _retrieve_url(base_url, query.level, row)), _INSTANCE_AVAILABILITY])
        out.append(dataset(row, extra))
    return out, total
