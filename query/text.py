"""Tokenising text for full-text search, shared by ingest and both query compilers.

Ingest stores ``tokens(value)`` of every verbatim value in the ``fulltext`` column (DuckDB)
or field (Elasticsearch); a fulltext query matches when every token of the query is among
them. Because both sides use this one function, the two compilers agree by construction.
"""

from __future__ import annotations

import re
import unicodedata

# \w is Unicode-aware for str patterns: letters and digits of every script, and "_". The
# underscore is treated as a separator too, so "acer_rubrum" gives "acer" and "rubrum".
_WORD = re.compile(r"[^\W_]+")

#: The letters and digits a token is made of, as an RE2 character-class body (DuckDB's
#: regular expressions): ``[{TOKEN_CHARS}]+`` is ``[^\W_]+`` after NFC and lower-casing.
TOKEN_CHARS = r"\pL\pN"


def tokens(text: str) -> list[str]:
    """The distinct lower-cased word tokens of ``text``, in order of first appearance.

    Text is NFC-normalised first so that composed and decomposed accents give the same token,
    then split on every run of non-word characters (punctuation, whitespace, underscores).
    ``casefold`` is deliberately not used: lower-casing is what every other comparison in the
    project does, and ``str.lower`` keeps single code points single for nearly all scripts.
    """
    seen: dict[str, None] = {}
    for match in _WORD.finditer(unicodedata.normalize("NFC", text)):
        seen.setdefault(match.group().lower(), None)
    return list(seen)
