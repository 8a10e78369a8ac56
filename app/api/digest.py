"""A declared SHA-256 of an upload's file: RFC 9530's `Repr-Digest` header or a hex form field.

`Repr-Digest` is an RFC 8941 Dictionary whose members are Byte Sequences keyed by algorithm.
It is parsed strictly: a header that is not such a Dictionary, or a `sha-256` member that is
not 32 bytes or appears twice, is a 400. Members of other algorithms (`sha-512`, and the
deprecated `md5`, `sha`, `crc32c`, ...) are ignored, as RFC 9530 lets a recipient do; a header
without `sha-256` declares nothing. The gateway reads the digest as that of the file part's
bytes, not of the multipart envelope around them.
"""

from __future__ import annotations

import base64
import binascii
import re
import string

from app.core.errors import InvalidRequest

HEADER = "Repr-Digest"
FIELD = "sha256"
ALGORITHM = "sha-256"
SHA256_BYTES = 32

_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_INTEGER = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{1,3})?")
_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")
_STRING = re.compile(r'"(?:[ !#-\[\]-~]|\\["\\])*"')
_HEX = frozenset(string.hexdigits)


def _malformed(why: str) -> InvalidRequest:
    return InvalidRequest(
        f"The {HEADER} header is not a valid RFC 9530 digest ({why}); "
        f"send e.g. '{ALGORITHM}=:<base64 of the 32-byte SHA-256>:'.",
        param=HEADER,
        code="invalid_digest",
    )


class _Reader:
    """A cursor over one combined field value, consuming RFC 8941 pieces."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if not self.done() else ""

    def skip(self, chars: str) -> None:
        while not self.done() and self.text[self.pos] in chars:
            self.pos += 1

    def match(self, pattern: re.Pattern[str], what: str) -> re.Match[str]:
        found = pattern.match(self.text, self.pos)
        if found is None:
            raise _malformed(f"expected {what} at character {self.pos + 1}")
        self.pos = found.end()
        return found

    def bare_item(self) -> bytes | None:
        """A Bare Item; the bytes of a Byte Sequence, None for any other kind."""
        ch = self.peek()
        if ch == ":":
            encoded = self.match(_BYTES, "a byte sequence").group(1)
            try:
                return base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise _malformed("a byte sequence is not valid base64") from None
        if ch == '"':
            self.match(_STRING, "a string")
        elif ch == "?":
            self.pos += 1
            if self.peek() not in ("0", "1"):
                raise _malformed("a boolean is ?0 or ?1")
            self.pos += 1
        elif ch.isdigit() or ch == "-":
            self.match(_INTEGER, "a number")
        else:
            self.match(_TOKEN, "an item")
        return None

    def parameters(self) -> None:
        while self.peek() == ";":
            self.pos += 1
            self.skip(" ")
            self.match(_KEY, "a parameter name")
            if self.peek() == "=":
                self.pos += 1
                self.bare_item()

    def member(self) -> bytes | None:
        """A member's value after its '=': an Item (its bytes if a Byte Sequence) or an Inner
        List (None)."""
        if self.peek() == "(":
            self.pos += 1
            while True:
                self.skip(" ")
                if self.peek() == ")":
                    self.pos += 1
                    break
                if self.done():
                    raise _malformed("an inner list is not closed")
                self.bare_item()
                self.parameters()
                if self.peek() not in (" ", ")"):
                    raise _malformed("inner list items are separated by spaces")
            self.parameters()
            return None
        value = self.bare_item()
        self.parameters()
        return value


def _dictionary(text: str) -> list[tuple[str, bytes | None, bool]]:
    """An RFC 8941 Dictionary as (key, byte sequence or None, whether it was a byte sequence)."""
    reader = _Reader(text)
    reader.skip(" ")
    members: list[tuple[str, bytes | None, bool]] = []
    while not reader.done():
        key = reader.match(_KEY, "an algorithm name").group(0)
        if reader.peek() == "=":
            reader.pos += 1
            is_bytes = reader.peek() == ":"
            value = reader.member()
        else:
            reader.parameters()
            value, is_bytes = None, False
        members.append((key, value, is_bytes))
        reader.skip(" \t")
        if reader.done():
            break
        if reader.peek() != ",":
            raise _malformed(f"expected ',' at character {reader.pos + 1}")
        reader.pos += 1
        reader.skip(" \t")
        if reader.done():
            raise _malformed("a trailing comma")
    return members


def repr_digest(values: list[str]) -> str | None:
    """The hex SHA-256 that `Repr-Digest` field lines declare, or None when they declare none."""
    if not values:
        return None
    text = ", ".join(value.strip(" \t") for value in values)
    if not text or not text.isascii():
        raise _malformed("empty or not ASCII")
    declared: list[bytes] = []
    for key, value, is_bytes in _dictionary(text):
        if not is_bytes:
            raise _malformed(f"the value of '{key}' is not a byte sequence")
        if key == ALGORITHM and value is not None:
            declared.append(value)
    if not declared:
        return None  # other algorithms only: ignored
    if len(declared) > 1:
        raise _malformed(f"'{ALGORITHM}' is given more than once")
    if len(declared[0]) != SHA256_BYTES:
        raise _malformed(f"a SHA-256 digest is {SHA256_BYTES} bytes, not {len(declared[0])}")
    return declared[0].hex()


def repr_digest_of(sha256: str) -> str:
    """The `Repr-Digest` value of content whose hex SHA-256 is `sha256`."""
    return f"{ALGORITHM}=:{base64.b64encode(bytes.fromhex(sha256)).decode('ascii')}:"


def hex_digest(value: str) -> str:
    """The `sha256` form field: 64 hex digits (either case), as lower-case hex."""
    if len(value) != 2 * SHA256_BYTES or not set(value) <= _HEX:
        raise InvalidRequest(
            f"The '{FIELD}' field must be the file's SHA-256 as 64 hex digits.",
            param=FIELD,
            code="invalid_digest",
        )
    return value.lower()


def agreed(*digests: str | None) -> str | None:
    """The one digest the header and the field declare; a 400 when they differ."""
    given = {d for d in digests if d is not None}
    if len(given) > 1:
        raise InvalidRequest(
            f"The {HEADER} header and the '{FIELD}' field declare different digests.",
            param=FIELD,
            code="invalid_digest",
        )
    return given.pop() if given else None


def mismatch(*, declared: str, received: str) -> InvalidRequest:
    """The file's bytes are not the ones declared: nothing of them is kept."""
    return InvalidRequest(
        f"The file's SHA-256 is {received}, not the declared {declared}; nothing was stored.",
        param="file",
        code="digest_mismatch",
    )
