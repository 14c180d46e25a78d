"""The retrieve planner of `remote import`: only what is missing, per series, UID lists chunked."""

from imagebank.dimse.importer import UID_LIST_CHUNK, RetrieveRequest, plan_series


def test_nothing_to_retrieve_when_everything_is_here() -> None:
    assert plan_series("1.2", "1.2.3", ["a", "b"], {"a", "b"}) == []


def test_a_whole_series_is_retrieved_at_series_level() -> None:
    assert plan_series("1.2", "1.2.3", ["a", "b"], set()) == [
        RetrieveRequest("SERIES", {"StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.2.3"}, 2)]


def test_a_partial_series_is_completed_by_uid_lists_in_chunks() -> None:
    remote = [f"1.9.{n}" for n in range(UID_LIST_CHUNK + 10)]
    plan = plan_series("1.2", "1.2.3", remote, {"1.9.0"})
    assert [r.level for r in plan] == ["IMAGE", "IMAGE"]
    assert [r.instances for r in plan] == [UID_LIST_CHUNK, 9]
    requested = [uid for r in plan for uid in r.keys["SOPInstanceUID"].split("\\")]
    assert requested == remote[1:]
