"""The gateway's purposes and OpenAI's aliases of them: an alias is stored, deduplicated and
listed as the purpose it names."""

from __future__ import annotations

FILE_EXTRACT = "file-extract"
# OpenAI SDKs send these for documents meant for a model to read.
ALIASES = {"assistants": FILE_EXTRACT, "user_data": FILE_EXTRACT}


def canonical(purpose: str) -> str:
    """The purpose a file is stored under: an alias becomes the purpose it names."""
    return ALIASES.get(purpose, purpose)


def spellings(purpose: str) -> tuple[str, ...]:
    """Every name rows of `purpose` may carry (rows stored before aliases were merged keep
    the alias they were uploaded with)."""
    name = canonical(purpose)
    return (name, *sorted(alias for alias, target in ALIASES.items() if target == name))
