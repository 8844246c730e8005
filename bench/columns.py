"""The columns of the four data files of a default DwC-A, as the baseline and the limit
read them straight from the embedded store.

Our build gets its columns from ``archive/``; the two references must read and write the
same cells, or the ratios would compare different work. The files are:

| file                 | rows                           | columns                           |
|----------------------|--------------------------------|-----------------------------------|
| occurrence.csv       | matching records               | coreid + every record index field |
| occurrence_raw.csv   | matching records               | coreid + every verbatim term      |
| multimedia.csv       | media of the matching records  | coreid + every media index field  |
| multimedia_raw.csv   | media of the matching records  | coreid + every verbatim term      |
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import duckdb

from query.fields import Field, RecordType, fields


@dataclass(frozen=True)
class Selection:
    """Which records a measurement covers: a SQL condition on ``records`` with its parameters,
    and the iDigBio query (``rq``) our service gets for the same rows."""

    label: str
    rq: dict[str, Any]
    where: str
    params: tuple[Any, ...]


@dataclass(frozen=True)
class DataFile:
    """One data file of the archive: its name, record type, header and SQL pieces."""

    name: str
    rtype: RecordType
    header: list[str]
    #: Plain column expressions (the baseline formats the Python values itself).
    plain: list[str]
    #: The SELECT list that produces the archive's cells and header, for DuckDB's COPY.
    copy_select: str
    #: The verbatim terms, when this is a raw file (the baseline reads them from ``data``).
    raw_terms: list[str]

    def from_where(self, sel: Selection) -> tuple[str, tuple[Any, ...]]:
        """``FROM ... WHERE ...`` for this file's rows under ``sel``, with its parameters."""
        if self.rtype == "records":
            return f"FROM records AS t WHERE {sel.where or 'TRUE'}", sel.params
        inner = f"SELECT uuid FROM records WHERE {sel.where or 'TRUE'}"
        return f"FROM mediarecords AS t WHERE t.coreid IN ({inner})", sel.params


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _formatted(f: Field | None, col: str) -> str:
    kind = f.kind if f is not None else "text"
    # The archive's cell rules (docs/architecture.md): strings as they are; numbers,
    # booleans, lists and structs as JSON text; timestamps as ISO 8601 with +00:00.
    if kind in ("list", "point"):
        return f"CAST(to_json({col}) AS VARCHAR)"
    if kind == "date":
        return f"strftime({col}, '%Y-%m-%dT%H:%M:%S+00:00')"
    return col


def raw_terms(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """Sorted verbatim term names present in ``table``'s ``data`` objects."""
    rows = con.execute(
        f"SELECT DISTINCT unnest(json_keys(data)) AS k FROM {table} ORDER BY k"
    ).fetchall()
    return [r[0] for r in rows]


def data_files(con: duckdb.DuckDBPyConnection) -> list[DataFile]:
    """The four data files with every catalogue field and every verbatim term in the store."""
    out: list[DataFile] = []
    for rtype, name, raw_name, coreid in (
        ("records", "occurrence.csv", "occurrence_raw.csv", "t.uuid"),
        ("mediarecords", "multimedia.csv", "multimedia_raw.csv", "t.coreid"),
    ):
        rt: RecordType = "records" if rtype == "records" else "mediarecords"
        cat = fields(rt)
        out.append(
            DataFile(
                name=name,
                rtype=rt,
                header=["coreid", *(f.csv_header for f in cat)],
                plain=[coreid, *(f"t.{_q(f.name)}" for f in cat)],
                copy_select=", ".join(
                    f"{_formatted(f, expr)} AS {_q(h)}"
                    for f, expr, h in zip(
                        [None, *cat],
                        [coreid, *(f"t.{_q(f.name)}" for f in cat)],
                        ["coreid", *(f.csv_header for f in cat)],
                        strict=True,
                    )
                ),
                raw_terms=[],
            )
        )
        terms = raw_terms(con, rtype)
        shape = _lit(json.dumps(dict.fromkeys(terms, "VARCHAR")))
        out.append(
            DataFile(
                name=raw_name,
                rtype=rt,
                header=["coreid", *terms],
                plain=[coreid, "CAST(t.data AS VARCHAR)"],
                # json_transform parses each object once into a struct whose fields are the
                # terms (unnest makes them columns named by the term): the fastest way DuckDB
                # has, many times faster than one ->> extraction per term.
                copy_select=f"{coreid} AS coreid, unnest(json_transform(t.data, {shape}))",
                raw_terms=terms,
            )
        )
    return out
