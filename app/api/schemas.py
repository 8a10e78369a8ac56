"""Request and response bodies of the public API (OpenAI Files API shape plus extras)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app.auth.scopes import DEFAULT_SCOPES, Scope
from app.core.provider_names import Provider
from app.models import LifecycleEvent
from app.providers.breakers import BreakerSnapshot
from app.services.admin import FileDetail, FileRecord
from app.services.files import FileView
from app.services.tenants import TenantUsage


def _unix_seconds(value: object) -> object:
    return int(value.timestamp()) if isinstance(value, datetime) else value


def _iso_time(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def _words(value: object) -> object:
    return value.split() if isinstance(value, str) else value


def _json_object(value: object) -> object:
    return json.loads(value or "{}") if value is None or isinstance(value, str) else value


# Wire types of models read from ORM rows: a column's value is converted on the way in.
UnixSeconds = Annotated[int, BeforeValidator(_unix_seconds)]
IsoTime = Annotated[str, BeforeValidator(_iso_time)]
SpaceSeparated = Annotated[list[str], BeforeValidator(_words)]
JsonText = Annotated[dict[str, object], BeforeValidator(_json_object)]


class ProviderCopyOut(BaseModel):
    provider: str = Field(examples=["moonshot"])
    provider_file_id: str | None = Field(examples=["cnhgqnucp7f5h7jfb3s0"])
    status: str = Field(
        examples=["active"],
        description="placing, active, missing, deleting, or evicted (removed from the provider "
        "to make room; placed again from the stored bytes when needed, with a new id)",
    )


class FileObject(BaseModel):
    id: str = Field(examples=["file-3Zk9qLmN2xYb7cVd1eFg4hJp"])
    object: Literal["file"] = "file"
    bytes: int = Field(examples=[505444])
    created_at: int = Field(examples=[1764075600], description="Unix seconds")
    filename: str = Field(examples=["report.pdf"])
    purpose: str = Field(examples=["file-extract"])
    status: str = Field(
        examples=["processed"],
        description="uploaded (placement in flight), processed, pending or error",
    )
    status_details: str | None = None
    expires_at: int | None = Field(default=None, examples=[None])
    sha256: str = Field(
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
    )
    pinned: bool = Field(
        default=False, description="Its provider copies are never evicted to make room"
    )
    providers: list[ProviderCopyOut]

    @classmethod
    def of(cls, view: FileView) -> FileObject:
        f = view.file
        return cls(
            id=f.id,
            bytes=f.bytes,
            created_at=int(f.created_at.timestamp()),
            filename=f.filename,
            purpose=f.purpose,
            status=f.status,
            status_details=f.status_details,
            expires_at=int(f.expires_at.timestamp()) if f.expires_at else None,
            sha256=f.sha256,
            pinned=bool(f.pinned),
            providers=[
                ProviderCopyOut(
                    provider=c.provider, provider_file_id=c.provider_file_id, status=c.status
                )
                for c in view.copies
                # Failed attempts and removed copies are history (see /events), not copies.
                if c.status not in ("deleted", "failed")
            ],
        )


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class Extracted(BaseModel):
    id: str = Field(description="The gateway file id")
    object: Literal["file.extract"] = "file.extract"
    provider: str = Field(examples=["moonshot"])
    content: str = Field(examples=["Quarterly report ..."])
    file_type: str | None = Field(default=None, examples=["application/pdf"])
    filename: str | None = Field(default=None, examples=["report.pdf"])
    title: str | None = ""
    type: str | None = "file"


class ReplicateRequest(BaseModel):
    provider: Provider | Literal["auto"] = Field(
        examples=["zai"],
        description="The provider to hold a copy; auto: any provider (ensure a live copy)",
    )
    model_config = {"extra": "forbid"}


class FileEvent(BaseModel):
    object: Literal["file.event"] = "file.event"
    provider: str | None = Field(examples=["moonshot"])
    from_status: str | None = Field(examples=["placing"])
    to_status: str = Field(examples=["active"])
    reason: str = Field(examples=["placed as cnhgqnucp7f5h7jfb3s0"])
    created_at: int

    @classmethod
    def of(cls, row: LifecycleEvent) -> FileEvent:
        return cls(
            provider=row.provider,
            from_status=row.from_status,
            to_status=row.to_status,
            reason=row.reason,
            created_at=int(row.created_at.timestamp()),
        )


class FileEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileEvent]


class JobOut(BaseModel):
    id: int
    kind: str
    state: str
    attempts: int
    max_attempts: int
    payload: JsonText
    last_error: str | None
    run_after: UnixSeconds
    created_at: UnixSeconds
    model_config = ConfigDict(from_attributes=True)


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobOut]
    has_more: bool
    next_cursor: int | None = Field(description="Pass as `cursor` for the next (older) page")


class JobSummary(BaseModel):
    object: Literal["jobs.summary"] = "jobs.summary"
    counts: dict[str, int]
    oldest_queued_age_seconds: float | None
    dead_letters: list[JobOut]


class AdminCopyOut(BaseModel):
    provider: str = Field(examples=["moonshot"])
    status: str = Field(
        examples=["active"], description="placing, active, failed, deleting, deleted or missing"
    )
    provider_file_id: str | None = Field(examples=["cnhgqnucp7f5h7jfb3s0"])
    last_error: str | None = Field(default=None, examples=[None])


class AdminFileOut(BaseModel):
    """A file of any tenant as operators see it, with every provider copy (history included)."""

    id: str = Field(examples=["file-3Zk9qLmN2xYb7cVd1eFg4hJp"])
    object: Literal["admin.file"] = "admin.file"
    tenant: str = Field(examples=["acme"], description="The tenant's name")
    tenant_id: str
    filename: str = Field(examples=["report.pdf"])
    bytes: int
    purpose: str = Field(examples=["file-extract"])
    status: str = Field(examples=["processed"])
    status_details: str | None
    sha256: str
    created_at: int = Field(description="Unix seconds")
    expires_at: int | None
    deleted_at: int | None
    copies: list[AdminCopyOut]

    @classmethod
    def fields_of(cls, record: FileRecord) -> dict[str, Any]:
        f = record.file
        return {
            "id": f.id,
            "tenant": record.tenant,
            "tenant_id": f.tenant_id,
            "filename": f.filename,
            "bytes": f.bytes,
            "purpose": f.purpose,
            "status": f.status,
            "status_details": f.status_details,
            "sha256": f.sha256,
            "created_at": int(f.created_at.timestamp()),
            "expires_at": int(f.expires_at.timestamp()) if f.expires_at else None,
            "deleted_at": int(f.deleted_at.timestamp()) if f.deleted_at else None,
            "copies": [
                AdminCopyOut(
                    provider=c.provider,
                    status=c.status,
                    provider_file_id=c.provider_file_id,
                    last_error=c.last_error,
                )
                for c in record.copies
            ],
        }

    @classmethod
    def of(cls, record: FileRecord) -> AdminFileOut:
        return cls.model_validate(cls.fields_of(record))


class AdminFileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AdminFileOut]
    has_more: bool
    next_cursor: str | None = Field(
        description="A file id: pass it as `cursor` for the next (older) page"
    )


class AdminFileDetail(AdminFileOut):
    events: list[FileEvent] = Field(description="The file's lifecycle, oldest first")

    @classmethod
    def of_detail(cls, detail: FileDetail) -> AdminFileDetail:
        return cls.model_validate(
            {**cls.fields_of(detail), "events": [FileEvent.of(e) for e in detail.events]}
        )


class Usage(BaseModel):
    """What the calling key's tenant stores, its quotas, and the key's rate limit."""

    object: Literal["usage"] = "usage"
    tenant: str = Field(examples=["acme"])
    tenant_id: str
    files: int = Field(description="Live files the tenant stores")
    bytes: int = Field(description="Their total size, each file counted at its full size")
    max_files: int | None = Field(description="The tenant's file quota (null: none)")
    max_bytes: int | None = Field(description="The tenant's byte quota (null: none)")
    rate_limit_per_minute: int | None = Field(
        description="Requests a minute this credential may make (null: unlimited)"
    )


class CheckReport(BaseModel):
    file_id: str
    blob: str = Field(examples=["ok"], description="ok, corrupt or missing")
    copies: dict[str, str] = Field(examples=[{"moonshot": "ok"}])


class QuotaUpdate(BaseModel):
    max_bytes: int | None = Field(default=None, ge=0, examples=[10 * 1024**3])
    max_files: int | None = Field(default=None, ge=0, examples=[1000])
    model_config = {"extra": "forbid"}


class TenantOut(BaseModel):
    id: str
    object: Literal["tenant"] = "tenant"
    name: str
    max_bytes: int | None
    max_files: int | None
    used_bytes: int
    used_files: int

    @classmethod
    def of(cls, usage: TenantUsage) -> TenantOut:
        return cls(
            id=usage.tenant.id,
            name=usage.tenant.name,
            max_bytes=usage.tenant.max_bytes,
            max_files=usage.tenant.max_files,
            used_bytes=usage.bytes,
            used_files=usage.files,
        )


class TenantList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TenantOut]


class AuditOut(BaseModel):
    id: int
    object: Literal["audit.event"] = "audit.event"
    created_at: IsoTime = Field(examples=["2026-11-25T12:00:00+00:00"])
    request_id: str | None
    actor: str = Field(examples=["key:ab12cd34ef56"])
    tenant_id: str | None
    action: str = Field(examples=["file.create"])
    resource: str | None
    outcome: str = Field(examples=["success"])
    status_code: int | None
    client_addr: str | None
    detail: str | None
    model_config = ConfigDict(from_attributes=True)


class AuditList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditOut]
    has_more: bool
    next_cursor: int | None = Field(description="Pass as `cursor` for the next (older) page")


class BreakerTransition(BaseModel):
    at: float = Field(description="Unix seconds")
    from_state: str = Field(examples=["closed"])
    to_state: str = Field(examples=["open"])


class BreakerOut(BaseModel):
    state: str = Field(examples=["closed"], description="closed, open or half-open")
    failure_count: int
    last_error: str | None
    storage: str = Field(examples=["redis"], description="redis, memory or none")
    degraded: bool
    retry_after: float | None = None
    recent_transitions: list[BreakerTransition] = Field(
        default_factory=list,
        description="The latest transitions the answering process made or saw, newest first",
    )

    @classmethod
    def of(cls, snapshot: BreakerSnapshot) -> BreakerOut:
        return cls(
            state=snapshot.state,
            failure_count=snapshot.failures,
            last_error=snapshot.last_error,
            storage=snapshot.storage,
            degraded=snapshot.degraded,
            retry_after=snapshot.retry_after,
            recent_transitions=[
                BreakerTransition(at=at, from_state=old, to_state=new)
                for at, old, new in snapshot.transitions
            ],
        )


class AccountUsageOut(BaseModel):
    purpose_class: str = Field(
        examples=["all"], description="'all' (a cap on the whole account) or a native purpose"
    )
    files: int = Field(description="Files held there: the registry's copies plus foreign_files")
    bytes: int
    max_files: int | None = Field(examples=[1000])
    max_bytes: int | None = Field(examples=[10737418240])
    foreign_files: int = Field(
        description="Files the last reconciliation listed that no copy of this registry names"
    )


class ProviderOut(BaseModel):
    provider: str
    mode: str = Field(examples=["live"], description="live or sandbox")
    breaker: BreakerOut
    files: int = Field(description="Active copies the gateway holds there")
    bytes: int
    quota_files: int | None = Field(description="The account's file cap (as configured)")
    quota_bytes: int | None = Field(description="The account's byte cap (as configured)")
    usage: list[AccountUsageOut] = Field(description="Usage against each cap of the account")

    @classmethod
    def of(cls, row: dict[str, Any]) -> ProviderOut:
        return cls(**{**row, "breaker": BreakerOut.of(row["breaker"])})


class ProviderList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ProviderOut]


class BreakerAction(BaseModel):
    action: Literal["open", "close", "reset"]
    model_config = {"extra": "forbid"}


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None
    param: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


class KeyCreate(BaseModel):
    tenant: str = Field(min_length=1, max_length=100, examples=["acme"])
    name: str = Field(min_length=1, max_length=100, examples=["ingest-service"])
    scopes: list[Scope] = Field(default_factory=lambda: list(DEFAULT_SCOPES))
    expires_at: datetime | None = Field(
        default=None, description="RFC 3339 time after which the key stops working"
    )
    rate_limit_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    model_config = {"extra": "forbid"}


class KeyRotate(BaseModel):
    overlap_seconds: int = Field(
        default=3600,
        ge=0,
        le=30 * 24 * 3600,
        description="How long the old key keeps working beside the new one",
    )
    model_config = {"extra": "forbid"}


class KeyOut(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    tenant_id: str
    name: str
    scopes: SpaceSeparated
    created_at: UnixSeconds
    expires_at: UnixSeconds | None
    revoked_at: UnixSeconds | None
    last_used_at: UnixSeconds | None
    rate_limit_per_minute: int | None
    rotated_from: str | None
    model_config = ConfigDict(from_attributes=True)


class KeyCreated(KeyOut):
    key: str | None = Field(
        description="The secret token, shown only in this response (null when an "
        "Idempotency-Key replays it: secrets are never stored)"
    )


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyOut]


class ProbeStatus(BaseModel):
    status: Literal["ok", "degraded", "down"]
    detail: str | None = None
    mode: str | None = None


class Readiness(BaseModel):
    status: Literal["ok", "degraded", "down"]
    checks: dict[str, ProbeStatus]


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class UploadExpiresAfter(BaseModel):
    """When the completed file expires, as OpenAI's `expires_after` says it."""

    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=30 * 24 * 3600)
    model_config = {"extra": "forbid"}


class CreateUploadRequest(BaseModel):
    filename: str = Field(min_length=1, max_length=255, examples=["report.pdf"])
    purpose: str = Field(min_length=1, max_length=40, examples=["file-extract"])
    bytes: int = Field(gt=0, examples=[209715200], description="The whole file's size")
    mime_type: str = Field(min_length=1, max_length=255, examples=["application/pdf"])
    expires_after: UploadExpiresAfter | None = None
    model_config = {"extra": "forbid"}


class CompleteUploadRequest(BaseModel):
    part_ids: list[Annotated[str, Field(max_length=64)]] = Field(
        min_length=1, max_length=2_000, examples=[["part_3Zk9qLmN2xYb7cVd1eFg4hJp"]]
    )
    md5: str | None = Field(
        default=None,
        pattern="^[0-9a-fA-F]{32}$",
        description="Hex md5 of the whole file, checked when given",
    )
    model_config = {"extra": "forbid"}


class UploadObject(BaseModel):
    """OpenAI's Upload object; `file` is the file it became, once completed."""

    id: str = Field(examples=["upload_3Zk9qLmN2xYb7cVd1eFg4hJp"])
    object: Literal["upload"] = "upload"
    bytes: int
    created_at: UnixSeconds
    expires_at: UnixSeconds
    filename: str
    purpose: str
    status: Literal["pending", "completed", "cancelled", "expired"]
    file: FileObject | None = None
    model_config = ConfigDict(from_attributes=True)


class UploadPartObject(BaseModel):
    id: str = Field(examples=["part_3Zk9qLmN2xYb7cVd1eFg4hJp"])
    object: Literal["upload.part"] = "upload.part"
    created_at: UnixSeconds
    upload_id: str
    model_config = ConfigDict(from_attributes=True)
