"""Identifiers given by callers (tenant names, JWT subjects): stored exactly or refused.

A tenant name is 1 to 100 characters in Unicode NFC, made of letters, marks, digits and the
punctuation ``- _ . @ : +``. Whitespace, control, format (zero-width, bidi), private-use and
unassigned characters are refused, and so are compatibility forms (full-width letters,
ligatures: anything NFKC would change), so two names never read the same.
"""

from __future__ import annotations

import unicodedata

TENANT_NAME_MAX = 100
SUBJECT_MAX = 58  # the principal id column, with room for its prefix
TENANT_PUNCTUATION = frozenset("-_.@:+")
_ALLOWED_CATEGORIES = ("L", "M", "N")


class NameRefused(ValueError):
    """A caller-given identifier that cannot be stored exactly; the message is safe to show."""


def tenant_name(raw: object) -> str:
    """The tenant name in NFC, or NameRefused with the reason."""
    if not isinstance(raw, str) or not raw:
        raise NameRefused("tenant name must be a non-empty string")
    name = unicodedata.normalize("NFC", raw)
    if len(name) > TENANT_NAME_MAX:
        raise NameRefused(f"longer than {TENANT_NAME_MAX} characters")
    for ch in name:
        if ch in TENANT_PUNCTUATION:
            continue
        category = unicodedata.category(ch)
        if not category.startswith(_ALLOWED_CATEGORIES) or category == "No":
            raise NameRefused("only letters, digits, marks and -_.@:+ allowed")
    if unicodedata.normalize("NFKC", name) != name:
        raise NameRefused("compatibility characters (e.g. full-width)")
    return name


def subject(raw: object) -> str:
    """A JWT subject stored exactly: printable, at most SUBJECT_MAX characters."""
    if not isinstance(raw, str) or not raw.strip() or raw != raw.strip():
        raise NameRefused("invalid subject")
    if len(raw) > SUBJECT_MAX:
        raise NameRefused(f"subject is longer than {SUBJECT_MAX} characters")
    if any(unicodedata.category(ch)[0] in "CZ" and ch != " " for ch in raw):
        raise NameRefused("subject holds control or format characters")
    return raw
