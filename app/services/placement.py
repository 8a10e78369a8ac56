"""Choosing providers for a file and holding the adapters built at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.errors import InvalidRequest, UnsupportedPurpose
from app.providers import check_purpose
from app.providers.base import ProviderAdapter, PurposeRule


@dataclass(frozen=True)
class Target:
    provider: str
    rule: PurposeRule


class ProviderHub:
    """The adapters in preference order, and which of them can take a given file."""

    def __init__(self, adapters: dict[str, ProviderAdapter], order: list[str]) -> None:
        self.adapters = adapters
        self.order = [name for name in order if name in adapters]

    def adapter(self, name: str) -> ProviderAdapter:
        try:
            return self.adapters[name]
        except KeyError:
            raise InvalidRequest(
                f"Unknown provider '{name}'; use one of: auto, {', '.join(self.order)}.",
                param="provider",
            ) from None

    @property
    def purposes(self) -> list[str]:
        names = {purpose for adapter in self.adapters.values() for purpose in adapter.purposes}
        return sorted(names)

    def check_purpose_known(self, purpose: str) -> None:
        if purpose not in self.purposes:
            raise InvalidRequest(
                f"Unknown purpose '{purpose}'; use one of: {', '.join(self.purposes)}.",
                param="purpose",
            )

    def check_provider_known(self, provider: str) -> None:
        if provider != "auto":
            self.adapter(provider)

    def targets(self, *, purpose: str, filename: str, size: int, requested: str) -> list[Target]:
        """Providers that accept this file, in the order to try them; 4xx when none does."""
        self.check_purpose_known(purpose)
        if requested != "auto":
            adapter = self.adapter(requested)
            rule = check_purpose(adapter, purpose=purpose, filename=filename, size=size)
            return [Target(requested, rule)]
        targets: list[Target] = []
        reasons: list[str] = []
        for name in self.order:
            try:
                rule = check_purpose(
                    self.adapters[name], purpose=purpose, filename=filename, size=size
                )
            except UnsupportedPurpose as exc:
                reasons.append(exc.message)
                continue
            targets.append(Target(name, rule))
        if not targets:
            raise UnsupportedPurpose(
                "No provider can take this file: " + " ".join(reasons),
                param="purpose",
            )
        return targets

    async def aclose(self) -> None:
        for adapter in self.adapters.values():
            await adapter.aclose()
