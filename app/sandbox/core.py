"""Provider-neutral plumbing for the sandbox: options, stored files, faults and dispatch."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

MiB = 1024 * 1024
GiB = 1024 * MiB
OPERATIONS = ("upload", "list", "retrieve", "content", "delete")
Operation = Literal["upload", "list", "retrieve", "content", "delete"]
Handler = Callable[[Request, FormData], Awaitable[Response]]

_CHUNK = MiB
_HANG_POLL_S = 0.05
# A private table so guesses do not depend on the host's /etc/mime.types.
_MIME = mimetypes.MimeTypes()


@dataclass(frozen=True)
class ZaiPurposeRule:
    """Upload rules for one Z.ai purpose (extensions None means any format)."""

    extensions: frozenset[str] | None
    max_bytes: int
    image_max_bytes: int | None = None
    max_files: int | None = None
    needs_knowledge_id: bool = False


_OFFICE = frozenset(
    {"pdf", "docx", "doc", "xls", "xlsx", "ppt", "pptx", "png", "jpg", "jpeg", "csv"}
)
ZAI_DEFAULT_RULES: Mapping[str, ZaiPurposeRule] = MappingProxyType(
    {
        "batch": ZaiPurposeRule(frozenset({"jsonl"}), 100 * MiB, max_files=1000),
        "file-extract": ZaiPurposeRule(_OFFICE, 50 * MiB, 5 * MiB, max_files=100),
        "code-interpreter": ZaiPurposeRule(
            frozenset({"pdf", "docx", "doc", "xls", "xlsx", "txt", "png", "jpg", "jpeg", "csv"}),
            20 * MiB,
            5 * MiB,
            max_files=100,
        ),
        # The international (z.ai) agent rules; the CN site documents 20 MB / 1,000 files.
        "agent": ZaiPurposeRule(
            frozenset({"pdf", "doc", "xlsx", "ppt", "txt", "jpg", "png"}), 100 * MiB, max_files=100
        ),
        "voice-clone-input": ZaiPurposeRule(frozenset({"mp3", "wav"}), 100 * MiB),
        "fine-tune": ZaiPurposeRule(frozenset({"jsonl"}), 100 * MiB),
        "retrieval": ZaiPurposeRule(
            frozenset({"doc", "docx", "pdf", "xlsx"}), 5 * MiB, needs_knowledge_id=True
        ),
    }
)


# The purposes Z.ai caps at 100 files (provider doc 2.3); `zai_max_files` lowers or raises them.
ZAI_COUNTED_PURPOSES = ("file-extract", "code-interpreter", "agent")


@dataclass(frozen=True)
class SandboxOptions:
    """Constructor options of `create_sandbox_app`; defaults are the documented limits."""

    moonshot_purposes: Sequence[str] = ("file-extract", "batch", "image", "video")
    moonshot_default_purpose: str | None = None
    moonshot_max_file_bytes: int = 100 * MiB
    moonshot_max_files: int = 1000
    moonshot_max_total_bytes: int = 10 * GiB
    moonshot_id_prefix: str = ""
    zai_max_file_bytes: int = 100 * MiB
    zai_purpose_rules: Mapping[str, ZaiPurposeRule] = field(
        default_factory=lambda: dict(ZAI_DEFAULT_RULES)
    )
    zai_not_found_status: int = 404
    zai_max_files: int | None = None  # None: each rule's own count (100 for the counted ones)
    seed: int | None = None

    def zai_rule(self, purpose: str) -> ZaiPurposeRule | None:
        """The upload rule for a Z.ai purpose, its file count as configured."""
        rule = self.zai_purpose_rules.get(purpose)
        if rule is None or self.zai_max_files is None or purpose not in ZAI_COUNTED_PURPOSES:
            return rule
        return replace(rule, max_files=self.zai_max_files)


@dataclass
class StoredFile:
    """One uploaded file held in memory."""

    id: str
    created_at: int
    filename: str
    purpose: str
    data: bytes


class FaultSpec(BaseModel):
    """Body of `POST /{provider}/_faults`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    status: int | None = Field(default=None, ge=400, le=599)
    rate: float = Field(default=1.0, ge=0.0, le=1.0)
    latency_ms: float = Field(default=0.0, ge=0.0, le=600_000.0)
    hang: bool = False
    reset: bool = False
    retry_after: int | None = Field(default=None, ge=0)
    count: int | None = Field(default=None, ge=1)
    quota_full: bool = False
    operations: list[Operation] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _modes(self) -> Self:
        """Reject conflicting modes; an omitted status means 503 unless another effect is set."""
        if sum((self.hang, self.reset, self.quota_full)) > 1:
            raise ValueError("hang, reset and quota_full are mutually exclusive")
        effects = self.latency_ms or self.hang or self.reset or self.quota_full
        if "status" not in self.model_fields_set and not effects:
            self.status = 503
        return self


class ConnectionDropped(Exception):
    """Raised when the server accepted a doomed response start (not uvicorn)."""


class DropConnection(Response):
    """Close the socket without sending a response."""

    def __init__(self) -> None:
        super().__init__(status_code=502)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Start a response that uvicorn refuses to write, so it closes the connection."""
        # uvicorn (httptools and h11) marks the response started, then rejects the
        # newline in the header value before writing a byte; on return it closes the
        # transport. The client sees "server disconnected without sending a response".
        start = {
            "type": "http.response.start",
            "status": 502,
            "headers": [(b"content-length", b"1"), (b"x-sandbox-drop", b"\n")],
        }
        try:
            await send(start)
        except Exception:
            return
        raise ConnectionDropped("sandbox fault: connection reset")


def bearer_token(request: Request) -> str | None:
    """The bearer key from Authorization, or None when absent or empty."""
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def dumps(payload: Any) -> bytes:
    """Compact UTF-8 JSON, as the providers send it."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def guess_mime(filename: str) -> str:
    """MIME type for an extracted file's `file_type`."""
    return _MIME.guess_type(filename)[0] or "application/octet-stream"


def extension(filename: str) -> str:
    """Lower-case extension without the dot."""
    _, dot, ext = filename.rpartition(".")
    return ext.lower() if dot else ""


def extract_text(data: bytes) -> str | None:
    """Fake text extraction: UTF-8 text is its own content; binary yields nothing."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    return text if text.strip() else None


def size_label(n: int) -> str:
    """'100MB' for whole MiB, otherwise a byte count (limits lowered in tests)."""
    return f"{n // MiB}MB" if n % MiB == 0 else f"{n}B"


async def read_upload(upload: UploadFile, limit: int) -> tuple[bytes, bool]:
    """Read an upload in chunks; (data, too_large), stopping once past `limit`."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
    return b"".join(chunks), False


class ActiveFault:
    """A configured fault plus how many more calls it may affect."""

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self.remaining = spec.count

    def describe(self) -> dict[str, Any]:
        """JSON view, with `count` showing the calls left."""
        return {**self.spec.model_dump(), "count": self.remaining}


class ProviderSandbox(ABC):
    """State and dispatch shared by both emulated providers."""

    name: str

    def __init__(self, options: SandboxOptions, rng: random.Random) -> None:
        self.options = options
        self.rng = rng
        self.fault_generation = 0
        self.hanging = 0  # calls a hang fault holds right now
        self.receiving = 0  # uploads whose body is arriving right now
        self.reset()

    def reset(self) -> None:
        """Forget files, counters and faults."""
        self.files: dict[str, StoredFile] = {}
        self.calls: dict[str, int] = dict.fromkeys(OPERATIONS, 0)
        self.set_fault(None)

    def set_fault(self, spec: FaultSpec | None) -> None:
        """Replace the fault; any hung call is released."""
        self.fault = ActiveFault(spec) if spec is not None else None
        self.fault_generation += 1

    def stats(self) -> dict[str, Any]:
        """The `_stats` body."""
        return {
            "provider": self.name,
            "calls": dict(self.calls),
            "files": len(self.files),
            "bytes": self.stored_bytes,
            "hanging": self.hanging,
            "receiving": self.receiving,
        }

    @property
    def stored_bytes(self) -> int:
        """Total bytes currently stored."""
        return sum(len(f.data) for f in self.files.values())

    def newest_first(self) -> list[StoredFile]:
        """Stored files, most recent upload first."""
        return list(reversed(self.files.values()))

    def endpoint(self, op: Operation, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Wrap an operation handler with counting, faults and auth."""

        async def run(request: Request) -> Response:
            return await self.dispatch(request, op, handler)

        return run

    def route(self, path: str, op: Operation, handler: Handler, method: str) -> Route:
        """A Starlette route for one operation."""
        return Route(path, self.endpoint(op, handler), methods=[method])

    async def dispatch(self, request: Request, op: Operation, handler: Handler) -> Response:
        """Count the call, read the body, then fault, auth and the operation itself."""
        self.calls[op] += 1
        form = FormData()
        parse_error: str | None = None
        try:
            # The body is read first, as a buffering front proxy would: answering
            # early would break the client's upload mid-stream.
            if op == "upload":
                self.receiving += 1
                try:
                    form = await request.form(max_files=4, max_fields=16)
                except (HTTPException, MultiPartException) as exc:
                    parse_error = str(getattr(exc, "detail", None) or exc)
                finally:
                    self.receiving -= 1
            else:
                await request.body()
            if (faulted := await self.apply_fault(request, op)) is not None:
                return faulted
            if (denied := self.check_auth(request)) is not None:
                return denied
            if parse_error is not None:
                return self.bad_request(parse_error)
            return await handler(request, form)
        except ClientDisconnect:
            return Response(status_code=400)
        finally:
            await form.close()

    async def apply_fault(self, request: Request, op: Operation) -> Response | None:
        """Apply the active fault to this call, if it fires."""
        fault = self.fault
        if fault is None:
            return None
        spec = fault.spec
        if spec.operations is not None and op not in spec.operations:
            return None
        if self.rng.random() >= spec.rate:
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self.set_fault(None)
        if spec.latency_ms:
            await asyncio.sleep(spec.latency_ms / 1000)
        if spec.hang:
            if not await self._hang(request):
                return self.fault_response(504, None)
            return None
        if spec.reset:
            return DropConnection()
        if spec.quota_full:
            return self.quota_response(op)
        if spec.status is not None:
            return self.fault_response(spec.status, spec.retry_after)
        return None

    async def _hang(self, request: Request) -> bool:
        """Wait until faults change (True) or the client disconnects (False)."""
        generation = self.fault_generation
        self.hanging += 1
        try:
            while self.fault_generation == generation:
                if await request.is_disconnected():
                    return False
                await asyncio.sleep(_HANG_POLL_S)
            return True
        finally:
            self.hanging -= 1

    def lookup(self, file_id: str) -> StoredFile | None:
        """A stored file by id."""
        return self.files.get(file_id)

    def store(self, file: StoredFile) -> None:
        """Keep a new file."""
        self.files[file.id] = file

    prefix: str  # the files endpoint, relative to the sandbox mount

    def routes(self) -> list[Route]:
        """Upload, list, retrieve (for Z.ai, in its Java SDK only), content and delete."""
        p = self.prefix
        return [
            self.route(p, "upload", self.upload, "POST"),
            self.route(p, "list", self.list_files, "GET"),
            self.route(p + "/{file_id}", "retrieve", self.retrieve, "GET"),
            self.route(p + "/{file_id}", "delete", self.delete, "DELETE"),
            self.route(p + "/{file_id}/content", "content", self.content, "GET"),
        ]

    @abstractmethod
    async def upload(self, request: Request, form: FormData) -> Response: ...

    @abstractmethod
    async def list_files(self, request: Request, form: FormData) -> Response: ...

    @abstractmethod
    async def delete(self, request: Request, form: FormData) -> Response: ...

    @abstractmethod
    async def content(self, request: Request, form: FormData) -> Response: ...

    @abstractmethod
    def respond(
        self, payload: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        """A JSON answer with the provider's content type and headers."""

    @abstractmethod
    def not_found(self, file_id: str) -> Response:
        """The provider's answer for an unknown file id."""

    @abstractmethod
    def file_object(self, f: StoredFile) -> dict[str, Any]:
        """A stored file as the provider's file object."""

    async def retrieve(self, request: Request, form: FormData) -> Response:
        """GET files/{id} (for Z.ai, present in the Java SDK only)."""
        file_id = request.path_params["file_id"]
        f = self.lookup(file_id)
        return self.respond(self.file_object(f)) if f else self.not_found(file_id)

    @abstractmethod
    def check_auth(self, request: Request) -> Response | None:
        """The provider's 401, or None when a bearer key is present."""

    @abstractmethod
    def bad_request(self, detail: str) -> Response:
        """A generic 400 for malformed requests."""

    @abstractmethod
    def fault_response(self, status: int, retry_after: int | None) -> Response:
        """An injected error with a realistic body for `status`."""

    @abstractmethod
    def quota_response(self, op: Operation) -> Response:
        """The provider's quota/billing error for `op`."""

    @abstractmethod
    def route_not_found(self, status: int) -> Response:
        """Answer for an unknown path or method under this provider."""
