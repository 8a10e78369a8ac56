"""SQL for resumable uploads and their parts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Upload, UploadPart, UploadStatus


class UploadRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, row: Upload | UploadPart) -> None:
        self.session.add(row)

    async def get(self, *, tenant_id: str, upload_id: str, lock: bool = False) -> Upload | None:
        """The tenant's upload; with `lock`, held until the unit of work ends (on SQLite the
        database write lock is taken first, as a concurrent writer's would be)."""
        if lock:
            if self._postgresql():
                stmt = (
                    select(Upload)
                    .where(Upload.id == upload_id, Upload.tenant_id == tenant_id)
                    .with_for_update()
                )
                return await self._one(stmt)
            await self.session.execute(
                update(Upload).where(Upload.id == upload_id).values(status=Upload.status)
            )
        stmt = select(Upload).where(Upload.id == upload_id, Upload.tenant_id == tenant_id)
        return await self._one(stmt)

    async def _one(self, stmt: object) -> Upload | None:
        result = await self.session.execute(
            stmt.execution_options(populate_existing=True)  # type: ignore[attr-defined]
        )
        row: Upload | None = result.scalar_one_or_none()
        return row

    def _postgresql(self) -> bool:
        return self.session.bind is not None and self.session.bind.dialect.name == "postgresql"

    async def part_usage(self, upload_id: str) -> tuple[int, int]:
        """How many parts the upload holds and their bytes in total."""
        stmt = select(func.count(UploadPart.id), func.coalesce(func.sum(UploadPart.bytes), 0))
        count, total = (
            await self.session.execute(stmt.where(UploadPart.upload_id == upload_id))
        ).one()
        return int(count), int(total)

    async def parts(self, *, tenant_id: str, part_ids: Sequence[str]) -> dict[str, UploadPart]:
        """The tenant's parts with these ids, whichever of its uploads holds them."""
        if not part_ids:
            return {}
        stmt = (
            select(UploadPart)
            .join(Upload, Upload.id == UploadPart.upload_id)
            .where(UploadPart.id.in_(set(part_ids)), Upload.tenant_id == tenant_id)
        )
        return {part.id: part for part in (await self.session.execute(stmt)).scalars()}

    async def expired_pending(self, *, now: datetime, limit: int) -> list[Upload]:
        stmt = (
            select(Upload)
            .where(Upload.status == UploadStatus.PENDING, Upload.expires_at <= now)
            .order_by(Upload.expires_at)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def uncollected(self, *, limit: int) -> list[Upload]:
        """Finished uploads (completed, cancelled, expired) whose parts are still stored."""
        stmt = (
            select(Upload)
            .where(Upload.status != UploadStatus.PENDING, Upload.parts_collected_at.is_(None))
            .order_by(Upload.created_at)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def forget_parts(self, *, upload_id: str, collected_at: datetime) -> None:
        """The upload's parts are gone from the blob store: drop their rows, say when."""
        await self.session.execute(delete(UploadPart).where(UploadPart.upload_id == upload_id))
        await self.session.execute(
            update(Upload).where(Upload.id == upload_id).values(parts_collected_at=collected_at)
        )
