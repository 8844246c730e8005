"""Deriving the index fields from verbatim terms, in bulk, as DuckDB SQL.

The catalogue (:mod:`query.fields`) is the single list of fields. Each field's value comes
from its verbatim source term (``source_term``, else the term its CSV header names, such as
``dwc:minimumElevationInMeters`` for ``minelevation``) converted by its kind:

- text and longtext: trimmed and lower-cased, empty becomes NULL;
- list: items split on ``|``, ``;`` or ``,``, trimmed and lower-cased;
- integer and float: parsed numbers (a value that does not parse gives NULL and the flag
  ``<field>_unparseable``);
- boolean: true/false, yes/no, 1/0;
- date: ISO 8601 dates, partial dates (``1990``, ``1990-05``), the start of a range
  (``1990-01-01/1990-02-01``), then anything python-dateutil understands that carries a
  four-digit year.

A few fields are computed rather than read (:data:`RECORD_SPECIAL` and :data:`MEDIA_SPECIAL`):
identifiers, versions, ``geopoint``, ``datecollected``, ``flags``, media links. The SQL is
generated once per ingest for the columns actually present and runs vectorised over the
whole recordset, so a million records derive in seconds.

Flags set on records: ``geopoint_0_coord`` (0, 0 given), ``geopoint_bounds`` (latitude or
longitude out of range), ``geopoint_unparseable`` (a coordinate that is not a number),
``geopoint_partial`` (only one coordinate), ``datecollected_bounds`` (before 1500-01-02 or
in the future; the date is then not indexed), ``datecollected_unparseable`` and
``<field>_unparseable`` for numbers. Media: ``mediarecord_no_record`` (no parent record).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from query.fields import Field, RecordType, fields
from query.text import TOKEN_CHARS

#: The namespace of every uuid this store mints (uuid5 over recordset id and record key).
UUID_NAMESPACE = uuid.UUID("5b1e0d6e-5a8f-4c7e-9a55-2d0f2c6a9b11")

#: Tokens of verbatim values: runs of letters and digits of the NFC-normalised, lower-cased
#: text. This is ``query.text.tokens`` (``[^\W_]+``) in RE2 syntax, run inside DuckDB for
#: speed; a unit test checks both agree on real archives.
TOKEN_PATTERN = f"[{TOKEN_CHARS}]+"

#: Further verbatim terms a field falls back to, in order, when its own term is empty.
ALTERNATES: dict[tuple[RecordType, str], tuple[str, ...]] = {
    ("records", "countrycode"): ("dwc:countryCode",),
    ("records", "commonnames"): ("dwc:vernacularName",),
    ("records", "associatedsequences"): ("dwc:associatedSequences",),
    ("mediarecords", "accessuri"): ("dcterms:identifier", "dc:identifier"),
    ("mediarecords", "format"): ("dc:format",),
    ("mediarecords", "type"): ("dcterms:type",),
    ("mediarecords", "rights"): ("dc:rights", "dcterms:license", "xmpRights:UsageTerms"),
    ("mediarecords", "modified"): ("xmp:MetadataDate",),
}

#: The row-position column of staged verbatim tables (see ``downloader.ingest.read``).
ROW = "_row"

#: Verbatim terms read by the computed fields.
LAT, LON = "dwc:decimalLatitude", "dwc:decimalLongitude"
EVENT_DATE, YEAR, MONTH, DAY = "dwc:eventDate", "dwc:year", "dwc:month", "dwc:day"
SCIENTIFIC_NAME = "dwc:scientificName"


def quote_ident(name: str) -> str:
    """A SQL identifier for any column name (term names hold colons)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A SQL string literal (only for names and constants we produce, never user values)."""
    return "'" + text.replace("'", "''") + "'"


def source_terms(f: Field) -> tuple[str, ...]:
    """The verbatim terms a read (not computed) field takes its value from, in order."""
    own = f.source_term or f.csv_header
    return (own, *ALTERNATES.get((f.type, f.name), ()))


# --- SQL building blocks --------------------------------------------------------------------


class Columns:
    """The verbatim columns of a staged table: SQL for a term, NULL when the term is absent."""

    def __init__(self, names: Iterable[str], *, alias: str) -> None:
        self.names = set(names)
        self.alias = alias

    def __contains__(self, term: str) -> bool:
        return term in self.names

    def term(self, *terms: str) -> str:
        """The first non-empty value among ``terms`` (a VARCHAR expression)."""
        present = [f"{self.alias}.{quote_ident(t)}" for t in terms if t in self.names]
        if not present:
            return "CAST(NULL AS VARCHAR)"
        if len(present) == 1:
            return f"nullif(trim({present[0]}), '')"
        return "coalesce(" + ", ".join(f"nullif(trim({p}), '')" for p in present) + ")"


def text_sql(value: str) -> str:
    """Trimmed, lower-cased, NULL when empty."""
    return f"nullif(lower(trim({value})), '')"


def list_sql(value: str) -> str:
    """Items split on | ; or , trimmed, lower-cased, empty items dropped; NULL when none."""
    parts = f"string_split_regex({value}, '[|;,]')"
    items = f"list_filter(list_transform({parts}, lambda s: lower(trim(s))), lambda s: s <> '')"
    return f"CASE WHEN {value} IS NULL THEN NULL ELSE nullif({items}, []) END"


def float_sql(value: str) -> str:
    """A finite DOUBLE, or NULL."""
    v = f"try_cast({value} AS DOUBLE)"
    return f"CASE WHEN isfinite({v}) THEN {v} END"


def integer_sql(value: str) -> str:
    """A BIGINT (rounded from a decimal number), or NULL."""
    v = f"try_cast({value} AS DOUBLE)"
    return f"CASE WHEN isfinite({v}) AND abs({v}) < 9e18 THEN CAST(round({v}) AS BIGINT) END"


def boolean_sql(value: str) -> str:
    """True/false from the usual spellings, else NULL."""
    v = f"lower(trim({value}))"
    return (
        f"CASE WHEN {v} IN ('true', 't', 'yes', 'y', '1') THEN TRUE "
        f"WHEN {v} IN ('false', 'f', 'no', 'n', '0') THEN FALSE END"
    )


def date_sql(value: str, *, fallback: str | None = None) -> str:
    """A TIMESTAMP from ISO dates, partial dates and range starts; ``fallback`` is an
    expression (a lookup of dateutil's reading) used when none of the patterns match."""
    s = f"trim(split_part({value}, '/', 1))"
    iso = r"^\d{4}-\d{1,2}-\d{1,2}"
    parsed = (
        "CASE "
        f"WHEN regexp_matches({s}, '{iso}') "
        f"THEN try_strptime(regexp_extract({s}, '{iso}'), '%Y-%m-%d') "
        rf"WHEN regexp_full_match({s}, '\d{{4}}-\d{{1,2}}') "
        f"THEN try_strptime({s} || '-1', '%Y-%m-%d') "
        rf"WHEN regexp_full_match({s}, '\d{{4}}') THEN try_strptime({s} || '-1-1', '%Y-%m-%d') "
        rf"WHEN regexp_full_match({s}, '\d{{8}}') THEN try_strptime({s}, '%Y%m%d') "
        "END"
    )
    if fallback:
        return f"coalesce({parsed}, {fallback})"
    return parsed


def uuid5_hash_sql(name: str) -> str:
    """SQL for the SHA-1 hex digest uuid5 is made from, for a VARCHAR name expression."""
    ns = "".join(f"\\x{b:02x}" for b in UUID_NAMESPACE.bytes)
    return f"sha1({quote_literal(ns)}::BLOB || encode({name}))"


def uuid_from_hash_sql(h: str) -> str:
    """SQL formatting a SHA-1 hex column ``h`` (see :func:`uuid5_hash_sql`) as the uuid5
    string Python's ``uuid.uuid5(UUID_NAMESPACE, name)`` gives. ``h`` should be a column,
    not an expression, since it is read several times."""
    return (
        f"substr({h}, 1, 8) || '-' || substr({h}, 9, 4) || '-5' || substr({h}, 14, 3) || '-' "
        f"|| lower(printf('%x', ((('0x' || substr({h}, 17, 1))::INTEGER) & 3) | 8)) "
        f"|| substr({h}, 18, 3) || '-' || substr({h}, 21, 12)"
    )


def json_object_sql(cols: Columns, terms: Sequence[str]) -> str:
    """A JSON object text of the non-null verbatim values, keyed by term name."""
    if not terms:
        return "'{}'"
    parts = [
        f"CASE WHEN {cols.alias}.{quote_ident(t)} IS NOT NULL "
        f"THEN {quote_literal(json.dumps(t) + ':')} || to_json({cols.alias}.{quote_ident(t)}) END"
        for t in terms
    ]
    return "'{' || concat_ws(',', " + ", ".join(parts) + ") || '}'"


def fulltext_sql(cols: Columns, terms: Sequence[str]) -> str:
    """SQL for a row's ``fulltext``: all its verbatim values joined by spaces,
    NFC-normalised and lower-cased, NULL when there is none. Its tokens
    (``query.text.tokens``: the runs of letters and digits) are found when searched
    (``query.sql`` matches a token between non-letters-or-digits). Storing the text, not
    its token list, spares the ingest a regex pass and DuckDB storing some 34 list items
    per record: about a fifth of the CPU of a million-record ingest.

    Each value is normalised on its own before they are joined: the same text (a space
    composes with nothing on either side, so it ends every composition), at two thirds of
    the cost, since DuckDB passes ASCII text through untouched and only the values that
    are not ASCII go through the normaliser, not the whole line they would make it read."""
    if not terms:
        return "CAST(NULL AS VARCHAR)"
    values = ", ".join(f"nfc_normalize({cols.alias}.{quote_ident(t)})" for t in terms)
    return f"nullif(lower(concat_ws(' ', {values})), '')"


def generic_sql(f: Field, cols: Columns) -> tuple[str, str | None]:
    """(value SQL, unparseable-condition SQL or None) for a field read from its terms."""
    raw = cols.term(*source_terms(f))
    if f.kind in ("text", "longtext"):
        return text_sql(raw), None
    if f.kind == "list":
        return list_sql(raw), None
    if f.kind == "float":
        value = float_sql(raw)
        return value, f"({raw} IS NOT NULL AND {value} IS NULL)"
    if f.kind == "integer":
        value = integer_sql(raw)
        return value, f"({raw} IS NOT NULL AND {value} IS NULL)"
    if f.kind == "boolean":
        return boolean_sql(raw), None
    if f.kind == "date":
        value = date_sql(raw)
        return value, f"({raw} IS NOT NULL AND {value} IS NULL)"
    return "NULL", None


# --- the two SELECTs ------------------------------------------------------------------------

#: Record fields computed from more than their own term (see :func:`record_select`).
RECORD_SPECIAL = frozenset(
    {
        "uuid",
        "datemodified",
        "etag",
        "recordids",
        "version",
        "genus",
        "specificepithet",
        "geopoint",
        "datecollected",
        "startdayofyear",
        "recordset",
        "mediarecords",
        "hasImage",
        "hasMedia",
        "flags",
        "dqs",
    }
)
#: Media fields computed from more than their own term (see :func:`media_select`).
MEDIA_SPECIAL = frozenset(
    {
        "uuid",
        "datemodified",
        "etag",
        "version",
        "recordids",
        "recordset",
        "records",
        "mediatype",
        "hasSpecimen",
        "flags",
        "dqs",
    }
)


def _flags_sql(conditions: Sequence[tuple[str, str]]) -> str:
    if not conditions:
        return "CAST(NULL AS VARCHAR[])"
    items = ", ".join(
        f"CASE WHEN {cond} THEN {quote_literal(name)} END" for name, cond in conditions
    )
    return f"nullif(list_filter([{items}], lambda x: x IS NOT NULL), [])"


def dqs_sql(cols: Columns, rtype: RecordType) -> str:
    """SQL for the data quality score ``dqs``: the share of the catalogue's verbatim source
    terms that a row fills in."""
    terms = sorted({f.source_term for f in fields(rtype) if f.source_term})
    present = [t for t in terms if t in cols]
    if not present:
        return "CAST(0 AS DOUBLE)"
    filled = " + ".join(
        f"CAST({cols.alias}.{quote_ident(t)} IS NOT NULL AS INTEGER)" for t in present
    )
    return f"round(({filled}) / {float(len(terms))}, 4)"


def record_select(
    columns: Iterable[str],
    *,
    source: str,
    media_agg: str | None,
    datemap: str | None,
) -> str:
    """SQL selecting every ``records`` column (by name) from the staged verbatim table.

    ``source`` holds the verbatim columns plus ``_grp`` (the recordset id), ``_row``,
    ``_key`` (the record key), ``_uuid``, ``_dqs`` and ``_fulltext``;
    ``media_agg`` (optional) has ``_parent``, ``_media`` (uuids) and ``_has_image`` per
    parent uuid; ``datemap`` (optional) maps unusual ``_raw`` eventDate texts to ``_parsed``
    timestamps. Named parameter: ``$now``; ``version`` is left 0 for the write to set.
    """
    terms = sorted(c for c in columns if not c.startswith("_"))
    cols = Columns(terms, alias="v")
    event = cols.term(EVENT_DATE)
    date_fallback = "dm._parsed" if datemap else None
    ymd = (
        f"CAST(try(make_date(try_cast({cols.term(YEAR)} AS INTEGER), "
        f"coalesce(try_cast({cols.term(MONTH)} AS INTEGER), 1), "
        f"coalesce(try_cast({cols.term(DAY)} AS INTEGER), 1))) AS TIMESTAMP)"
    )
    helpers = {
        "_lat": float_sql(cols.term(LAT)),
        "_lon": float_sql(cols.term(LON)),
        "_lat_raw": cols.term(LAT),
        "_lon_raw": cols.term(LON),
        "_date": f"coalesce({date_sql(event, fallback=date_fallback)}, {ymd})",
        "_date_given": f"({event} IS NOT NULL OR {cols.term(YEAR)} IS NOT NULL)",
        "_data": json_object_sql(cols, terms),
        "_sci": cols.term(SCIENTIFIC_NAME),
    }
    joins: list[str] = []
    if media_agg:
        joins.append(f"LEFT JOIN {media_agg} AS ma ON ma._parent = v._uuid")
    if datemap:
        joins.append(f"LEFT JOIN {datemap} AS dm ON dm._raw = {event}")
    stage_a = (
        "SELECT v._grp, v._uuid, v._key, "
        + ", ".join(f"{sql} AS {name}" for name, sql in helpers.items())
        + (", ma._media, ma._has_image" if media_agg else ", NULL AS _media, NULL AS _has_image")
        + ", v._fulltext AS _fulltext"
    )
    generic_cols: list[str] = []
    unparseable: list[tuple[str, str]] = []
    for f in fields("records"):
        if f.name in RECORD_SPECIAL:
            continue
        sql, bad = generic_sql(f, cols)
        stage_a += f", {sql} AS {quote_ident(f.name)}"
        generic_cols.append(f.name)
        if bad:
            unparseable.append((f"{f.name}_unparseable", bad))
    if unparseable:
        stage_a += ", " + _flags_sql(unparseable) + " AS _num_flags"
    else:
        stage_a += ", CAST(NULL AS VARCHAR[]) AS _num_flags"
    stage_a += ", v._dqs AS _dqs"
    # genus and specificepithet fall back on the scientific name, so stage A keeps their
    # plain readings under their own names for stage B.
    stage_a += f", {text_sql(cols.term('dwc:genus'))} AS genus"
    stage_a += f", {text_sql(cols.term('dwc:specificEpithet'))} AS specificepithet"
    stage_a += f" FROM {source} AS v " + " ".join(joins)

    valid_point = (
        "(_lat BETWEEN -90 AND 90 AND _lon BETWEEN -180 AND 180 AND NOT (_lat = 0 AND _lon = 0))"
    )
    in_bounds = "(_date >= TIMESTAMP '1500-01-02' AND _date <= $now)"
    flags = _flags_sql(
        [
            ("geopoint_0_coord", "(_lat = 0 AND _lon = 0)"),
            (
                "geopoint_bounds",
                "(_lat IS NOT NULL AND _lon IS NOT NULL AND "
                "NOT (_lat BETWEEN -90 AND 90 AND _lon BETWEEN -180 AND 180))",
            ),
            (
                "geopoint_unparseable",
                "((_lat_raw IS NOT NULL AND _lat IS NULL) "
                "OR (_lon_raw IS NOT NULL AND _lon IS NULL))",
            ),
            ("geopoint_partial", "((_lat_raw IS NULL) <> (_lon_raw IS NULL))"),
            ("datecollected_bounds", f"(_date IS NOT NULL AND NOT {in_bounds})"),
            ("datecollected_unparseable", "(_date_given AND _date IS NULL)"),
        ]
    )
    binomial = r"^([A-Za-z][a-z-]+)\s+([a-z][a-z-]+)\b"
    epithet = f"regexp_extract(_sci, '{binomial}', 2)"
    special = {
        "uuid": "_uuid",
        "etag": "sha1(_data)",
        "datemodified": "$now",
        "recordids": "[_grp || '\\' || _key]",
        "version": "0",
        "genus": (
            f"coalesce({quote_ident('genus')}, "
            f"nullif(lower(regexp_extract(_sci, '{binomial}', 1)), ''))"
        ),
        "specificepithet": (
            f"coalesce({quote_ident('specificepithet')}, CASE WHEN {epithet} NOT IN "
            "('', 'sp', 'spp', 'cf', 'aff', 'var', 'subsp', 'indet') "
            f"THEN lower({epithet}) END)"
        ),
        "geopoint": f"CASE WHEN {valid_point} THEN struct_pack(lat := _lat, lon := _lon) END",
        "datecollected": f"CASE WHEN {in_bounds} THEN _date END",
        "startdayofyear": f"CASE WHEN {in_bounds} THEN CAST(dayofyear(_date) AS BIGINT) END",
        "recordset": "_grp",
        "mediarecords": "_media",
        "hasImage": "coalesce(_has_image, FALSE)",
        "hasMedia": "_media IS NOT NULL",
        "flags": f"nullif(list_concat(coalesce({flags}, []), coalesce(_num_flags, [])), [])",
        "dqs": "_dqs",
    }
    select = []
    for f in fields("records"):
        expr = special[f.name] if f.name in RECORD_SPECIAL else quote_ident(f.name)
        select.append(f"{expr} AS {quote_ident(f.name)}")
    select += ["_data::JSON AS data", "_fulltext AS fulltext"]
    return f"SELECT {', '.join(select)} FROM ({stage_a}) AS a"


def media_select(columns: Iterable[str], *, source: str) -> str:
    """SQL selecting every ``mediarecords`` column (by name) plus ``coreid``.

    ``source`` holds the verbatim media columns plus ``_grp`` (the recordset id), ``_key``,
    ``_uuid``, ``_parent`` (the parent record's uuid or NULL), ``_dqs`` and ``_fulltext``.
    Named parameter: ``$now``; ``version`` is left 0 for the write to set.
    """
    terms = sorted(c for c in columns if not c.startswith("_"))
    cols = Columns(terms, alias="v")
    generic: dict[str, str] = {}
    unparseable: list[tuple[str, str]] = []
    for f in fields("mediarecords"):
        if f.name in MEDIA_SPECIAL:
            continue
        sql, bad = generic_sql(f, cols)
        generic[f.name] = sql
        if bad:
            unparseable.append((f"{f.name}_unparseable", bad))
    fmt = generic["format"]
    typ = generic["type"]
    mediatype = (
        f"CASE WHEN {fmt} LIKE 'image/%' OR {typ} IN ('stillimage', 'image', 'photograph') "
        "THEN 'images' "
        f"WHEN {fmt} LIKE 'audio/%' OR {typ} IN ('sound', 'audio') THEN 'sounds' "
        f"WHEN {fmt} LIKE 'video/%' OR {typ} IN ('movingimage', 'video') THEN 'video' "
        f"WHEN {fmt} LIKE 'model/%' THEN 'models' END"
    )
    data = json_object_sql(cols, terms)
    flags = _flags_sql([*unparseable, ("mediarecord_no_record", "v._parent IS NULL")])
    special = {
        "uuid": "v._uuid",
        "datemodified": "$now",
        "etag": f"sha1({data})",
        "version": "0",
        "recordids": "[v._grp || '\\' || v._key]",
        "recordset": "v._grp",
        "records": "CASE WHEN v._parent IS NOT NULL THEN [v._parent] END",
        "mediatype": mediatype,
        "hasSpecimen": "v._parent IS NOT NULL",
        "flags": flags,
        "dqs": "v._dqs",
    }
    select = ["v._parent AS coreid"]
    for f in fields("mediarecords"):
        expr = special[f.name] if f.name in MEDIA_SPECIAL else generic[f.name]
        select.append(f"{expr} AS {quote_ident(f.name)}")
    select += [f"({data})::JSON AS data", "v._fulltext AS fulltext"]
    return f"SELECT {', '.join(select)} FROM {source} AS v"


# --- dates python-dateutil has to read ------------------------------------------------------

_YEAR = re.compile(r"(?<!\d)\d{4}(?!\d)")


def parse_loose_date(text: str) -> datetime | None:
    """Dateutil's reading of a date the SQL patterns do not cover (``Tue Apr 01 1930``,
    ``12 March 1987``), or None. Text without a four-digit year is not guessed at."""
    import warnings

    from dateutil import parser

    s = text.split("/", 1)[0].strip()
    if not _YEAR.search(s):
        return None
    try:
        with warnings.catch_warnings():
            # Zone names such as CET are ignored on purpose: only the day is indexed.
            warnings.simplefilter("ignore")
            value = parser.parse(s, default=datetime(2000, 1, 1), fuzzy=False)
    except (ValueError, OverflowError, parser.ParserError):
        return None
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None)
    return value.replace(hour=0, minute=0, second=0, microsecond=0)
