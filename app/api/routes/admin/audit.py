"""The audit trail: filtered pages, or the whole trail as JSON Lines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.deps import RuntimeDep, SessionDep
from app.api.errors import responses
from app.api.routes.admin.common import ADMIN_ERRORS, MAX_ID, PREFIX
from app.api.schemas import AuditList, AuditOut
from app.core.errors import InvalidRequest
from app.runtime import Runtime
from app.services import audit

router = APIRouter(prefix=PREFIX)
JSONL_PAGE = 500


@router.get(
    "/audit",
    response_model=AuditList,
    summary="The audit trail, newest first, filtered; JSON Lines with format=jsonl",
    description="Cursor pagination: pass `next_cursor` back as `cursor`. With `format=jsonl` the "
    "whole filtered trail streams as JSON Lines (one event per line).",
    responses={
        200: {"content": {"application/x-ndjson": {}}},
        **responses(*ADMIN_ERRORS),
    },
)
async def audit_trail(
    session: SessionDep,
    rt: RuntimeDep,
    tenant_id: Annotated[str | None, Query(max_length=40)] = None,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Annotated[Literal["success", "denied", "failed"] | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="RFC 3339, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="RFC 3339, exclusive")] = None,
    cursor: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Annotated[Literal["json", "jsonl"], Query()] = "json",
) -> Response:
    filters = {
        "tenant_id": tenant_id,
        "actor": actor,
        "action": action,
        "outcome": outcome,
        "since": _aware(since, "since"),
        "until": _aware(until, "until"),
    }
    if format == "jsonl":
        return StreamingResponse(_jsonl(rt, filters, cursor), media_type="application/x-ndjson")
    rows = await audit.page(session=session, before_id=cursor, limit=limit + 1, **filters)
    page = list(rows[:limit])
    return JSONResponse(
        AuditList(
            data=[AuditOut.model_validate(r) for r in page],
            has_more=len(rows) > limit,
            next_cursor=page[-1].id if len(rows) > limit else None,
        ).model_dump(mode="json")
    )


def _aware(value: datetime | None, name: str) -> datetime | None:
    """An aware time in UTC; naive times and times that leave the calendar in UTC are a 400."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidRequest(f"'{name}' needs a time zone (e.g. 'Z').", param=name)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(
            f"'{name}' lies outside the years 1 to 9999 once converted to UTC.", param=name
        ) from None


async def _jsonl(rt: Runtime, filters: dict[str, Any], cursor: int | None) -> AsyncIterator[bytes]:
    """Stream the filtered trail in pages, each read in its own short transaction."""
    before = cursor
    while True:
        async with rt.sessionmaker() as session:
            rows = await audit.page(session=session, before_id=before, limit=JSONL_PAGE, **filters)
        for row in rows:
            yield (AuditOut.model_validate(row).model_dump_json() + "\n").encode()
        if len(rows) < JSONL_PAGE:
            return
        before = rows[-1].id
