"""The citation of a finished download as people paste it: text, BibTeX and RIS.

The status JSON carries all three (``citation``, ``citation_bibtex``, ``citation_ris``) so
the web page and scripts show the same words; each recordset's own citation and licence
are in the archive's ``citations.txt`` and ``rights.txt``.
"""

from __future__ import annotations

from datetime import datetime

from downloader.models import Job


def _day(when: datetime | None) -> str:
    return (when or datetime.now()).date().isoformat()


def _records(job: Job) -> int:
    return int(job.counts.get("records", job.total_records or 0) or 0)


def _sets(job: Job) -> str:
    n = job.recordset_count
    if n is None:
        return "its recordsets"
    return f"{n} recordset{'' if n == 1 else 's'}"


def citation_text(job: Job, *, publisher: str, url: str) -> str:
    """One sentence: who, when, what, where, and the checksum."""
    checksum = f" (sha256 {job.sha256})" if job.sha256 else ""
    return (
        f"{publisher} ({_day(job.completed)[:4]}). Darwin Core Archive download {job.id}: "
        f"{_records(job):,} records from {_sets(job)}. Accessed {_day(job.completed)} at "
        f"{url}{checksum}. Each record keeps the licence of its recordset; see the archive's "
        "citations.txt and rights.txt."
    )


def _bib(text: str) -> str:
    return text.replace("{", "").replace("}", "")


def citation_bibtex(job: Job, *, publisher: str, url: str) -> str:
    """A BibTeX ``@misc`` entry keyed ``dwca_<first part of the id>``."""
    note = f"{_records(job)} records from {_sets(job)}"
    if job.sha256:
        note += f"; sha256 {job.sha256}"
    return "\n".join(
        [
            f"@misc{{dwca_{job.id.split('-')[0]},",
            f"  title        = {{{{Darwin Core Archive download {job.id}}}}},",
            f"  author       = {{{{{_bib(publisher)}}}}},",
            f"  year         = {{{_day(job.completed)[:4]}}},",
            f"  howpublished = {{\\url{{{url}}}}},",
            f"  note         = {{{_bib(note)}; accessed {_day(job.completed)}}},",
            "}",
        ]
    )


def citation_ris(job: Job, *, publisher: str, url: str) -> str:
    """An RIS record of type DATA."""
    note = f"{_records(job)} records from {_sets(job)}"
    if job.sha256:
        note += f"; sha256 {job.sha256}"
    return "\n".join(
        [
            "TY  - DATA",
            f"TI  - Darwin Core Archive download {job.id}",
            f"AU  - {publisher}",
            f"PY  - {_day(job.completed)[:4]}",
            f"DA  - {_day(job.completed).replace('-', '/')}",
            f"UR  - {url}",
            f"N1  - {note}",
            "ER  - ",
        ]
    )
