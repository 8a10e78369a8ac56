"""The multipart/form-data body of a provider upload, streamed from any source of bytes.

Laid out as httpx and the providers' SDKs lay it out (text fields first, then the file part),
with a Content-Length known up front, so the bytes can come from a blob store chunk by chunk;
a body of unknown size (bytes still arriving from a client) goes chunked instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from typing import Protocol

# How browsers and httpx escape a form parameter (the WHATWG HTML multipart encoding).
_ESCAPES = {'"': "%22", "\\": "\\\\"} | {chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B}
_ESCAPE = re.compile("|".join(re.escape(c) for c in _ESCAPES))


class UploadBody(Protocol):
    """The bytes of one upload: its size (None: not known yet), and its bytes from the start
    on every call."""

    @property
    def size(self) -> int | None: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


def _param(name: str, value: str) -> str:
    return f'{name}="{_ESCAPE.sub(lambda m: _ESCAPES[m.group(0)], value)}"'


class UploadForm:
    """Text fields and one file part; `stream()` may be called once per try."""

    def __init__(
        self,
        *,
        fields: dict[str, str],
        file_field: str,
        filename: str,
        content_type: str,
        body: UploadBody,
    ) -> None:
        self.boundary = os.urandom(16).hex()
        self._body = body
        dash = f"--{self.boundary}\r\n"
        head = "".join(
            f"{dash}Content-Disposition: form-data; {_param('name', name)}\r\n\r\n{value}\r\n"
            for name, value in fields.items()
        )
        head += (
            f"{dash}Content-Disposition: form-data; {_param('name', file_field)}; "
            f"{_param('filename', filename)}\r\nContent-Type: {content_type}\r\n\r\n"
        )
        self._head = head.encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": f"multipart/form-data; boundary={self.boundary}"}
        if self._body.size is not None:
            length = len(self._head) + self._body.size + len(self._tail)
            headers["Content-Length"] = str(length)
        return headers

    async def stream(self) -> AsyncIterator[bytes]:
        yield self._head
        sent = 0
        async for chunk in self._body.chunks():
            sent += len(chunk)
            yield chunk
        if self._body.size is not None and sent != self._body.size:
            raise OSError(f"the upload body gave {sent} bytes, not the {self._body.size} declared")
        yield self._tail
