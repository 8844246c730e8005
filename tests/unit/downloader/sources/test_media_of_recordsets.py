"""media_of_recordsets: which queries of media by their records' recordsets are asked of
the media alone (both sources use it; the sources' own tests compare its answers with the
join)."""

from __future__ import annotations

from downloader.sources import media_of_recordsets


def test_only_queries_of_whole_recordsets_move_to_the_media_index() -> None:
    rs = {"recordset": "a"}
    assert media_of_recordsets("mediarecords", rs, None) == (
        None,
        {"recordset": "a", "hasSpecimen": True},
    )
    assert media_of_recordsets("mediarecords", {**rs, "version": 2}, {"format": "x"}) == (
        None,
        {"format": "x", "recordset": "a", "version": 2, "hasSpecimen": True},
    )
    # Every record's media: those with a parent, as the store's join of the two has it.
    assert media_of_recordsets("mediarecords", {}, None) == (None, {"hasSpecimen": True})
    kept = [
        ("records", rs, {"format": "x"}),  # records of media: the merge as before
        ("mediarecords", {**rs, "genus": "acer"}, None),  # a record field
        ("mediarecords", rs, {"recordset": "b"}),  # mq asks about the same field
        ("mediarecords", rs, {"hasSpecimen": False}),
        ("mediarecords", None, {"format": "x"}),
    ]
    for rtype, rq, mq in kept:
        assert media_of_recordsets(rtype, rq, mq) == (rq, mq)  # type: ignore[arg-type]
