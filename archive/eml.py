"""eml.xml: the dataset metadata of a download, in EML 2.1.1 (GBIF profile conventions).

iDigBio ships no EML; its users asked for one. Ours states what a researcher needs to cite
and understand the download: a title, an abstract with the query, the record, media and
recordset counts, the date and the publisher; the publisher as creator, metadata provider,
contact and publisher; the intellectual rights; the recordsets with their counts; and the
citation, in GBIF's ``additionalMetadata/metadata/gbif/citation`` where GBIF tools look.
Elements follow the order of the EML 2.1.1 ``dataset`` schema.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

from archive.models import EmlInfo

EML_NAMESPACE = "eml://ecoinformatics.org/eml-2.1.1"
_SCHEMA = f"{EML_NAMESPACE} http://rs.gbif.org/schema/eml-gbif-profile/1.1/eml.xsd"
#: Characters XML 1.0 cannot carry at all, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: object) -> str:
    return escape(_NOT_XML.sub("\ufffd", str(value)))


def _attr(value: object) -> str:
    return quoteattr(_NOT_XML.sub("\ufffd", str(value)))


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def default_abstract(info: EmlInfo) -> str:
    """The abstract written when :attr:`EmlInfo.abstract` is None."""
    created = _utc(info.created)
    return (
        f"Darwin Core Archive of {info.record_count} records and {info.media_count} media "
        f"records from {len(info.recordset_counts)} recordsets, matching the query "
        f"{info.query_text}, created on {created.date().isoformat()} by "
        f"{info.publisher_name} ({info.publisher_url})."
    )


def _party(tag: str, info: EmlInfo, indent: str) -> list[str]:
    lines = [
        f"{indent}<{tag}>",
        f"{indent}  <organizationName>{_text(info.publisher_name)}</organizationName>",
    ]
    if info.publisher_url:
        lines.append(f"{indent}  <onlineUrl>{_text(info.publisher_url)}</onlineUrl>")
    lines.append(f"{indent}</{tag}>")
    return lines


def eml_xml(info: EmlInfo, *, citation: str | None = None) -> bytes:
    """The eml.xml document for ``info`` as UTF-8 bytes.

    ``citation`` is used when :attr:`EmlInfo.citation` is None (the writer passes the text
    of the first citation file).
    """
    created = _utc(info.created)
    abstract = info.abstract if info.abstract is not None else default_abstract(info)
    cite = info.citation if info.citation is not None else citation
    ordered = sorted(info.recordset_counts.items(), key=lambda item: (-item[1], item[0]))
    system = info.publisher_url or info.publisher_name or "dwca-downloader"
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<eml:eml xmlns:eml="{EML_NAMESPACE}"'
        ' xmlns:dc="http://purl.org/dc/terms/"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        f' xsi:schemaLocation="{_SCHEMA}"'
        f" packageId={_attr(info.package_id)} system={_attr(system)}"
        ' scope="system" xml:lang="en">',
        "  <dataset>",
        f"    <alternateIdentifier>{_text(info.package_id)}</alternateIdentifier>",
        f'    <title xml:lang="en">{_text(info.title)}</title>',
        *_party("creator", info, "    "),
        *_party("metadataProvider", info, "    "),
        f"    <pubDate>{created.date().isoformat()}</pubDate>",
        "    <language>en</language>",
        "    <abstract>",
        f"      <para>{_text(abstract)}</para>",
        f"      <para>Query: {_text(info.query_text)}</para>",
        f"      <para>Records: {info.record_count}; media records: {info.media_count}; "
        f"recordsets: {len(ordered)}.</para>",
        "    </abstract>",
        "    <additionalInfo>",
        "      <para>Recordsets (identifier: records):</para>",
        *(f"      <para>{_text(rs)}: {count}</para>" for rs, count in ordered),
        "    </additionalInfo>",
        "    <intellectualRights>",
        f"      <para>{_text(info.intellectual_rights)}</para>",
        "    </intellectualRights>",
        *_party("contact", info, "    "),
        *_party("publisher", info, "    "),
        "  </dataset>",
        "  <additionalMetadata>",
        "    <metadata>",
        "      <gbif>",
        f"        <dateStamp>{created.isoformat()}</dateStamp>",
        "        <hierarchyLevel>dataset</hierarchyLevel>",
    ]
    if cite:
        lines.append(f"        <citation>{_text(cite)}</citation>")
    lines += [
        "      </gbif>",
        "    </metadata>",
        "  </additionalMetadata>",
        "</eml:eml>",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")
