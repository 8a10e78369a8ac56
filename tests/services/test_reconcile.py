"""classify on generated registries and listings: many files, copies in every state, foreign."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.models import ProviderCopyStatus
from app.providers.base import ProviderFile
from app.services.placement import parse_provider_name
from app.services.reconcile import (
    ADOPTABLE,
    Action,
    Plan,
    RegistryCopy,
    RegistryFile,
    RegistryView,
    classify,
)

OURS = "ours000tag"
THEIRS = "theirs0tag"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
GRACE = timedelta(minutes=15)
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass
class World:
    listing: list[ProviderFile]
    registry: RegistryView
    max_deletions: int

    def plan(self) -> Plan:
        return classify(
            listing=self.listing,
            registry=self.registry,
            tag=OURS,
            now=NOW,
            grace=GRACE,
            max_deletions=self.max_deletions,
        )

    def ours(self, name: str) -> bool:
        parsed = parse_provider_name(name)
        if parsed is None:
            return False
        return parsed.tag == OURS or (parsed.tag is None and parsed.file_id in self.registry.files)

    def copy_of(self, file_id: str) -> RegistryCopy | None:
        return next((c for c in self.registry.copies if c.file_id == file_id), None)

    def by_id(self, provider_file_id: str) -> ProviderFile:
        return next(f for f in self.listing if f.id == provider_file_id)


def _name(file_id: str, form: str, original: str) -> str:
    if form == "ours":
        return f"{file_id}.{OURS}__{original}"
    if form == "theirs":
        return f"{file_id}.{THEIRS}__{original}"
    if form == "untagged":
        return f"{file_id}__{original}"
    return original  # a name the gateway never writes


@st.composite
def worlds(draw: st.DrawFn) -> World:
    ids = draw(
        st.lists(st.text(ALNUM, min_size=24, max_size=24), min_size=1, max_size=40, unique=True)
    )
    ages = st.sampled_from([5, 60, 899, 901, 3600, 86400 * 30])  # seconds before NOW
    files: dict[str, RegistryFile] = {}
    copies: list[RegistryCopy] = []
    listing: list[ProviderFile] = []
    serial = 0
    for index, raw in enumerate(ids):
        file_id = f"file-{raw}"
        if draw(st.booleans()) or index == 0:  # registered here; the others are ghost ids
            expiry = draw(
                st.sampled_from([None, NOW - timedelta(hours=1), NOW + timedelta(days=1)])
            )
            files[file_id] = RegistryFile(file_id, draw(st.booleans()), expiry)
        landed = []
        for _ in range(draw(st.integers(0, 3))):
            serial += 1
            form = draw(st.sampled_from(["ours", "ours", "untagged", "theirs", "plain"]))
            original = draw(st.sampled_from(["report.pdf", "a__b.csv", "notes", "x.jsonl"]))
            pfile = ProviderFile(
                id=f"pf{serial:05d}",
                bytes=1,
                created_at=int(NOW.timestamp()) - draw(ages),
                filename=_name(file_id, form, original),
                purpose="file-extract",
            )
            listing.append(pfile)
            landed.append(pfile.id)
        if file_id in files and draw(st.booleans()):
            status = draw(st.sampled_from(list(ProviderCopyStatus)))
            pointer = draw(
                st.sampled_from([None, f"gone{index:04d}", *landed])
                if status != ProviderCopyStatus.PLACING
                else st.just(None)
            )
            copies.append(RegistryCopy(len(copies) + 1, file_id, status, pointer))
    for extra in range(draw(st.integers(0, 5))):  # names nobody parses
        listing.append(
            ProviderFile(f"zz{extra}", 1, int(NOW.timestamp()) - 86400, f"upload{extra}.txt", "x")
        )
    return World(listing, RegistryView(files, copies), draw(st.integers(0, 6)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_classify_keeps_its_invariants(world: World) -> None:
    plan = world.plan()
    listed = {f.id for f in world.listing}
    held = [c for c in world.registry.copies if c.status != ProviderCopyStatus.DELETED]
    known = {c.provider_file_id for c in held if c.provider_file_id}

    # Every listed file gets one decision; every unlisted active copy gets one.
    lost_actions = (Action.REPLACE, Action.MARK_LOST)
    per_listed = Counter(d.provider_file_id for d in plan.decisions if d.action not in lost_actions)
    assert per_listed == Counter(listed)
    lost = [d for d in plan.decisions if d.action in lost_actions]
    assert sorted(d.copy_id for d in lost if d.copy_id) == sorted(
        c.id
        for c in held
        if c.status == ProviderCopyStatus.ACTIVE
        and c.provider_file_id
        and c.provider_file_id not in listed
    )
    for d in lost:
        assert d.file_id is not None
        live = world.registry.files[d.file_id].live(NOW)
        assert d.action == (Action.REPLACE if live else Action.MARK_LOST)

    deletions = plan.of(Action.DELETE_ORPHAN)
    for d in deletions:
        pfile = world.by_id(d.provider_file_id)
        # Never another deployment's file, never one the registry points at.
        assert world.ours(pfile.filename), pfile.filename
        assert d.provider_file_id not in known
        # Never a file named for a copy the registry is placing (it may be that upload); a
        # second file named for an active copy is a duplicate, and only that goes.
        copy = world.copy_of(str(d.file_id))
        assert copy is None or copy.status != ProviderCopyStatus.PLACING
        if copy is not None and copy.status == ProviderCopyStatus.ACTIVE:
            assert copy.provider_file_id != d.provider_file_id
        assert NOW.timestamp() - pfile.created_at >= GRACE.total_seconds()

    # The cap: never more deletions than it allows; held ones only once it is reached.
    held_back = plan.of(Action.HOLD)
    assert len(deletions) <= world.max_deletions
    if held_back:
        assert len(deletions) == world.max_deletions
        newest_deleted = max(
            (world.by_id(d.provider_file_id).created_at for d in deletions), default=0
        )
        assert all(world.by_id(d.provider_file_id).created_at >= newest_deleted for d in held_back)

    # Foreign means exactly: not ours by name.
    for d in plan.decisions:
        if d.action == Action.LEAVE_FOREIGN:
            assert not world.ours(world.by_id(d.provider_file_id).filename)
            assert d.provider_file_id not in known
        elif d.action not in lost_actions and d.provider_file_id not in known:
            assert world.ours(world.by_id(d.provider_file_id).filename)

    # Landed uploads of copies still waiting are adopted: one per copy, the newest.
    adopted = Counter(d.copy_id for d in plan.of(Action.ADOPT))
    assert all(n == 1 for n in adopted.values())
    for copy in world.registry.copies:
        file = world.registry.files[copy.file_id]
        candidates = [
            f
            for f in world.listing
            if f.id not in known
            and world.ours(f.filename)
            and (parsed := parse_provider_name(f.filename)) is not None
            and parsed.file_id == copy.file_id
        ]
        if copy.status in ADOPTABLE and not file.deleted and candidates:
            [decision] = [d for d in plan.of(Action.ADOPT) if d.copy_id == copy.id]
            newest = max(candidates, key=lambda f: (f.created_at, -int(f.id[2:])))
            assert decision.provider_file_id == newest.id
        else:
            assert copy.id not in adopted


def test_a_fresh_registry_beside_a_full_account_deletes_nothing() -> None:
    """The incident: a second deployment with an empty registry on a busy provider account."""
    old = int(NOW.timestamp()) - 86400
    listing = [
        ProviderFile(f"pf{i}", 1, old, f"file-{'A' * 20}{i:04d}.{THEIRS}__r{i}.pdf", "file-extract")
        for i in range(300)
    ] + [
        ProviderFile(f"legacy{i}", 1, old, f"file-{'B' * 20}{i:04d}__r{i}.pdf", "file-extract")
        for i in range(134)
    ]
    plan = classify(
        listing=listing,
        registry=RegistryView(files={}, copies=[]),
        tag=OURS,
        now=NOW,
        grace=GRACE,
        max_deletions=25,
    )
    assert plan.count(Action.LEAVE_FOREIGN) == len(listing)


def test_untagged_names_of_files_this_registry_holds_are_still_reconciled() -> None:
    old = int(NOW.timestamp()) - 86400
    mine, gone = f"file-{'C' * 24}", f"file-{'D' * 24}"
    listing = [
        ProviderFile("p1", 1, old, f"{mine}__a.pdf", "file-extract"),
        ProviderFile("p2", 1, old, f"{gone}__b.pdf", "file-extract"),
    ]
    registry = RegistryView(
        files={mine: RegistryFile(mine, False, None), gone: RegistryFile(gone, True, None)},
        copies=[
            RegistryCopy(1, mine, ProviderCopyStatus.PLACING, None),
            RegistryCopy(2, gone, ProviderCopyStatus.DELETED, "p2"),
        ],
    )
    plan = classify(
        listing=listing, registry=registry, tag=OURS, now=NOW, grace=GRACE, max_deletions=25
    )
    assert [(d.action, d.provider_file_id) for d in plan.decisions] == [
        (Action.ADOPT, "p1"),
        (Action.DELETE_ORPHAN, "p2"),
    ]


def test_many_true_orphans_are_cut_at_the_cap_oldest_first() -> None:
    base = int(NOW.timestamp()) - 86400
    listing = [
        ProviderFile(f"p{i:03d}", 1, base - i, f"file-{'E' * 21}{i:03d}.{OURS}__x.pdf", "x")
        for i in range(100)
    ]
    plan = classify(
        listing=listing,
        registry=RegistryView(files={}, copies=[]),
        tag=OURS,
        now=NOW,
        grace=GRACE,
        max_deletions=10,
    )
    deleted = [d.provider_file_id for d in plan.of(Action.DELETE_ORPHAN)]
    assert deleted == [f"p{i:03d}" for i in range(99, 89, -1)]
    assert plan.count(Action.HOLD) == 90


def test_a_duplicate_of_an_active_copy_goes_once_past_the_grace() -> None:
    """A placement retried after its first upload landed unseen leaves two provider files for
    one copy: the one the registry points at stays, the other is an orphan."""
    file_id = "file-" + "D" * 24
    old = int((NOW - 2 * GRACE).timestamp())
    young = int((NOW - GRACE / 2).timestamp())
    listing = [
        ProviderFile("pf-kept", 1, old, f"{file_id}.{OURS}__r.pdf", "file-extract"),
        ProviderFile("pf-dup-old", 1, old, f"{file_id}.{OURS}__r.pdf", "file-extract"),
        ProviderFile("pf-dup-young", 1, young, f"{file_id}.{OURS}__r.pdf", "file-extract"),
    ]
    registry = RegistryView(
        files={file_id: RegistryFile(file_id, deleted=False, expires_at=None)},
        copies=[RegistryCopy(1, file_id, ProviderCopyStatus.ACTIVE, "pf-kept")],
    )
    plan = World(listing, registry, max_deletions=10).plan()
    actions = {d.provider_file_id: d.action for d in plan.decisions}
    assert actions == {
        "pf-kept": Action.KEEP,
        "pf-dup-old": Action.DELETE_ORPHAN,
        "pf-dup-young": Action.WAIT,
    }
