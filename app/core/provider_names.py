"""The providers the gateway speaks to, named once."""

from __future__ import annotations

from enum import StrEnum


class Provider(StrEnum):
    """A provider's name as configured, stored on copies and shown to callers."""

    MOONSHOT = "moonshot"
    ZAI = "zai"
