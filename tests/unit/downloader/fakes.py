"""A small in-memory RecordSource for service, handler and build tests (no DuckDB needed).

Matching is the simplest useful subset of the query semantics: every key of ``rq`` must equal
the record's value (strings compared lower-cased; a list matches any item). Media match
through their parent record.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from downloader.errors import SourceUnavailable
from query.fields import RecordType

GENERA = ["acer", "quercus", "pinus"]


def make_records(n: int) -> list[dict[str, Any]]:
    """``n`` records cycling through three genera and two recordsets."""
    out = []
    for i in range(n):
        genus = GENERA[i % 3]
        out.append(
            {
                "uuid": str(uuid.UUID(int=i + 1)),
                "genus": genus,
                "scientificname": f"{genus} species{i}",
                "recordset": f"rs-{i % 2}",
                "data": {"dwc:genus": genus.title(), "dwc:catalogNumber": f"C{i}"},
            }
        )
    return out


def make_media(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One media record for every third record."""
    return [
        {
            "uuid": str(uuid.UUID(int=10_000 + i)),
            "coreid": r["uuid"],
            "accessuri": f"http://img.example.org/{i}.jpg",
            "recordset": r["recordset"],
            "data": {"ac:accessURI": f"http://img.example.org/{i}.jpg"},
        }
        for i, r in enumerate(records)
        if i % 3 == 0
    ]


class FakeSource:
    """RecordSource over lists of dicts; ``fail_batches`` simulates an unreachable store."""

    def __init__(self, n: int = 30, *, version: str = "1", fail_batches: int = 0) -> None:
        self.records = make_records(n)
        self.media = make_media(self.records)
        self.version = version
        self.fail_batches = fail_batches

    def data_version(self) -> str:
        return self.version

    def warm(self) -> None:
        pass

    @staticmethod
    def _match(doc: dict[str, Any], q: dict[str, Any] | None) -> bool:
        if not q:
            return True
        for key, want in q.items():
            have = doc.get(key)
            wants = want if isinstance(want, list) else [want]
            if str(have).lower() not in [str(w).lower() for w in wants]:
                return False
        return True

    def _docs(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        recs = [r for r in self.records if self._match(r, rq)]
        if rtype == "records":
            return recs
        ids = {r["uuid"] for r in recs}
        return [m for m in self.media if m["coreid"] in ids and self._match(m, mq)]

    def count(self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None) -> int:
        return len(self._docs(rtype, rq, mq))

    def recordset_counts(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> dict[str, int]:
        return dict(Counter(d["recordset"] for d in self._docs(rtype, rq, mq)))

    def raw_terms(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> list[str]:
        return sorted({t for d in self._docs(rtype, rq, mq) for t in d["data"]})

    def batches(
        self,
        rtype: RecordType,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
        *,
        fields: Sequence[str] = (),
        raw_terms: Sequence[str] = (),
        batch_size: int = 10_000,
    ) -> Iterator[pa.RecordBatch]:
        if self.fail_batches:
            self.fail_batches -= 1
            raise SourceUnavailable("the fake record store is down")
        docs = self._docs(rtype, rq, mq)
        for start in range(0, len(docs), batch_size):
            chunk = docs[start : start + batch_size]
            cols = {"coreid": [d.get("coreid", d["uuid"]) for d in chunk]}
            for f in fields:
                cols[f] = [None if d.get(f) is None else str(d.get(f)) for d in chunk]
            for t in raw_terms:
                cols[t] = [d["data"].get(t) for d in chunk]
            yield pa.RecordBatch.from_pydict({k: pa.array(v, pa.string()) for k, v in cols.items()})

    def unique_values(
        self, field: str, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> Iterator[pa.RecordBatch]:
        tally = Counter(str(d[field]) for d in self._docs("records", rq, mq) if d.get(field))
        values = sorted(tally)
        yield pa.RecordBatch.from_pydict(
            {
                "value": pa.array(values, pa.string()),
                "count": pa.array([tally[v] for v in values], pa.int64()),
            }
        )
