"""Provider adapters (Moonshot, Z.ai) and the pre-flight purpose/size/type check."""

from __future__ import annotations

from pathlib import PurePosixPath

from app.core.errors import UnsupportedPurpose
from app.core.provider_names import Provider
from app.providers.base import (
    IMAGE_EXTENSIONS,
    MiB,
    ProviderAdapter,
    ProviderFile,
    PurposeRule,
    parse_retry_after,
)
from app.providers.moonshot import MoonshotAdapter
from app.providers.pipeline import CallObserver, ProviderConfig
from app.providers.zai import ZaiAdapter

__all__ = [
    "ADAPTERS",
    "CallObserver",
    "MoonshotAdapter",
    "Provider",
    "ProviderAdapter",
    "ProviderConfig",
    "ProviderFile",
    "PurposeRule",
    "ZaiAdapter",
    "check_purpose",
    "parse_retry_after",
    "size_limit",
]

ADAPTERS: dict[str, type[ProviderAdapter]] = {
    Provider.MOONSHOT: MoonshotAdapter,
    Provider.ZAI: ZaiAdapter,
}


def check_purpose(
    adapter: type[ProviderAdapter] | ProviderAdapter, *, purpose: str, filename: str, size: int
) -> PurposeRule:
    """The provider's rule for `purpose` if this file fits it, else UnsupportedPurpose."""
    name = adapter.name
    rule = adapter.purposes.get(purpose)
    if rule is None:
        accepted = ", ".join(sorted(adapter.purposes))
        raise UnsupportedPurpose(
            f"{name} does not accept purpose '{purpose}'; it accepts: {accepted}.",
            param="purpose",
        )
    extension = _extension(filename)
    if rule.extensions is not None and extension not in rule.extensions:
        what = f"'.{extension}' files" if extension else "files without an extension"
        allowed = ", ".join(f".{e}" for e in sorted(rule.extensions))
        raise UnsupportedPurpose(
            f"{name} does not accept {what} for purpose '{purpose}'; allowed: {allowed}.",
            param="file",
        )
    if size <= 0:
        # Both providers refuse empty files; failing here saves a doomed upload.
        raise UnsupportedPurpose(
            f"{name} does not accept empty files for purpose '{purpose}'.", param="file"
        )
    limit = size_limit(rule, filename)
    image = rule.image_max_bytes is not None and extension in IMAGE_EXTENSIONS
    scope = "images with " if image else ""
    if size > limit:
        raise UnsupportedPurpose(
            f"{name} accepts at most {_mib(limit)} for {scope}purpose '{purpose}' "
            f"(this file is {size / MiB:.1f} MiB).",
            param="file",
        )
    return rule


def size_limit(rule: PurposeRule, filename: str) -> int:
    """The largest file `rule` takes under this name (images may have a lower limit)."""
    if rule.image_max_bytes is not None and _extension(filename) in IMAGE_EXTENSIONS:
        return rule.image_max_bytes
    return rule.max_bytes


def _extension(filename: str) -> str:
    # Browsers may send Windows paths; only the last component's suffix matters.
    base = PurePosixPath(filename.replace("\\", "/")).name
    return PurePosixPath(base).suffix.lstrip(".").lower()


def _mib(limit: int) -> str:
    value = limit / MiB
    return f"{value:g} MiB" if value >= 1 else f"{limit} bytes"
