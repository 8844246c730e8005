"""eml.xml: the dataset metadata of a download, in EML 2.1.1 (GBIF profile conventions).

iDigBio ships no EML; its users asked for one. Ours states what a researcher needs to cite
and understand the download: a title, an abstract with the query, the record, media and
recordset counts, the date and the publisher; the publisher as creator, metadata provider,
associated party in the role ``publisher``, and contact; the intellectual rights; the
recordsets with their counts; and the citation, in GBIF's
``additionalMetadata/metadata/gbif/citation`` where GBIF tools look.

The document is valid against the schema its ``xsi:schemaLocation`` names, the GBIF
Metadata Profile 1.1 (what GBIF's and the IPT's tools validate against), and so against
EML 2.1.1, which the profile narrows: ``additionalInfo`` and ``intellectualRights`` hold
one ``para`` each, the publisher is an ``associatedParty`` (the profile has no
``publisher`` element), and every party has a non-empty name.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

from archive.models import EmlInfo

EML_NAMESPACE = "eml://ecoinformatics.org/eml-2.1.1"
_SCHEMA = f"{EML_NAMESPACE} http://rs.gbif.org/schema/eml-gbif-profile/1.1/eml.xsd"
#: Characters XML 1.0 cannot carry at all, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
#: The party name (and ``system``) when the settings give neither a name nor a URL.
_FALLBACK_NAME = "dwca-downloader"


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


def _party(tag: str, info: EmlInfo, indent: str, *, role: str | None = None) -> list[str]:
    # The profile wants a name with at least one non-space character.
    name = info.publisher_name.strip() or info.publisher_url.strip() or _FALLBACK_NAME
    lines = [
        f"{indent}<{tag}>",
        f"{indent}  <organizationName>{_text(name)}</organizationName>",
    ]
    if info.publisher_url:
        lines.append(f"{indent}  <onlineUrl>{_text(info.publisher_url)}</onlineUrl>")
    if role is not None:
        lines.append(f"{indent}  <role>{_text(role)}</role>")
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
    system = info.publisher_url or info.publisher_name or _FALLBACK_NAME
    listed = "; ".join(f"{rs}: {count}" for rs, count in ordered)
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
        *_party("associatedParty", info, "    ", role="publisher"),
        f"    <pubDate>{created.date().isoformat()}</pubDate>",
        "    <language>en</language>",
        "    <abstract>",
        f"      <para>{_text(abstract)}</para>",
        f"      <para>Query: {_text(info.query_text)}</para>",
        f"      <para>Records: {info.record_count}; media records: {info.media_count}; "
        f"recordsets: {len(ordered)}.</para>",
        "    </abstract>",
        "    <additionalInfo>",
        f"      <para>Recordsets (identifier: records): {_text(listed or 'none')}.</para>",
        "    </additionalInfo>",
        "    <intellectualRights>",
        f"      <para>{_text(info.intellectual_rights)}</para>",
        "    </intellectualRights>",
        *_party("contact", info, "    "),
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


def stated_rights(document: str | None) -> str:
    """The intellectual rights an EML document states, as one line of text (with the URL of
    a licence link after its title), or ``""`` when there is none or it cannot be parsed.

    Reads a recordset's EML (any EML version) for ``citations.txt`` and ``rights.txt``.
    """
    if not document:
        return ""
    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError:
        return ""
    for element in root.iter():
        if _local(element.tag) == "intellectualRights":
            # No space before punctuation that followed a link.
            return re.sub(r" ([.,;:])", r"\1", " ".join(_words(element)))
    return ""


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _words(element: ElementTree.Element) -> list[str]:
    """The words of ``element`` in document order, a ``ulink``'s URL after its title."""
    words = (element.text or "").split()
    for child in element:
        words += _words(child)
        url = child.get("url")
        if _local(child.tag) == "ulink" and url:
            words.append(f"({url})")
        words += (child.tail or "").split()
    return words
