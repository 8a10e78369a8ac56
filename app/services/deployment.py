"""The deployment identity: a tag only this registry owns, carried by its provider-side names."""

from __future__ import annotations

import asyncio
import re
import secrets

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.repositories.deployment import DeploymentRepository

TAG_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
TAG_LENGTH = 10
TAG_PATTERN = re.compile(rf"[a-z0-9]{{{TAG_LENGTH}}}")


class DeploymentTagInvalid(Exception):
    """The stored tag is not one this gateway draws (the row was edited by hand)."""


def new_tag() -> str:
    return "".join(secrets.choice(TAG_ALPHABET) for _ in range(TAG_LENGTH))


async def load_or_create(session: AsyncSession) -> str:
    """The stored tag, drawn and stored the first time (concurrent first starts agree)."""
    repo = DeploymentRepository(session)
    tag = await repo.tag() or await repo.claim(new_tag())
    if tag is None or not TAG_PATTERN.fullmatch(tag):
        raise DeploymentTagInvalid(
            f"the deployment tag stored in the registry ({tag!r}) is not {TAG_LENGTH} "
            "lowercase letters or digits"
        )
    return tag


class DeploymentIdentity:
    """This registry's tag, read once (at start-up, or at first use if the database was away)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._tag: str | None = None
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return self._tag is not None

    async def tag(self) -> str:
        if self._tag is None:
            async with self._lock:
                if self._tag is None:
                    async with self._sessionmaker() as session:
                        tag = await load_or_create(session)
                        await session.commit()
                    self._tag = tag
        return self._tag
