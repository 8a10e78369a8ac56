"""Who is calling and on which request: what services need to know about a call."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    key_id: str
    tenant_id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    kind: str = "key"  # key, console (a session of an admin key), jwt or system
    rate_limit_per_minute: int | None = None

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.key_id}"

    @property
    def rate_bucket(self) -> str:
        """What the rate limit counts against: a console session shares its key's budget."""
        return f"{'key' if self.kind == 'console' else self.kind}:{self.key_id}"


@dataclass(frozen=True)
class CallContext:
    """The caller plus request metadata recorded in audit and lifecycle rows."""

    principal: Principal
    request_id: str | None = None
    client_addr: str | None = None


def system_context(*, tenant_id: str, task: str) -> CallContext:
    """The context background work runs under: audited as the system, scoped to one tenant."""
    return CallContext(
        principal=Principal(key_id="worker", tenant_id=tenant_id, kind="system"),
        request_id=task,
    )
