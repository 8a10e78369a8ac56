"""The registry's tables (SQLAlchemy 2 typed models)."""

from app.models.entities import (
    ApiKey,
    AuditEvent,
    Blob,
    Deployment,
    File,
    FileStatus,
    IdempotencyKey,
    Job,
    JobState,
    LifecycleEvent,
    ProviderCopy,
    ProviderCopyStatus,
    SandboxInstance,
    Tenant,
)

__all__ = [
    "ApiKey",
    "AuditEvent",
    "Blob",
    "Deployment",
    "File",
    "FileStatus",
    "IdempotencyKey",
    "Job",
    "JobState",
    "LifecycleEvent",
    "ProviderCopy",
    "ProviderCopyStatus",
    "SandboxInstance",
    "Tenant",
]
