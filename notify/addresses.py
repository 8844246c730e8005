"""Email address checks shared by the service (at request time) and the mailer."""

from __future__ import annotations

import re

from notify.errors import InvalidAddress

# A deliberately plain addr-spec: dot-atom local part, a domain of dot-separated labels.
# Quoted local parts and IP literals are legal in RFC 5322 but never needed by researchers,
# and refusing them keeps every header we write free of anything surprising.
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"^{_LOCAL}@{_LABEL}(?:\.{_LABEL})*$")
MAX_LENGTH = 254


def check_address(address: str) -> str:
    """Return ``address`` stripped of surrounding blanks, or raise :class:`InvalidAddress`.

    Refuses CR, LF and other control characters (header injection), display names, lists,
    and anything longer than 254 characters.
    """
    if not isinstance(address, str):
        raise InvalidAddress("email must be a string")
    if any(ord(c) < 32 or ord(c) == 127 for c in address):
        raise InvalidAddress("email must not contain line breaks or control characters")
    text = address.strip()
    if not text:
        raise InvalidAddress("email is empty")
    if len(text) > MAX_LENGTH:
        raise InvalidAddress(f"email is longer than {MAX_LENGTH} characters")
    if not _ADDRESS.match(text):
        raise InvalidAddress(f"{text!r} is not an email address like name@example.org")
    return text
