"""Health of a stored file: its blob re-hashed, each live provider copy confirmed or repaired."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.core.db import utcnow
from app.core.errors import ProviderError, ProviderNotFound
from app.core.metrics import GatewayMetrics
from app.jobs import queue
from app.jobs.queue import JobKind
from app.models import File, ProviderCopy, ProviderCopyStatus
from app.providers.hub import ProviderHub
from app.repositories.files import FileRepository
from app.services import audit, lifecycle
from app.storage.blobs import BlobMissing, BlobStore


async def check_file(
    *,
    session: AsyncSession,
    blob_store: BlobStore,
    providers: ProviderHub,
    metrics: GatewayMetrics,
    max_attempts: int,
    ctx: CallContext,
    file: File,
) -> dict[str, Any]:
    """Re-hash the blob and confirm every live copy still exists; repair what is missing."""
    repo = FileRepository(session)
    report: dict[str, Any] = {"file_id": file.id, "blob": "ok", "copies": {}}
    blob = await repo.blob(file.sha256)
    try:
        digest = None if blob is None else await blob_store.rehash(blob.storage_key)
    except BlobMissing:
        digest = None
    if blob is None or digest is None:
        report["blob"] = "missing"
    else:
        if digest != file.sha256:
            report["blob"] = "corrupt"
            if blob.corrupt_at is None:
                blob.corrupt_at = utcnow()
                blob.corrupt_reason = f"re-hash gave {digest[:16]}…, expected {file.sha256[:16]}…"
        else:
            blob.verified_at = utcnow()
    if report["blob"] != "ok":
        metrics.health_checks.labels("blob_" + report["blob"]).inc()
        reason = f"blob {report['blob']}: content withheld until repaired"
        if file.status_details != reason:
            lifecycle.note(session, file, reason=reason, request_id=ctx.request_id)
            file.status_details = reason
    copies = (await repo.copies_for([file.id]))[file.id]
    for copy in copies:
        if copy.status != ProviderCopyStatus.ACTIVE or not copy.provider_file_id:
            continue
        try:
            await providers.adapter(copy.provider).retrieve(copy.provider_file_id)
        except ProviderNotFound:
            report["copies"][copy.provider] = "missing"
            metrics.health_checks.labels("copy_missing").inc()
            await mark_missing(
                session=session,
                max_attempts=max_attempts,
                ctx=ctx,
                file=file,
                copy=copy,
                reason="health check: the provider no longer has it",
            )
            continue
        except ProviderError as exc:
            report["copies"][copy.provider] = f"unknown ({exc.error_code})"
            continue
        copy.checked_at = utcnow()
        report["copies"][copy.provider] = "ok"
    if report["blob"] == "ok" and all(v == "ok" for v in report["copies"].values()):
        metrics.health_checks.labels("ok").inc()
    audit.record(
        session=session,
        ctx=ctx,
        action="file.check",
        resource=file.id,
        detail=json.dumps(report, sort_keys=True),
    )
    return report


async def mark_missing(
    *,
    session: AsyncSession,
    max_attempts: int,
    ctx: CallContext,
    file: File,
    copy: ProviderCopy,
    reason: str,
) -> None:
    """Record a copy the provider lost and queue its re-placement from the canonical blob."""
    lifecycle.transition(
        session, copy, ProviderCopyStatus.MISSING, reason=reason, request_id=ctx.request_id
    )
    copy.last_error = reason
    if file.deleted_at is None and (file.expires_at is None or file.expires_at > utcnow()):
        await queue.enqueue(
            session=session,
            kind=JobKind.PLACE,
            payload={"file_id": file.id, "provider": copy.provider},
            dedupe_key=f"place:{file.id}:{copy.provider}",
            max_attempts=max_attempts,
        )
