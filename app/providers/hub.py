"""The configured provider adapters in preference order, and which of them can take a file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.core.config import ConfigError, Settings
from app.core.errors import InvalidRequest, UnsupportedPurpose
from app.core.provider_names import Provider
from app.providers import ADAPTERS, check_purpose
from app.providers.base import ProviderAdapter, PurposeRule
from app.providers.pipeline import CallObserver, ProviderConfig, RetryObserver

if TYPE_CHECKING:
    from app.providers.breaker_board import BreakerBoard
    from app.providers.retry import RetryPolicy

SANDBOX_KEYS = {Provider.MOONSHOT: "sk-sandbox", Provider.ZAI: "sandbox.key"}
SANDBOX_PATHS = {Provider.MOONSHOT: "/moonshot/v1", Provider.ZAI: "/zai/api/paas/v4"}


@dataclass(frozen=True)
class Target:
    provider: str
    rule: PurposeRule


class ProviderHub:
    """The adapters in preference order, and which of them can take a given file."""

    def __init__(self, adapters: dict[str, ProviderAdapter], order: list[str]) -> None:
        self.adapters = adapters
        self.order = [name for name in order if name in adapters]

    @classmethod
    def build(
        cls,
        configs: list[ProviderConfig],
        *,
        order: list[str],
        breakers: BreakerBoard,
        retry_policy: RetryPolicy,
        observer: CallObserver,
        retry_observer: RetryObserver,
    ) -> ProviderHub:
        """One adapter per config, behind its breaker, retried and observed."""
        adapters = {
            cfg.name: ADAPTERS[cfg.name](
                cfg,
                observer=observer,
                breaker=breakers.get(cfg.name),
                retry_policy=retry_policy,
                retry_observer=retry_observer,
            )
            for cfg in configs
        }
        return cls(adapters, order)

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


def provider_configs(settings: Settings, *, sandbox_url: str | None) -> list[ProviderConfig]:
    """One config per provider: live with its key, or the sandbox at `sandbox_url`."""
    configs = []
    for name in Provider:
        if not settings.provider_enabled(name):
            continue
        sandboxed = settings.provider_sandboxed(name)
        if sandboxed and sandbox_url is None:
            raise ConfigError(no_sandbox_message(settings))
        key = settings.provider_key(name)
        configs.append(
            ProviderConfig(
                name=name,
                base_url=(
                    f"{sandbox_url}{SANDBOX_PATHS[name]}"
                    if sandboxed
                    else getattr(settings, f"{name}_base_url")
                ),
                api_key=SANDBOX_KEYS[name] if sandboxed or key is None else key.get_secret_value(),
                sandbox=sandboxed,
                connect_timeout=settings.provider_connect_timeout,
                first_byte_timeout=settings.provider_first_byte_timeout,
                idle_timeout=settings.provider_timeout,
                pool_timeout=settings.provider_pool_timeout,
                max_connections=settings.provider_max_connections,
                background_connections=settings.provider_background_connections,
            )
        )
    return configs


def no_sandbox_message(settings: Settings) -> str:
    return (
        "invalid configuration:\n  FILEGATE_SANDBOX_URL: not set, and "
        f"{', '.join(settings.sandboxed_providers())} would be sent to the sandbox; only "
        "`filegate serve` runs a sandbox of its own. Run `filegate sandbox` and set "
        "FILEGATE_SANDBOX_URL to it (e.g. http://127.0.0.1:9000/sandbox) for every process."
    )
