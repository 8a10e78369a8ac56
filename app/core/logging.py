"""Logging for every entry point: one root handler, per-request context, redacted secrets.

`configure_logging(settings)` is called once by each entry point (the CLI commands and the app
factory) and may be called again: it replaces its own handler rather than adding another.
Context fields (request, tenant, file, job) travel in a contextvar bound by the middleware,
the routes and the worker, so every line logged while handling them carries them.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import IO, Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

from app.core.config import PROVIDERS, Settings
from app.core.errors import GatewayError
from app.core.outage import is_database_outage

APP_LOGGER = "filegate"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
CONTEXT_FIELDS = ("request_id", "tenant_id", "file_id", "job_id", "job_kind")
REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 8  # a shorter configured value would blank out ordinary words

_SECRET_PATTERNS = (
    # API keys fg_<id>_<secret> (app/auth/tokens.py), and anything else shaped like one.
    (re.compile(r"(?<![A-Za-z0-9])fg_[A-Za-z0-9_-]{8,}"), f"fg_{REDACTED}"),
    (re.compile(r"(?i)\bbearer\s+[^\s\"',;]+"), f"Bearer {REDACTED}"),
    # Compact JWS: base64url header (a JSON object, so "eyJ"), payload and signature.
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
)


class LogContext:
    """Fields carried by every log line of the current request or job (one contextvar)."""

    def __init__(self) -> None:
        self._fields: ContextVar[Mapping[str, str]] = ContextVar("filegate_log_context")

    def fields(self) -> Mapping[str, str]:
        return self._fields.get({})

    def bind(self, **fields: object) -> Token[Mapping[str, str]]:
        """Add fields (None values are skipped) until `reset` or the end of the context."""
        added = {key: str(value) for key, value in fields.items() if value is not None}
        return self._fields.set({**self.fields(), **added})

    def reset(self, token: Token[Mapping[str, str]]) -> None:
        self._fields.reset(token)

    @contextmanager
    def bound(self, **fields: object) -> Iterator[None]:
        token = self.bind(**fields)
        try:
            yield
        finally:
            self.reset(token)


log_context = LogContext()


class ContextFilter(logging.Filter):
    """Copies the bound context fields onto each record (fields given as `extra` win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in log_context.fields().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


class RedactFilter(logging.Filter):
    """Masks API keys, bearer tokens, JWTs and configured secrets in messages and tracebacks."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        values = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._secrets = values
        self._plain = logging.Formatter()

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        for pattern, replacement in _SECRET_PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call is reported by the formatter, unchanged
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._plain.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def _utc_time(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request_id=... tenant_id=...] message`, then any traceback."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        context = " ".join(
            f"{key}={value}"
            for key in CONTEXT_FIELDS
            if (value := getattr(record, key, None)) is not None
        )
        return (
            f"{_utc_time(record)} {record.levelname} {record.name} [{context or '-'}] "
            f"{record.message}"
        )


class JsonFormatter(_LibraryJsonFormatter):
    """One JSON object a line: time, level, logger, message, context fields, exc_info."""

    def __init__(self) -> None:
        super().__init__(
            [],
            reserved_attrs=[*RESERVED_ATTRS, *CONTEXT_FIELDS, "taskName", "color_message"],
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data.update(
            time=_utc_time(record),
            level=record.levelname,
            logger=record.name,
            message=record.message,
        )
        for key in CONTEXT_FIELDS:
            if (value := getattr(record, key, None)) is not None:
                log_data[key] = value
        super().add_fields(log_data, record, message_dict)
        if record.exc_text:  # the redacted rendering, not the library's fresh one
            log_data["exc_info"] = record.exc_text


class GatewayHandler(logging.StreamHandler[IO[str]]):
    """The root handler; by default writes to whatever sys.stderr is at the time of each line."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._fixed = stream
        super().__init__(stream or sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return self._fixed or sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold (provider keys, HMAC secret, JWT key, tokens)."""
    values = [settings.provider_key(name) for name in PROVIDERS]
    values += [settings.secret_key, settings.jwt_key, settings.metrics_token]
    return [value.get_secret_value() for value in values if value is not None]


def build_handler(settings: Settings, stream: IO[str] | None = None) -> GatewayHandler:
    handler = GatewayHandler(stream)
    handler.setLevel(settings.log_level)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactFilter(configured_secrets(settings)))
    return handler


def configure_logging(settings: Settings, *, stream: IO[str] | None = None) -> None:
    """Route the app's and uvicorn's loggers through one formatted, redacting root handler."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, GatewayHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(build_handler(settings, stream))
    logging.getLogger(APP_LOGGER).setLevel(settings.log_level)
    for name in UVICORN_LOGGERS:
        # uvicorn sets their levels from its own log_level; its handlers would bypass ours.
        uvicorn_logger = logging.getLogger(name)
        for theirs in list(uvicorn_logger.handlers):
            uvicorn_logger.removeHandler(theirs)
        uvicorn_logger.propagate = True


def is_expected(exc: BaseException) -> bool:
    """A failure the gateway anticipates (its own typed errors, an unreachable database)."""
    return isinstance(exc, GatewayError) or is_database_outage(exc)


def log_failure(logger: logging.Logger, message: str, *args: object, exc: BaseException) -> None:
    """One line for an expected failure; a traceback for anything unexpected."""
    if is_expected(exc):
        logger.warning(f"{message}: %s", *args, str(exc) or type(exc).__name__)
    else:
        logger.error(message, *args, exc_info=exc)
