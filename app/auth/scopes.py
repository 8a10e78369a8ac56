"""The scopes a credential can hold: the one list keys, JWTs and routes check against."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    FILES_READ = "files:read"
    FILES_WRITE = "files:write"
    ADMIN = "admin"  # also allows every other scope's routes


DEFAULT_SCOPES = (Scope.FILES_READ, Scope.FILES_WRITE)
