"""The gateway's one settings model (environment variables prefixed FILEGATE_)."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.provider_names import Provider

PROVIDERS = tuple(Provider)
KiB = 1024
MiB = 1024 * 1024
SANDBOX_URL_MAX = 500  # the registry remembers each sandbox by its URL


class ConfigError(RuntimeError):
    """Settings failed validation; the message names each offending variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FILEGATE_",
        env_file=".env",
        extra="ignore",
        frozen=False,
        env_ignore_empty=True,
    )

    env: Literal["development", "production", "test"] = "development"
    data_dir: Path = Path("data")
    database_url: str | None = None
    database_connect_timeout: float = Field(default=5.0, gt=0, le=300)
    database_retry_after_seconds: int = Field(default=5, ge=1, le=3600)
    redis_url: str | None = None

    secret_key: SecretStr | None = None

    blob_store: Literal["local", "s3"] = "local"
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = Field(default=None, min_length=3, max_length=63)
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = Field(default="", max_length=256)

    max_upload_bytes: int = Field(default=100 * MiB, gt=0)
    max_multipart_parts: int = Field(default=8, ge=2, le=64)
    json_body_limit: int = Field(default=64 * 1024, ge=1024, le=16 * MiB)

    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_idle_timeout_seconds: float = Field(default=30.0, gt=0)
    max_header_bytes: int = Field(default=16 * KiB, ge=1 * KiB, le=1 * MiB)
    max_header_count: int = Field(default=100, ge=8, le=1000)
    max_connections: int = Field(default=1000, ge=1)

    provider_order: Annotated[list[str], NoDecode] = list(PROVIDERS)
    sandbox: bool = False
    # None: the gateway serves its own sandbox on an ephemeral loopback port.
    sandbox_url: str | None = Field(default=None, max_length=SANDBOX_URL_MAX)
    moonshot_api_key: SecretStr | None = None
    moonshot_base_url: str = "https://api.moonshot.ai/v1"
    zai_api_key: SecretStr | None = None
    zai_base_url: str = "https://api.z.ai/api/paas/v4"
    # Account caps (provider reference): Moonshot per account, Z.ai per capped purpose.
    moonshot_max_files: int = Field(default=1000, ge=1)
    moonshot_max_bytes: int = Field(default=10 * 1024 * MiB, ge=1)
    zai_max_files: int = Field(default=100, ge=1)
    # Most of one capped account's file slots a tenant may hold before it evicts only its own.
    capacity_tenant_share: float = Field(default=1.0, gt=0, le=1)
    capacity_retry_seconds: float = Field(default=30.0, gt=0)
    provider_connect_timeout: float = Field(default=5.0, gt=0)
    # The idle timeout: longest a provider exchange may move no bytes while sending or reading.
    provider_timeout: float = Field(default=10.0, gt=0)
    provider_first_byte_timeout: float = Field(default=4.0, gt=0)
    provider_pool_timeout: float = Field(default=1.0, gt=0, le=60)
    provider_max_connections: int = Field(default=20, ge=1, le=1000)
    provider_background_connections: int = Field(default=4, ge=1, le=1000)
    dedup_wait_seconds: float = Field(default=15.0, ge=0)
    speculative_placement: bool = True
    idempotency_lease_seconds: float = Field(default=30.0, ge=1, le=3600)
    breaker_fail_max: int = Field(default=5, ge=1)
    breaker_reset_seconds: float = Field(default=5.0, gt=0)
    breaker_namespace: str = Field(default="filegate:breaker", min_length=1)
    breaker_redis_timeout_seconds: float = Field(default=0.5, gt=0, le=10)
    retry_max_attempts: int = Field(default=3, ge=1)
    retry_base_delay: float = Field(default=0.2, ge=0)
    retry_max_delay: float = Field(default=5.0, ge=0)
    provider_deadline_seconds: float = Field(default=60.0, gt=0)
    provider_upload_deadline_seconds: float = Field(default=600.0, gt=0)

    workers_in_process: int = Field(default=1, ge=0, le=16)
    job_lease_seconds: float = Field(default=60.0, gt=0)
    job_poll_seconds: float = Field(default=1.0, gt=0)
    job_listen: bool = True
    job_max_attempts: int = Field(default=20, ge=1)
    job_backoff_base: float = Field(default=2.0, gt=0)
    job_backoff_max: float = Field(default=300.0, gt=0)
    job_done_retention_seconds: float = Field(default=7 * 86400.0, ge=60)
    job_dead_retention_seconds: float = Field(default=30 * 86400.0, ge=60)
    reconcile_interval_seconds: float = Field(default=300.0, gt=0)
    orphan_grace_seconds: float = Field(default=900.0, ge=0)
    reconcile_max_deletions: int = Field(default=25, ge=0)
    health_check_interval_seconds: float = Field(default=3600.0, gt=0)
    expiry_interval_seconds: float = Field(default=60.0, gt=0)
    storage_sweep_interval_seconds: float = Field(default=3600.0, gt=0)
    storage_leftover_max_age_seconds: float = Field(default=6 * 3600.0, ge=60)
    default_retention_seconds: int | None = Field(default=None, gt=0)

    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_key: SecretStr | None = None
    jwt_audience: str = "filegate"
    jwt_issuer: str | None = None
    jwt_tenant_claim: str = "tenant"
    jwt_scope_claim: str = "scope"
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=30)
    jwt_allow_admin: bool = False
    jwt_max_lifetime_seconds: int | None = Field(default=None, gt=0)

    default_rate_limit_per_minute: int = Field(default=0, ge=0)
    audit_anonymous_refusals_per_minute: int = Field(default=20, ge=0, le=100_000)

    docs_enabled: bool = True
    # A console sign-in lasts this long (its key's revocation ends it sooner).
    console_session_seconds: int = Field(default=8 * 3600, ge=60, le=7 * 24 * 3600)
    metrics_token: SecretStr | None = None
    # Where `serve --workers N` (N > 1) keeps the workers' metric files; a private temporary
    # directory when unset. One server per directory: it is emptied at start and at exit.
    metrics_dir: Path | None = None
    cors_origins: Annotated[list[str], NoDecode] = []
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "text"

    @field_validator("provider_order", mode="before")
    @classmethod
    def _split_order(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("provider_order")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in PROVIDERS]
        if unknown or not value or len(set(value)) != len(value):
            raise ValueError(
                f"must be a comma-separated list of distinct providers from {', '.join(PROVIDERS)}"
            )
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _fold_case(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            value = value.strip()
            return value.upper() if info.field_name == "log_level" else value.lower()
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for prefix, driver in (
            ("postgresql://", "postgresql+psycopg://"),
            ("postgres://", "postgresql+psycopg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if value.startswith(prefix):
                return driver + value[len(prefix) :]
        if not value.startswith(("postgresql+psycopg://", "sqlite+aiosqlite://")):
            raise ValueError("must be a postgresql:// or sqlite:// URL")
        return value

    @field_validator("sandbox_url")
    @classmethod
    def _sandbox_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                "must be an http:// or https:// URL (e.g. http://127.0.0.1:9000/sandbox)"
            )
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _s3_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("s3_prefix")
    @classmethod
    def _s3_prefix(cls, value: str) -> str:
        value = value.strip("/")
        return f"{value}/" if value else ""

    @model_validator(mode="after")
    def _s3_complete(self) -> Settings:
        if self.blob_store != "s3":
            return self
        if not self.s3_bucket:
            raise ValueError("FILEGATE_S3_BUCKET must be set when FILEGATE_BLOB_STORE=s3")
        if self.secret_key is None:
            raise ValueError(
                "FILEGATE_SECRET_KEY must be set when FILEGATE_BLOB_STORE=s3: replicas that "
                "share the object store must key API-key HMACs alike"
            )
        if self.max_upload_bytes > 5 * 1024 * MiB:
            raise ValueError("FILEGATE_MAX_UPLOAD_BYTES is at most 5 GiB on the S3 blob store")
        return self

    @model_validator(mode="after")
    def _jwt_complete(self) -> Settings:
        if self.jwt_key is not None and not self.jwt_issuer:
            raise ValueError("FILEGATE_JWT_ISSUER must be set when FILEGATE_JWT_KEY is")
        return self

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> Settings:
        if self.env == "production" and self.secret_key is None:
            raise ValueError(
                "FILEGATE_SECRET_KEY must be set in production (it keys the API-key HMAC)"
            )
        if not any(self.provider_enabled(name) for name in PROVIDERS):
            raise ValueError(
                "set FILEGATE_MOONSHOT_API_KEY or FILEGATE_ZAI_API_KEY "
                "(or FILEGATE_SANDBOX=true) in production"
            )
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'filegate.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def provider_key(self, provider: str) -> SecretStr | None:
        key: SecretStr | None = getattr(self, f"{provider}_api_key")
        return key

    def provider_sandboxed(self, provider: str) -> bool:
        """Sandboxed when asked to, or (outside production) when the provider has no key."""
        if self.sandbox:
            return True
        return self.provider_key(provider) is None and self.env != "production"

    def provider_enabled(self, provider: str) -> bool:
        """In production a provider without a key is off, never silently sandboxed."""
        return self.provider_sandboxed(provider) or self.provider_key(provider) is not None

    def sandboxed_providers(self) -> list[str]:
        """The providers this process sends to the sandbox."""
        return [name for name in PROVIDERS if self.provider_sandboxed(name)]

    def sandbox_caps(self) -> dict[str, int]:
        """Sandbox options that fill its accounts where the gateway's caps say they are full."""
        return {
            "moonshot_max_files": self.moonshot_max_files,
            "moonshot_max_total_bytes": self.moonshot_max_bytes,
            "zai_max_files": self.zai_max_files,
        }

    def hmac_key(self) -> bytes:
        """The secret keying API-key HMACs; generated once under data_dir when not configured."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            token = secrets.token_urlsafe(48)
            try:
                with open(path, "x", encoding="ascii") as fh:
                    fh.write(token)
                path.chmod(0o600)
            except FileExistsError:
                pass
        return path.read_text(encoding="ascii").strip().encode()


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning validation errors into one message naming each variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"]) or "settings"
            name = f"FILEGATE_{field.upper()}" if err["loc"] else "settings"
            lines.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
