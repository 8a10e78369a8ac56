"""SQL for files, blobs, provider copies and lifecycle events."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, bindparam, delete, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import Executable

from app.core.db import utcnow
from app.models import (
    Blob,
    File,
    FileStatus,
    LifecycleEvent,
    ProviderCopy,
    ProviderCopyStatus,
    Tenant,
)


class FileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_live_with_copies(
        self, *, tenant_id: str, file_id: str
    ) -> tuple[File, list[ProviderCopy]] | None:
        """A tenant's live file and its copies in one round trip."""
        stmt = (
            select(File, ProviderCopy)
            .outerjoin(ProviderCopy, ProviderCopy.file_id == File.id)
            .where(
                File.id == file_id,
                File.tenant_id == tenant_id,
                File.deleted_at.is_(None),
                or_(File.expires_at.is_(None), File.expires_at > utcnow()),
            )
            .order_by(ProviderCopy.id)
            .execution_options(populate_existing=True)
        )
        rows = (await self.session.execute(stmt)).all()
        if not rows:
            return None
        return rows[0][0], [copy for _, copy in rows if copy is not None]

    async def read_live_with_copies(
        self, *, tenant_id: str, file_id: str
    ) -> tuple[File, list[ProviderCopy]] | None:
        """Like get_live_with_copies, for reading only: detached rows, no ORM loading cost."""
        params = {"file_id": file_id, "tenant_id": tenant_id, "now": utcnow()}
        rows = (await self.session.execute(_READ_VIEW, params)).all()
        if not rows:
            return None
        width = len(_FILE_COLUMNS)
        file = File(**dict(zip(_FILE_COLUMNS, rows[0][:width], strict=True)))
        copies = [
            ProviderCopy(**dict(zip(_COPY_COLUMNS, row[width:], strict=True)))
            for row in rows
            if row[width] is not None
        ]
        return file, copies

    async def refresh(self, file_id: str, *, lock: bool = False) -> File | None:
        """The file row as committed now; with `lock`, held until commit on PostgreSQL."""
        stmt = select(File).where(File.id == file_id).execution_options(populate_existing=True)
        if (
            lock
            and self.session.bind is not None
            and self.session.bind.dialect.name == "postgresql"
        ):
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def lock_live(self, file_id: str) -> File | None:
        """The file, locked until the unit of work ends, if it is still live (a delete that
        started first has committed by the time this returns; one that starts later waits)."""
        if self.session.bind is not None and self.session.bind.dialect.name == "postgresql":
            stmt = select(File).where(File.id == file_id).with_for_update()
        else:
            # SQLite: take the database write lock first, as a delete's write would.
            await self.session.execute(
                update(File).where(File.id == file_id).values(status=File.status)
            )
            stmt = select(File).where(File.id == file_id)
        file = (
            await self.session.execute(stmt.execution_options(populate_existing=True))
        ).scalar_one_or_none()
        return file if file is not None and file.deleted_at is None else None

    async def find_duplicate(
        self, *, tenant_id: str, sha256: str, purposes: Sequence[str]
    ) -> File | None:
        """The tenant's live file of these bytes under any of `purposes` (the spellings of one
        purpose), the oldest if rows from before aliases were merged hold several."""
        stmt = (
            select(File)
            .where(
                File.tenant_id == tenant_id,
                File.sha256 == sha256,
                File.purpose.in_(purposes),
                File.deleted_at.is_(None),
            )
            .order_by(File.created_at.asc(), File.id.asc())
            .limit(1)
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalars().first()

    async def list_page(
        self,
        *,
        tenant_id: str,
        limit: int,
        ascending: bool,
        purposes: Sequence[str] | None,
        after: tuple[datetime, str] | None,
    ) -> Sequence[File]:
        stmt = select(File).where(
            File.tenant_id == tenant_id,
            File.deleted_at.is_(None),
            or_(File.expires_at.is_(None), File.expires_at > utcnow()),
        )
        if purposes is not None:
            stmt = stmt.where(File.purpose.in_(purposes))
        if after is not None:
            created, fid = after
            if ascending:
                stmt = stmt.where(
                    or_(File.created_at > created, and_(File.created_at == created, File.id > fid))
                )
            else:
                stmt = stmt.where(
                    or_(File.created_at < created, and_(File.created_at == created, File.id < fid))
                )
        order = (
            (File.created_at.asc(), File.id.asc())
            if ascending
            else (File.created_at.desc(), File.id.desc())
        )
        stmt = stmt.order_by(*order).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()

    async def cursor_of(self, *, tenant_id: str, file_id: str) -> tuple[datetime, str] | None:
        stmt = select(File.created_at, File.id).where(
            File.id == file_id, File.tenant_id == tenant_id
        )
        row = (await self.session.execute(stmt)).one_or_none()
        return (row[0], row[1]) if row else None

    async def position_of(self, file_id: str) -> tuple[datetime, str] | None:
        """Where a file of any tenant sits in the newest-first order (an operator's cursor)."""
        stmt = select(File.created_at, File.id).where(File.id == file_id)
        row = (await self.session.execute(stmt)).one_or_none()
        return (row[0], row[1]) if row else None

    async def find_page(
        self,
        *,
        tenant_id: str | None,
        file_id: str | None,
        sha256: str | None,
        filename: str | None,
        status: str | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> Sequence[tuple[File, str]]:
        """Files of every tenant with their tenant's name, newest first; deleted files only
        when `status` asks for them; `filename` matches a case-insensitive substring."""
        stmt = select(File, Tenant.name).join(Tenant, Tenant.id == File.tenant_id)
        if status is None:
            stmt = stmt.where(File.deleted_at.is_(None))
        else:
            stmt = stmt.where(File.status == status)
        if tenant_id is not None:
            stmt = stmt.where(File.tenant_id == tenant_id)
        if file_id is not None:
            stmt = stmt.where(File.id == file_id)
        if sha256 is not None:
            stmt = stmt.where(File.sha256 == sha256)
        if filename is not None:
            stmt = stmt.where(File.filename.icontains(filename, autoescape=True))
        if before is not None:
            created, fid = before
            stmt = stmt.where(
                or_(File.created_at < created, and_(File.created_at == created, File.id < fid))
            )
        stmt = stmt.order_by(File.created_at.desc(), File.id.desc()).limit(limit)
        return [(f, name) for f, name in (await self.session.execute(stmt)).all()]

    async def with_tenant(self, file_id: str) -> tuple[File, str] | None:
        """A file of any tenant, deleted or not, with its tenant's name."""
        stmt = (
            select(File, Tenant.name)
            .join(Tenant, Tenant.id == File.tenant_id)
            .where(File.id == file_id)
            .execution_options(populate_existing=True)
        )
        row = (await self.session.execute(stmt)).one_or_none()
        return (row[0], row[1]) if row else None

    async def copies_for(self, file_ids: Sequence[str]) -> dict[str, list[ProviderCopy]]:
        result: dict[str, list[ProviderCopy]] = {fid: [] for fid in file_ids}
        if not file_ids:
            return result
        stmt = (
            select(ProviderCopy)
            .where(ProviderCopy.file_id.in_(file_ids))
            .order_by(ProviderCopy.id)
            .execution_options(populate_existing=True)
        )
        for copy in (await self.session.execute(stmt)).scalars():
            result[copy.file_id].append(copy)
        return result

    async def copy_for(self, *, file_id: str, provider: str) -> ProviderCopy | None:
        stmt = (
            select(ProviderCopy)
            .where(ProviderCopy.file_id == file_id, ProviderCopy.provider == provider)
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def copies_on(self, provider: str) -> Sequence[ProviderCopy]:
        stmt = (
            select(ProviderCopy)
            .where(
                ProviderCopy.provider == provider,
                ProviderCopy.status.not_in(("deleted",)),
            )
            .order_by(ProviderCopy.id)
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def copy_holding(self, provider_file_id: str, *, provider: str) -> bool:
        """Whether a copy not deleted refers to this provider file."""
        stmt = select(
            exists().where(
                ProviderCopy.provider == provider,
                ProviderCopy.provider_file_id == provider_file_id,
                ProviderCopy.status != ProviderCopyStatus.DELETED,
            )
        )
        return bool((await self.session.execute(stmt)).scalar())

    async def copies_of_on(self, file_ids: Iterable[str], *, provider: str) -> list[ProviderCopy]:
        """The copies (any status) of `file_ids` on `provider`."""
        found: list[ProviderCopy] = []
        for chunk in _chunks(file_ids):
            stmt = (
                select(ProviderCopy)
                .where(ProviderCopy.provider == provider, ProviderCopy.file_id.in_(chunk))
                .execution_options(populate_existing=True)
            )
            found.extend((await self.session.execute(stmt)).scalars())
        return found

    async def files_by_id(self, file_ids: Iterable[str]) -> list[File]:
        """The files (deleted ones too) among `file_ids`."""
        found: list[File] = []
        for chunk in _chunks(file_ids):
            stmt = select(File).where(File.id.in_(chunk)).execution_options(populate_existing=True)
            found.extend((await self.session.execute(stmt)).scalars())
        return found

    async def with_active_copy_on(self, providers: Sequence[str]) -> list[str]:
        """Ids of live files with an active copy on any of `providers`."""
        stmt = (
            select(File.id)
            .join(ProviderCopy, ProviderCopy.file_id == File.id)
            .where(
                File.deleted_at.is_(None),
                ProviderCopy.provider.in_(list(providers)),
                ProviderCopy.status == ProviderCopyStatus.ACTIVE,
            )
            .distinct()
            .order_by(File.id)
        )
        return list((await self.session.execute(stmt)).scalars().all())

    async def due_for_check(self, *, before: datetime, limit: int) -> list[str]:
        """Live files whose blob was never verified, or not since `before`."""
        stmt = (
            select(File.id)
            .join(Blob, Blob.sha256 == File.sha256)
            .where(
                File.deleted_at.is_(None),
                or_(Blob.verified_at.is_(None), Blob.verified_at < before),
            )
            .order_by(Blob.verified_at.is_(None).desc(), Blob.verified_at, File.id)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars().all())

    async def expired(self, *, now: datetime, limit: int) -> Sequence[File]:
        stmt = (
            select(File)
            .where(File.deleted_at.is_(None), File.expires_at.is_not(None), File.expires_at <= now)
            .order_by(File.expires_at)
            .limit(limit)
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def oldest_pending(self) -> datetime | None:
        """When the oldest file still waiting for a provider was accepted."""
        stmt = select(func.min(File.created_at)).where(File.status == FileStatus.PENDING)
        value = await self.session.scalar(stmt)
        return value if isinstance(value, datetime) else None

    async def placed_on(self, provider: str) -> tuple[int, int]:
        """(copies, bytes) live on a provider, counting every tenant's copy."""
        stmt = (
            select(func.count(), func.coalesce(func.sum(File.bytes), 0))
            .select_from(ProviderCopy)
            .join(File, File.id == ProviderCopy.file_id)
            .where(ProviderCopy.provider == provider, ProviderCopy.status == "active")
        )
        count, total = (await self.session.execute(stmt)).one()
        return int(count), int(total)

    async def lock_blob(self, *, sha256: str, size: int, storage_key: str) -> None:
        """Insert the blob row or lock the existing one, so a concurrent collect waits."""
        dialect = self.session.bind.dialect.name if self.session.bind else "sqlite"
        values = {
            "sha256": sha256,
            "size": size,
            "storage_key": storage_key,
            "created_at": utcnow(),
        }
        stmt: Executable
        if dialect == "postgresql":
            pg = postgresql.insert(Blob).values(**values)
            stmt = pg.on_conflict_do_update(
                index_elements=[Blob.sha256], set_={"size": pg.excluded.size}
            )
        else:
            lite = sqlite.insert(Blob).values(**values)
            stmt = lite.on_conflict_do_update(
                index_elements=[Blob.sha256], set_={"size": lite.excluded.size}
            )
        await self.session.execute(stmt)

    async def blob(self, sha256: str) -> Blob | None:
        return await self.session.get(Blob, sha256)

    async def lock_blob_if_unreferenced(self, sha256: str) -> Blob | None:
        """Lock a blob row for collection when no live file points at it."""
        stmt = select(Blob).where(Blob.sha256 == sha256)
        if self.session.bind is not None and self.session.bind.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        else:
            # SQLite: take the database write lock before checking references.
            await self.session.execute(
                update(Blob).where(Blob.sha256 == sha256).values(size=Blob.size)
            )
        blob = (await self.session.execute(stmt)).scalar_one_or_none()
        if blob is None:
            return None
        live = await self.session.scalar(
            select(exists().where(File.sha256 == sha256, File.deleted_at.is_(None)))
        )
        return None if live else blob

    async def blobs_with_rows(self, sha256s: list[str]) -> set[str]:
        """Which of these sha256s still have a blob row (the sweeper keeps those files)."""
        if not sha256s:
            return set()
        stmt = select(Blob.sha256).where(Blob.sha256.in_(sha256s))
        return set((await self.session.execute(stmt)).scalars())

    async def delete_blob_row(self, sha256: str) -> None:
        await self.session.execute(delete(Blob).where(Blob.sha256 == sha256))

    async def usage(self, *, tenant_id: str) -> tuple[int, int]:
        """(live file count, live bytes) of a tenant, counting each file at its full size."""
        stmt = select(func.count(), func.coalesce(func.sum(File.bytes), 0)).where(
            File.tenant_id == tenant_id, File.deleted_at.is_(None)
        )
        count, total = (await self.session.execute(stmt)).one()
        return int(count), int(total)

    async def lock_tenant(self, tenant_id: str) -> Tenant | None:
        """The tenant row, locked on PostgreSQL so quota checks of one tenant serialise."""
        stmt = select(Tenant).where(Tenant.id == tenant_id)
        if self.session.bind is not None and self.session.bind.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        return (
            await self.session.execute(stmt.execution_options(populate_existing=True))
        ).scalar_one_or_none()

    async def events_for(self, file_id: str) -> Sequence[LifecycleEvent]:
        stmt = (
            select(LifecycleEvent)
            .where(LifecycleEvent.file_id == file_id)
            .order_by(LifecycleEvent.id)
        )
        return (await self.session.execute(stmt)).scalars().all()


def _chunks(values: Iterable[str], size: int = 500) -> Iterator[list[str]]:
    """Keep IN lists well below every backend's bound-parameter limit."""
    ordered = sorted(set(values))
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def _read_view_statement() -> Select[Any]:
    files, copies = File.__table__, ProviderCopy.__table__
    return (
        select(*files.c, *copies.c)
        .outerjoin(copies, copies.c.file_id == files.c.id)
        .where(
            files.c.id == bindparam("file_id"),
            files.c.tenant_id == bindparam("tenant_id"),
            files.c.deleted_at.is_(None),
            or_(files.c.expires_at.is_(None), files.c.expires_at > bindparam("now")),
        )
        .order_by(copies.c.id)
    )


# Built once: the hot read path should not rebuild and re-key its statement per request.
_FILE_COLUMNS = tuple(c.name for c in File.__table__.c)
_COPY_COLUMNS = tuple(c.name for c in ProviderCopy.__table__.c)
_READ_VIEW = _read_view_statement()
