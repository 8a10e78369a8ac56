"""Reconciliation's decisions: a provider's listing against the registry, as a pure function."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ProviderCopyStatus
from app.providers.base import ProviderFile
from app.repositories.files import FileRepository
from app.services.placement import file_id_from_provider_name, parse_provider_name

# A copy the registry still wants but has no provider file for: a landed upload is adopted.
ADOPTABLE = frozenset(
    {ProviderCopyStatus.PLACING, ProviderCopyStatus.FAILED, ProviderCopyStatus.MISSING}
)
# A provider file named for a copy in these states is never removed by reconciliation: an
# upload may still land (placing). A second file named for an ACTIVE copy is a duplicate
# (a placement retried after its first upload landed unseen): an orphan once past the grace.
PROTECTED = frozenset({ProviderCopyStatus.PLACING})


class Action(StrEnum):
    KEEP = "keep"  # the registry's copy, or one named for a copy it is still placing
    ADOPT = "adopt"  # a landed upload of a copy the registry never saw settle
    REPLACE = "replace"  # an active copy the provider no longer lists, of a live file
    MARK_LOST = "mark_lost"  # the same, of a file that is deleted or expired
    DELETE_ORPHAN = "delete_orphan"  # ours, nothing in the registry points at it, past the grace
    WAIT = "wait"  # an orphan still within the grace period
    HOLD = "hold"  # an orphan past the grace, over this run's deletion cap
    LEAVE_FOREIGN = "leave_foreign"  # another deployment's or nobody's: never touched


@dataclass(frozen=True)
class RegistryFile:
    id: str
    deleted: bool
    expires_at: datetime | None

    def live(self, now: datetime) -> bool:
        return not self.deleted and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True)
class RegistryCopy:
    id: int
    file_id: str
    status: str
    provider_file_id: str | None


@dataclass(frozen=True)
class Decision:
    action: Action
    provider_file_id: str
    file_id: str | None = None
    copy_id: int | None = None


@dataclass(frozen=True)
class Plan:
    decisions: tuple[Decision, ...]

    def of(self, action: Action) -> list[Decision]:
        return [d for d in self.decisions if d.action == action]

    def count(self, action: Action) -> int:
        return sum(1 for d in self.decisions if d.action == action)


@dataclass(frozen=True)
class RegistryView:
    """The rows reconciliation reads: files (registered ids) and copies on one provider."""

    files: Mapping[str, RegistryFile]
    copies: Sequence[RegistryCopy]


def classify(
    *,
    listing: Sequence[ProviderFile],
    registry: RegistryView,
    tag: str,
    now: datetime,
    grace: timedelta,
    max_deletions: int,
) -> Plan:
    """Decide what to do about every listed file and every active copy the listing lacks."""
    lost = _unlisted_copies(listing=listing, registry=registry, now=now)
    judged, orphans = _judge_listing(
        listing=listing, registry=registry, tag=tag, now=now, grace=grace
    )
    # Oldest first: the longer a file has been an orphan, the surer it is one.
    orphans.sort(key=lambda o: (o[0].created_at, o[0].id))
    capped = [
        Decision(Action.DELETE_ORPHAN if index < max_deletions else Action.HOLD, pfile.id, file_id)
        for index, (pfile, file_id) in enumerate(orphans)
    ]
    return Plan((*lost, *judged, *capped))


def _unlisted_copies(
    *, listing: Sequence[ProviderFile], registry: RegistryView, now: datetime
) -> list[Decision]:
    """Active copies the provider no longer lists: replaced if their file lives, else lost."""
    listed = {f.id for f in listing}
    decisions = []
    for copy in registry.copies:
        if copy.status != ProviderCopyStatus.ACTIVE or not copy.provider_file_id:
            continue
        if copy.provider_file_id in listed:
            continue
        file = registry.files.get(copy.file_id)
        action = Action.REPLACE if file is not None and file.live(now) else Action.MARK_LOST
        decisions.append(Decision(action, copy.provider_file_id, copy.file_id, copy.id))
    return decisions


def _judge_listing(
    *,
    listing: Sequence[ProviderFile],
    registry: RegistryView,
    tag: str,
    now: datetime,
    grace: timedelta,
) -> tuple[list[Decision], list[tuple[ProviderFile, str]]]:
    """A decision for each listed file, and the orphans past the grace (decided by the cap)."""
    held = [c for c in registry.copies if c.status != ProviderCopyStatus.DELETED]
    known = {c.provider_file_id for c in held if c.provider_file_id}
    entry_of = {c.file_id: c for c in registry.copies}  # one copy per file and provider
    adopted: set[int] = set()
    decisions: list[Decision] = []
    orphans: list[tuple[ProviderFile, str]] = []
    # Newest first: of several landed uploads for one copy, the latest is adopted.
    for pfile in sorted(listing, key=lambda f: (-f.created_at, f.id)):
        if pfile.id in known:
            decisions.append(Decision(Action.KEEP, pfile.id))
            continue
        file_id = file_id_from_provider_name(pfile.filename, tag=tag, registered=registry.files)
        if file_id is None:
            decisions.append(Decision(Action.LEAVE_FOREIGN, pfile.id))
            continue
        entry = entry_of.get(file_id)
        claimed = None if entry is None else _claim(entry, registry.files.get(file_id), adopted)
        if claimed is not None and entry is not None:
            decisions.append(Decision(claimed, pfile.id, file_id, entry.id))
        elif now.timestamp() - pfile.created_at < grace.total_seconds():
            decisions.append(Decision(Action.WAIT, pfile.id, file_id))
        else:
            orphans.append((pfile, file_id))
    return decisions, orphans


def _claim(entry: RegistryCopy, file: RegistryFile | None, adopted: set[int]) -> Action | None:
    """What the registry's copy makes of a provider file named for it; None: nothing."""
    if (
        entry.status in ADOPTABLE
        and entry.id not in adopted
        and file is not None
        and not file.deleted
    ):
        adopted.add(entry.id)
        return Action.ADOPT
    if entry.status in PROTECTED or entry.id in adopted:
        return Action.KEEP
    return None


def candidate_ids(listing: Sequence[ProviderFile], *, tag: str) -> set[str]:
    """File ids named by listed files that may be ours: our tag, or untagged."""
    ids = set()
    for pfile in listing:
        parsed = parse_provider_name(pfile.filename)
        if parsed is not None and parsed.tag in (tag, None):
            ids.add(parsed.file_id)
    return ids


async def registry_view(
    session: AsyncSession, *, provider: str, listing: Sequence[ProviderFile], tag: str
) -> RegistryView:
    """Read what classify needs: held copies on `provider`, and rows for the ids listed."""
    repo = FileRepository(session)
    named = candidate_ids(listing, tag=tag)
    copies = {c.id: c for c in await repo.copies_on(provider)}
    for copy in await repo.copies_of_on(named, provider=provider):
        copies.setdefault(copy.id, copy)
    listed = {f.id for f in listing}
    lost = {
        c.file_id
        for c in copies.values()
        if c.status == ProviderCopyStatus.ACTIVE and c.provider_file_id not in listed
    }
    ids = named | lost
    files = {
        f.id: RegistryFile(f.id, f.deleted_at is not None, f.expires_at)
        for f in await repo.files_by_id(ids)
    }
    return RegistryView(
        files=files,
        copies=[
            RegistryCopy(c.id, c.file_id, c.status, c.provider_file_id)
            for c in sorted(copies.values(), key=lambda c: c.id)
        ],
    )
