"""ElasticsearchSource and the index writer against osmem-server (an in-memory
OpenSearch-compatible server started on a free port for this module).

The index is filled the way ``downloader ingest --target elasticsearch`` fills it: the same
records are derived into a DuckDB store, then copied with :func:`export_store`, so every
comparison with the DuckDB source is a comparison of the two query paths.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pytest
from elasticsearch import NotFoundError

from downloader.errors import SourceUnavailable
from downloader.ingest.cluster import export_store
from downloader.ingest.load import ingest_archive, ingest_synthetic, store_path
from downloader.sources.elasticsearch import ElasticsearchSource, make_client
from query import fields as catalogue
from query.fields import RecordType
from query.validate import validate_query
from tests.support.osmem import running_osmem
from tests.support.redis_server import free_port

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[4] / "fixtures" / "dwca"
N_SYNTHETIC = 3000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store")
    ingest_synthetic(path, N_SYNTHETIC, seed=7)
    ingest_archive(path, FIXTURES / "gbif-results.zip")
    return path


@pytest.fixture(scope="module")
def es_source(data_dir: Path) -> Iterator[ElasticsearchSource]:
    with running_osmem() as server:
        # The production client (plain-JSON node), exactly what `serve` and workers build.
        source = ElasticsearchSource(server.url, index_prefix="t-", timeout=10, id_chunk=100)
        assert source.data_version() == "0"
        export_store(store_path(data_dir), source)
        yield source


@pytest.fixture(scope="module")
def duck(data_dir: Path) -> Any:
    duckdb_mod = pytest.importorskip("downloader.sources.duckdb")
    return duckdb_mod.DuckDBSource(store_path(data_dir))


def q(rtype: str, query: dict[str, Any]) -> dict[str, Any]:
    return validate_query(query, rtype)  # type: ignore[arg-type]  # test literals


def rows(batches: Iterator[pa.RecordBatch]) -> list[dict[str, Any]]:
    out = []
    for batch in batches:
        out.extend(batch.to_pylist())
    return out


def test_export_sets_a_data_version_and_counts_match(es_source: ElasticsearchSource) -> None:
    assert es_source.data_version() != "0"
    assert es_source.count("records", None, None) == N_SYNTHETIC + 158
    assert es_source.count("records", q("records", {"genus": "acer"}), None) > 0


def test_paging_over_many_pages_returns_every_record_once_in_uuid_order(
    es_source: ElasticsearchSource,
) -> None:
    got = rows(es_source.batches("records", None, None, fields=["uuid", "genus"], batch_size=97))
    uuids = [r["coreid"] for r in got]
    assert len(uuids) == N_SYNTHETIC + 158
    assert uuids == sorted(set(uuids))
    assert all(r["uuid"] == r["coreid"] for r in got)


def test_batches_are_typed_as_the_contract_says(es_source: ElasticsearchSource) -> None:
    batch = next(
        es_source.batches(
            "records",
            q("records", {"genus": "acer"}),
            None,
            fields=["uuid", "datecollected", "geopoint", "hasImage", "recordids"],
            raw_terms=["dwc:scientificName"],
            batch_size=50,
        )
    )
    schema = batch.schema
    assert schema.names[0] == "coreid"
    assert schema.field("datecollected").type == pa.timestamp("us")
    assert pa.types.is_struct(schema.field("geopoint").type)
    assert schema.field("hasImage").type == pa.bool_()
    assert schema.field("recordids").type == pa.list_(pa.string())
    assert schema.field("dwc:scientificName").type == pa.string()
    assert all(
        v.lower().startswith("acer") for v in batch.column("dwc:scientificName").to_pylist() if v
    )


def test_recordset_counts_add_up_without_hits(es_source: ElasticsearchSource) -> None:
    counts = es_source.recordset_counts("records", None, None)
    assert counts == {"0ac6620a-ba21-405c-af5c-d62cf59464b8": 158, "synthetic-seed-7": N_SYNTHETIC}
    terms = es_source.raw_terms("records", q("records", {"genus": "tetraodon"}), None)
    assert "dwc:scientificName" in terms and terms == sorted(terms)


@pytest.mark.parametrize(
    ("rtype", "rq", "mq"),
    [
        ("records", None, None),
        ("records", {"genus": "acer"}, None),
        ("records", {"genus": "nosuchgenus"}, None),
        ("mediarecords", None, {"format": "image/jpeg"}),
        ("records", {"genus": "acer"}, {"format": "image/jpeg"}),
    ],
)
def test_recordset_counts_by_count_agree_with_the_aggregation(
    es_source: ElasticsearchSource,
    monkeypatch: pytest.MonkeyPatch,
    rtype: RecordType,
    rq: dict[str, Any] | None,
    mq: dict[str, Any] | None,
) -> None:
    rqn = q("records", rq) if rq else None
    mqn = q("mediarecords", mq) if mq else None
    counted = es_source._recordset_counts(rtype, rqn, mqn)
    monkeypatch.setattr(es_source, "counted_recordsets", 0)
    assert es_source._recordset_counts(rtype, rqn, mqn) == counted
    # More recordsets than counted_recordsets: the aggregation answers.
    monkeypatch.setattr(es_source, "counted_recordsets", 1)
    assert es_source._counted_by_recordset(rtype, rqn, mqn) is None
    monkeypatch.setattr(es_source, "counted_recordsets", 32)
    if rtype == "records" and mq is None and sum(counted.values()):
        # A recordset missing from the recordsets index: the counts do not add up to the
        # query's count, and the aggregation answers.
        client = es_source.es
        real_search = client.search

        def search(*args: Any, **kwargs: Any) -> Any:
            answer = real_search(*args, **kwargs)
            if kwargs.get("index") == es_source.recordsets_index:
                hits = answer["hits"]["hits"]
                answer["hits"]["hits"] = [h for h in hits if h["_id"] != max(counted)]
            return answer

        monkeypatch.setattr(client, "search", search)
        assert es_source._counted_by_recordset(rtype, rqn, mqn) is None
        assert es_source._recordset_counts(rtype, rqn, mqn) == counted


def test_rq_and_mq_compose_across_indices(es_source: ElasticsearchSource, duck: Any) -> None:
    rq = q("records", {"genus": "acer"})
    mq = q("mediarecords", {"format": "image/jpeg"})
    media_of_acer = es_source.count("mediarecords", rq, None)
    acer_with_media = es_source.count("records", rq, mq)
    # id_chunk=100 forces several chunks: counts add up over disjoint chunks.
    assert 0 < acer_with_media <= es_source.count("records", rq, None)
    assert media_of_acer >= acer_with_media
    assert media_of_acer == duck.count("mediarecords", rq, None)
    assert acer_with_media == duck.count("records", rq, mq)
    media = rows(es_source.batches("mediarecords", rq, None, fields=["uuid"], batch_size=33))
    parents = {r["coreid"] for r in rows(es_source.batches("records", rq, None, fields=["uuid"]))}
    assert len(media) == media_of_acer and {m["coreid"] for m in media} <= parents


@pytest.mark.parametrize(
    ("rtype", "rq", "mq"),
    [
        ("records", {"genus": "acer"}, None),
        ("records", {"country": "united states", "hasImage": True}, None),
        ("records", {"datecollected": {"type": "range", "gte": "1900", "lte": "1950"}}, None),
        ("records", None, {"format": "image/jpeg"}),
        ("mediarecords", {"genus": "quercus"}, None),
        ("records", {"data": {"type": "fulltext", "value": "red maple"}}, None),
    ],
)
def test_same_rows_as_duckdb(
    es_source: ElasticsearchSource,
    duck: Any,
    rtype: RecordType,
    rq: dict[str, Any] | None,
    mq: dict[str, Any] | None,
) -> None:
    rqn = q("records", rq) if rq else None
    mqn = q("mediarecords", mq) if mq else None
    names = ["uuid", "recordset", "datecollected", "geopoint", "scientificname"]
    if rtype == "mediarecords":
        names = ["uuid", "recordset", "format", "accessuri"]
    terms = duck.raw_terms(rtype, rqn, mqn)
    assert es_source.count(rtype, rqn, mqn) == duck.count(rtype, rqn, mqn)
    assert es_source.recordset_counts(rtype, rqn, mqn) == duck.recordset_counts(rtype, rqn, mqn)

    def norm(rs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        # "" and missing are the same empty cell in the archive; the index drops empties.
        return sorted(tuple((k, v if v != "" else None) for k, v in sorted(r.items())) for r in rs)

    es_rows = rows(
        es_source.batches(rtype, rqn, mqn, fields=names, raw_terms=terms, batch_size=250)
    )
    duck_rows = rows(duck.batches(rtype, rqn, mqn, fields=names, raw_terms=terms, batch_size=250))
    assert len(es_rows) == len(duck_rows)
    assert norm(es_rows) == norm(duck_rows)


def test_pages_decoded_by_arrow_and_by_json_agree(
    es_source: ElasticsearchSource, duck: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Patched where the reader looks it up, not where it is defined.
    import downloader.sources.elasticsearch.source as es_module

    assert es_module.reads_bytes(es_source.es)  # the production client hands back bytes
    fields = sorted(catalogue.field_names("records"))
    terms = duck.raw_terms("records", None, None)

    def read() -> pa.Table:
        batches = es_source.batches("records", None, None, fields=fields, raw_terms=terms)
        return pa.Table.from_batches(list(batches))

    by_arrow = read()
    monkeypatch.setattr(es_module, "reads_bytes", lambda es: False)
    by_json = read()
    assert by_arrow.num_rows == N_SYNTHETIC + 158
    assert by_arrow.equals(by_json)


def test_unique_values_by_composite_aggregation(es_source: ElasticsearchSource) -> None:
    got = rows(es_source.unique_values("genus", q("records", {"kingdom": "plantae"}), None))
    values = [r["value"] for r in got]
    assert values == sorted(values) and "acer" in values
    assert sum(r["count"] for r in got) == es_source.count(
        "records", q("records", {"kingdom": "plantae", "genus": {"type": "exists"}}), None
    )


def test_scrolls_are_cleared_even_when_the_reader_stops_early(
    es_source: ElasticsearchSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = es_source.es
    cleared: list[str] = []
    real_clear = client.clear_scroll

    def clear_scroll(*args: Any, **kwargs: Any) -> Any:
        cleared.append(kwargs["scroll_id"])
        return real_clear(*args, **kwargs)

    monkeypatch.setattr(client, "clear_scroll", clear_scroll)
    batches = cast(
        Generator[pa.RecordBatch, None, None],
        es_source.batches("records", None, None, fields=["uuid"], batch_size=10),
    )
    next(batches)
    assert cleared == []
    batches.close()  # runs the generator's finally: the scroll is released
    assert len(cleared) == 1
    with pytest.raises(NotFoundError):
        client.scroll(scroll_id=cleared[0], scroll="1m")


@pytest.mark.parametrize(
    ("rtype", "rq", "mq"),
    [
        ("records", None, None),
        ("records", {"genus": "acer"}, {"format": "image/jpeg"}),
        ("mediarecords", {"genus": "acer"}, None),
    ],
)
def test_shared_reads_give_what_separate_reads_give(
    es_source: ElasticsearchSource,
    monkeypatch: pytest.MonkeyPatch,
    rtype: RecordType,
    rq: dict[str, Any] | None,
    mq: dict[str, Any] | None,
) -> None:
    rqn = q("records", rq) if rq else None
    mqn = q("mediarecords", mq) if mq else None
    terms = es_source.raw_terms(rtype, rqn, mqn)
    index_fields = ["uuid", "recordset", "datecollected", "geopoint"]
    if rtype == "mediarecords":
        index_fields = ["uuid", "format", "accessuri"]
    reads: list[tuple[list[str], list[str]]] = [(index_fields, []), (["uuid"], terms)]

    def table(batches: Iterator[pa.RecordBatch]) -> pa.Table:
        return pa.Table.from_batches(list(batches))

    separate = [
        table(es_source.batches(rtype, rqn, mqn, fields=f, raw_terms=t, batch_size=70))
        for f, t in reads
    ]
    assert separate[0].num_rows == es_source.count(rtype, rqn, mqn) > 0
    # In order: the second read replays what the first one spooled.
    first, second = es_source.shared_batches(rtype, rqn, mqn, reads, batch_size=70)
    assert table(first()).equals(separate[0])
    with monkeypatch.context() as patch:
        patch.setattr(es_source, "_pages", None)  # the replay does not read the cluster
        assert table(second()).equals(separate[1])
    # The first abandoned, or out of order: each read goes to the cluster itself.
    first, second = es_source.shared_batches(rtype, rqn, mqn, reads, batch_size=70)
    started = cast(Generator[pa.RecordBatch, None, None], first())
    next(started)
    started.close()
    assert table(second()).equals(separate[1])
    assert table(first()).equals(separate[0])


def test_unreachable_cluster_is_transient() -> None:
    source = ElasticsearchSource(f"http://127.0.0.1:{free_port()}", timeout=1)
    source.es = make_client(f"http://127.0.0.1:{free_port()}", timeout=1).options(max_retries=0)
    with pytest.raises(SourceUnavailable, match="cannot be reached"):
        source.count("records", None, None)


@pytest.mark.parametrize("form", ["parquet", "simple-parquet"])
def test_a_parquet_archive_from_the_cluster_holds_what_the_store_gives(
    es_source: ElasticsearchSource, duck: Any, tmp_path: Path, form: str
) -> None:
    # form=parquet streams the cluster's batches into Parquet as it does the store's: the
    # same files, the same rows and the same column types from either source.
    import io
    import zipfile

    import pyarrow.parquet as pq

    from downloader.build import build_archive
    from tests.unit.downloader.build.test_run import make_ctx, request

    rq = '{"hasImage": true}'
    got: dict[str, dict[str, pa.Table]] = {}
    for name, source in (("cluster", es_source), ("store", duck)):
        ctx = make_ctx(tmp_path / name, source)  # type: ignore[arg-type]  # a real source
        job = build_archive(request(ctx, rq=rq, form=form), ctx)
        assert job is not None and job.state == "SUCCESS", job and job.error
        path = tmp_path / name / "archives" / str(job.archive_key)
        with zipfile.ZipFile(path) as zf:
            got[name] = {
                n: pq.read_table(io.BytesIO(zf.read(n)))
                for n in zf.namelist()
                if n.endswith(".parquet")
            }
    cluster, store = got["cluster"], got["store"]
    assert set(cluster) == set(store) and "occurrence.parquet" in cluster
    for name, table in cluster.items():
        assert table.schema.names == store[name].schema.names, name
        assert table.num_rows == store[name].num_rows > 0, name
        # Column 0 is the id (coreid; gbifID in GBIF's simple layout).
        assert set(table.column(0).to_pylist()) == set(store[name].column(0).to_pylist())
        for field in table.schema:
            other = store[name].schema.field(field.name)
            if not (pa.types.is_null(field.type) or pa.types.is_null(other.type)):
                assert field.type == other.type, (name, field.name)


@pytest.mark.parametrize(
    ("rtype", "rq", "mq"),
    [
        ("mediarecords", {"kingdom": "plantae"}, None),
        ("records", {"genus": "acer"}, {"format": "image/jpeg"}),
        ("mediarecords", {"kingdom": "plantae"}, {"format": "image/jpeg"}),
        ("records", None, {"format": "image/jpeg"}),
    ],
)
def test_a_merged_rq_mq_tally_agrees_with_the_terms_filters_and_duckdb(
    es_source: ElasticsearchSource,
    duck: Any,
    rtype: RecordType,
    rq: dict[str, Any] | None,
    mq: dict[str, Any] | None,
) -> None:
    rqn = q("records", rq) if rq else None
    mqn = q("mediarecords", mq) if mq else None
    merged = es_source._merged_tally(rtype, rqn, mqn)
    assert merged is not None  # more ids than one chunk (id_chunk=100): the merge is taken
    chunked = sum(
        int(es_source.es.count(index=es_source.index(rtype), query=plan)["count"])
        for plan in es_source._plans(rtype, rqn, mqn)
    )
    assert sum(merged.values()) == chunked == duck.count(rtype, rqn, mqn) > 0
    assert merged == duck.recordset_counts(rtype, rqn, mqn)
    assert es_source.count(rtype, rqn, mqn) == chunked


def test_a_small_side_against_a_much_larger_one_keeps_the_terms_filters(
    es_source: ElasticsearchSource,
) -> None:
    # Few acer records against every jpeg: reading all media would cost more than filters.
    rqn, mqn = q("records", {"genus": "acer"}), q("mediarecords", {"format": "image/jpeg"})
    few = es_source.count("records", rqn, None)
    many = es_source.count("mediarecords", None, mqn)
    assert few > es_source.id_chunk and many > 4 * few
    assert es_source._merged_tally("mediarecords", rqn, mqn) is None


@pytest.mark.parametrize(
    ("rtype", "rq", "mq"),
    [
        ("mediarecords", {"kingdom": "plantae"}, None),
        ("records", {"kingdom": "plantae"}, {"format": "image/jpeg"}),
    ],
)
def test_a_merged_read_gives_the_rows_of_duckdb_in_one_pass(
    es_source: ElasticsearchSource,
    duck: Any,
    rtype: RecordType,
    rq: dict[str, Any] | None,
    mq: dict[str, Any] | None,
) -> None:
    rqn = q("records", rq) if rq else None
    mqn = q("mediarecords", mq) if mq else None
    (plan,) = list(es_source._read_plans(rtype, rqn, mqn))  # one scroll, not id chunks
    assert not isinstance(plan, dict)
    names = ["uuid", "recordset"]
    terms = duck.raw_terms(rtype, rqn, mqn)[:3]
    ours = rows(es_source.batches(rtype, rqn, mqn, fields=names, raw_terms=terms, batch_size=37))
    theirs = rows(duck.batches(rtype, rqn, mqn, fields=names, raw_terms=terms))
    key = lambda r: json.dumps(r, sort_keys=True, default=str)  # noqa: E731  (a sort key)
    assert sorted(map(key, ours)) == sorted(map(key, theirs)) and ours
    links = [r["coreid"] for r in ours]
    assert links == sorted(links)  # the merge reads in link order
    # The shared read of an archive's two files gives the same rows from that one pass.
    first, second = es_source.shared_batches(
        rtype, rqn, mqn, [(names, []), (["uuid"], terms)], batch_size=37
    )
    assert rows(first()) == [{k: r[k] for k in ("coreid", *names)} for r in ours]
    assert len(rows(second())) == len(ours)


@pytest.mark.parametrize(
    ("rtype", "rq", "mq"),
    [
        ("records", {"recordset": "synthetic-seed-7"}, None),
        ("records", {"recordset": "synthetic-seed-7", "genus": "acer"}, None),
        ("records", {"recordset": "no-such-recordset"}, None),
        ("mediarecords", None, {"recordset": "synthetic-seed-7"}),
    ],
)
def test_the_tally_of_one_recordset_is_its_count(
    es_source: ElasticsearchSource,
    duck: Any,
    monkeypatch: pytest.MonkeyPatch,
    rtype: RecordType,
    rq: dict[str, Any] | None,
    mq: dict[str, Any] | None,
) -> None:
    rqn = q("records", rq) if rq else None
    mqn = q("mediarecords", mq) if mq else None

    def unused(*args: Any) -> None:
        raise AssertionError("a query of one recordset needs no per-recordset counts")

    monkeypatch.setattr(es_source, "_counted_by_recordset", unused)
    monkeypatch.setattr(es_source, "_composite_counts", unused)
    tally = es_source._recordset_counts(rtype, rqn, mqn)
    assert tally == duck.recordset_counts(rtype, rqn, mqn)
    assert sum(tally.values()) == duck.count(rtype, rqn, mqn)


def test_a_merges_count_tally_and_read_list_the_other_side_once(
    es_source: ElasticsearchSource, duck: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a build asks of a records query's media: the count, the recordset tally (for the
    # verbatim terms and the citation) and the rows. The record uuids are listed once.
    source = ElasticsearchSource(client=es_source.es, index_prefix="t-", id_chunk=100)
    listed: list[tuple[str, str]] = []
    real = source._sorted_values

    def spy(index: str, clause: Any, field: str, what: str, chunk: int) -> Iterator[list[str]]:
        listed.append((index, field))
        return real(index, clause, field, what, chunk)

    monkeypatch.setattr(source, "_sorted_values", spy)
    rqn = q("records", {"kingdom": "plantae"})
    assert source.count("mediarecords", rqn, None) == duck.count("mediarecords", rqn, None) > 100
    tally = duck.recordset_counts("mediarecords", rqn, None)
    assert source.recordset_counts("mediarecords", rqn, None) == tally
    got = rows(source.batches("mediarecords", rqn, None, fields=["uuid"], batch_size=50))
    assert sorted(r["uuid"] for r in got) == sorted(
        r["uuid"] for r in rows(duck.batches("mediarecords", rqn, None, fields=["uuid"]))
    )
    assert listed == [("t-records", "uuid")]


def test_a_builds_counts_of_one_query_are_one_count_request(
    es_source: ElasticsearchSource, duck: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A recordset's export counts its records, decides the merge of its media on that count
    # and tallies the records by it: the cluster counts the records once.
    source = ElasticsearchSource(client=es_source.es, index_prefix="t-", id_chunk=100)
    counted: list[str] = []
    real = source.es.count

    def spy(**kwargs: Any) -> Any:
        counted.append(str(kwargs.get("index")))
        return real(**kwargs)

    monkeypatch.setattr(source.es, "count", spy)
    rqn = q("records", {"recordset": "synthetic-seed-7"})
    assert source.count("records", rqn, None) == duck.count("records", rqn, None)
    assert source.count("mediarecords", rqn, None) == duck.count("mediarecords", rqn, None)
    assert source.recordset_counts("records", rqn, None) == duck.recordset_counts(
        "records", rqn, None
    )
    assert source.count("records", rqn, None) == duck.count("records", rqn, None)
    assert counted.count("t-records") == 1


def _media_searches(source: ElasticsearchSource, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The bodies of the searches that open a scroll over the media index, as sent."""
    opened: list[str] = []
    real = source.es.perform_request

    def spy(method: str, path: str, **kwargs: Any) -> Any:
        if path.startswith("/t-mediarecords/_search"):
            opened.append(json.dumps(kwargs.get("body")))
        return real(method, path, **kwargs)

    monkeypatch.setattr(source.es, "perform_request", spy)
    return opened


def test_a_build_reads_its_merged_media_once_for_tally_and_rows(
    es_source: ElasticsearchSource, duck: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A build says it will read the media of its records (read_ahead) before it counts them:
    # the tally then reads the media's pages, and the read takes those pages, so the cluster
    # sorts the media once. The rows are exactly those of a read without read-ahead.
    rqn = q("records", {"kingdom": "plantae"})
    fields, terms = ["uuid", "format"], ["dcterms:identifier"]
    plain = ElasticsearchSource(client=es_source.es, index_prefix="t-", id_chunk=100)
    expected = list(plain.batches("mediarecords", rqn, None, fields=fields, raw_terms=terms))

    source = ElasticsearchSource(client=es_source.es, index_prefix="t-", id_chunk=100)
    opened = _media_searches(source, monkeypatch)
    source.read_ahead("mediarecords", rqn, None)
    assert source.count("mediarecords", rqn, None) == duck.count("mediarecords", rqn, None) > 100
    tally = source.recordset_counts("mediarecords", rqn, None)
    assert tally == duck.recordset_counts("mediarecords", rqn, None)
    got = list(source.batches("mediarecords", rqn, None, fields=fields, raw_terms=terms))
    assert len(opened) == 1 and '"_source": true' in opened[0]
    assert pa.Table.from_batches(got).equals(pa.Table.from_batches(expected))
    # The pages were the read's: a second read asks the cluster again, with the same rows.
    again = list(source.batches("mediarecords", rqn, None, fields=fields, raw_terms=terms))
    assert len(opened) == 2
    assert pa.Table.from_batches(again).equals(pa.Table.from_batches(expected))


def test_read_ahead_pages_of_another_size_are_not_replayed(
    es_source: ElasticsearchSource, duck: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kept pages hold MAX_PAGE hits each; a read asking for smaller pages reads the
    # cluster (its batches follow its own page size) and drops what was kept.
    rqn = q("records", {"kingdom": "plantae"})
    source = ElasticsearchSource(client=es_source.es, index_prefix="t-", id_chunk=100)
    opened = _media_searches(source, monkeypatch)
    source.read_ahead("mediarecords", rqn, None)
    source.recordset_counts("mediarecords", rqn, None)
    got = list(source.batches("mediarecords", rqn, None, fields=["uuid"], batch_size=50))
    assert len(opened) == 2
    assert max(b.num_rows for b in got) <= 50
    assert sorted(r["uuid"] for r in rows(iter(got))) == sorted(
        r["uuid"] for r in rows(duck.batches("mediarecords", rqn, None, fields=["uuid"]))
    )


def test_a_count_alone_fetches_no_documents(
    es_source: ElasticsearchSource, duck: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without read_ahead (an API count), the tally of a merge sorts the media without their
    # _source: a count must not fetch whole documents.
    rqn = q("records", {"kingdom": "plantae"})
    source = ElasticsearchSource(client=es_source.es, index_prefix="t-", id_chunk=100)
    opened = _media_searches(source, monkeypatch)
    assert source.count("mediarecords", rqn, None) == duck.count("mediarecords", rqn, None)
    assert opened and all('"_source": false' in body for body in opened)


def _opened_searches(
    source: ElasticsearchSource, index: str, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """The bodies of the searches sent to ``index`` (each opens a scroll or counts)."""
    opened: list[str] = []
    real = source.es.perform_request

    def spy(method: str, path: str, **kwargs: Any) -> Any:
        if path.startswith(f"/{index}/_search"):
            opened.append(json.dumps(kwargs.get("body")))
        return real(method, path, **kwargs)

    monkeypatch.setattr(source.es, "perform_request", spy)
    return opened


def _build_reads(source: ElasticsearchSource, rqn: dict[str, Any]) -> tuple[pa.Table, pa.Table]:
    """What a build of ``rqn``'s records and media asks, in its order; both reads."""
    source.read_ahead("records", rqn, None)
    source.read_ahead("mediarecords", rqn, None)
    source.count("records", rqn, None)
    source.count("mediarecords", rqn, None)
    source.recordset_counts("mediarecords", rqn, None)
    fields = ["uuid", "genus", "datecollected"]
    records = pa.Table.from_batches(
        list(source.batches("records", rqn, None, fields=fields, raw_terms=["dwc:catalogNumber"]))
    )
    media = pa.Table.from_batches(
        list(source.batches("mediarecords", rqn, None, fields=["uuid", "format"]))
    )
    return records, media


def test_a_builds_records_are_sorted_once_for_their_media_merge_and_their_file(
    es_source: ElasticsearchSource, duck: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The media merge of a records query lists the record uuids from the pages of the
    # records' own read (kept for it): the cluster sorts the matching records once.
    rqn = q("records", {"kingdom": "plantae"})
    plain = ElasticsearchSource(client=es_source.es, index_prefix="t-", id_chunk=100)
    fields = ["uuid", "genus", "datecollected"]
    expected_records = pa.Table.from_batches(
        list(plain.batches("records", rqn, None, fields=fields, raw_terms=["dwc:catalogNumber"]))
    )
    expected_media = pa.Table.from_batches(
        list(plain.batches("mediarecords", rqn, None, fields=["uuid", "format"]))
    )
    source = ElasticsearchSource(client=es_source.es, index_prefix="t-", id_chunk=100)
    opened = _opened_searches(source, "t-records", monkeypatch)
    records, media = _build_reads(source, rqn)
    assert records.equals(expected_records) and media.equals(expected_media)
    assert len(opened) == 1 and '"_source": true' in opened[0]
    assert source.recordset_counts("mediarecords", rqn, None) == duck.recordset_counts(
        "mediarecords", rqn, None
    )


def test_uuids_not_plainly_in_the_pages_are_listed_on_the_cluster(
    es_source: ElasticsearchSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    # When the sort values cannot be found in the answers' text, nothing is kept: the uuids
    # are listed by their own scroll and the read asks the cluster, with the same rows.
    import re

    from downloader.sources.elasticsearch import source as source_module

    rqn = q("records", {"kingdom": "plantae"})
    plain = ElasticsearchSource(client=es_source.es, index_prefix="t-", id_chunk=100)
    expected = _build_reads(plain, rqn)
    monkeypatch.setattr(source_module, "_SORT_UUID", re.compile(rb'"no-such-key":\["([^"]*)"\]'))
    source = ElasticsearchSource(client=es_source.es, index_prefix="t-", id_chunk=100)
    opened = _opened_searches(source, "t-records", monkeypatch)
    records, media = _build_reads(source, rqn)
    assert records.equals(expected[0]) and media.equals(expected[1])
    assert len(opened) == 3  # the read tried, the uuid listing, the read again
    assert source._read_spools == {}


def test_reads_said_and_pages_kept_stay_few_in_a_long_lived_worker(
    es_source: ElasticsearchSource,
) -> None:
    # Reads said but never listed (no media merge needed them), and pages kept for reads
    # that never came (a failed build), are kept a few at a time, the oldest dropped.
    source = ElasticsearchSource(client=es_source.es, index_prefix="t-", id_chunk=100)
    for genus in ["acer", "quercus", "pinus", "abies", "betula", "salix", "ulmus"]:
        source.read_ahead("records", q("records", {"genus": genus}), None)
    assert len(source._reads_said) <= 4
    for kingdom in ["plantae", "animalia", "fungi", "plantae"]:
        rqn = q("records", {"kingdom": kingdom})
        source.read_ahead("records", rqn, None)
        source.read_ahead("mediarecords", rqn, None)
        source.recordset_counts("mediarecords", rqn, None)
    assert len(source._read_spools) <= 4
    assert all(spool.file is not None for spool in source._read_spools.values())


@pytest.mark.parametrize(
    ("rq", "mq"),
    [
        ({"recordset": "synthetic-seed-7"}, None),
        ({"recordset": "synthetic-seed-7", "version": 1}, {"format": "image/jpeg"}),
        ({"recordset": ["synthetic-seed-7", "0ac6620a-ba21-405c-af5c-d62cf59464b8"]}, None),
        ({"recordset": "synthetic-seed-7", "version": 2}, None),
        ({}, None),  # every record's media: those with a parent, as the store has them
    ],
)
def test_the_media_of_whole_recordsets_are_asked_of_the_media_index_alone(
    es_source: ElasticsearchSource,
    duck: Any,
    monkeypatch: pytest.MonkeyPatch,
    rq: dict[str, Any],
    mq: dict[str, Any] | None,
) -> None:
    # A recordset's export and a download by recordset read its media with a parent: no
    # record uuid is listed or merged, and the count, tally and rows are the store's.
    rqn = q("records", rq) if rq else {}
    mqn = q("mediarecords", mq) if mq else None
    source = ElasticsearchSource(client=es_source.es, index_prefix="t-", id_chunk=100)
    on_records = _opened_searches(source, "t-records", monkeypatch)
    source.read_ahead("records", rqn, mqn)
    source.read_ahead("mediarecords", rqn, mqn)
    expected = duck.count("mediarecords", rqn, mqn)
    assert source.count("mediarecords", rqn, mqn) == expected
    assert source.recordset_counts("mediarecords", rqn, mqn) == duck.recordset_counts(
        "mediarecords", rqn, mqn
    )
    names = ["uuid", "recordset"]
    ours = rows(source.batches("mediarecords", rqn, mqn, fields=names, batch_size=97))
    theirs = rows(duck.batches("mediarecords", rqn, mqn, fields=names))
    assert sorted(r["uuid"] for r in ours) == sorted(r["uuid"] for r in theirs)
    assert len(ours) == expected and (expected > 100 or rq.get("version") == 2)
    assert on_records == []
    assert not [k for k in source._merges._items if k[0] == "mediarecords"]  # no media merge
