"""Settings are validated at start-up with messages that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.config import ConfigError, load_settings
from app.providers.hub import provider_configs


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FILEGATE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"FILEGATE_PROVIDER_ORDER": "moonshot,openai"}, "FILEGATE_PROVIDER_ORDER"),
        ({"FILEGATE_DATABASE_URL": "mysql://x/y"}, "FILEGATE_DATABASE_URL"),
        ({"FILEGATE_REDIS_URL": "http://x"}, "FILEGATE_REDIS_URL"),
        ({"FILEGATE_MAX_UPLOAD_BYTES": "0"}, "FILEGATE_MAX_UPLOAD_BYTES"),
        ({"FILEGATE_JWT_LEEWAY_SECONDS": "60"}, "FILEGATE_JWT_LEEWAY_SECONDS"),
        ({"FILEGATE_ENV": "production"}, "FILEGATE_SECRET_KEY"),
        (
            {"FILEGATE_ENV": "production", "FILEGATE_SECRET_KEY": "s" * 40},
            "FILEGATE_MOONSHOT_API_KEY",
        ),
        ({"FILEGATE_JWT_KEY": "k" * 40}, "FILEGATE_JWT_ISSUER"),
        ({"FILEGATE_SANDBOX_URL": "127.0.0.1:9000/sandbox"}, "FILEGATE_SANDBOX_URL"),
        ({"FILEGATE_SANDBOX_URL": "http://h/" + "s" * 500}, "FILEGATE_SANDBOX_URL"),
        ({"FILEGATE_LOG_LEVEL": "loud"}, "FILEGATE_LOG_LEVEL"),
        ({"FILEGATE_LOG_FORMAT": "xml"}, "FILEGATE_LOG_FORMAT"),
        ({"FILEGATE_HEADER_TIMEOUT_SECONDS": "0"}, "FILEGATE_HEADER_TIMEOUT_SECONDS"),
        ({"FILEGATE_BODY_IDLE_TIMEOUT_SECONDS": "-1"}, "FILEGATE_BODY_IDLE_TIMEOUT_SECONDS"),
        ({"FILEGATE_MAX_HEADER_BYTES": "100"}, "FILEGATE_MAX_HEADER_BYTES"),
        ({"FILEGATE_MAX_HEADER_COUNT": "2"}, "FILEGATE_MAX_HEADER_COUNT"),
        ({"FILEGATE_MAX_CONNECTIONS": "0"}, "FILEGATE_MAX_CONNECTIONS"),
    ],
)
def test_bad_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=needle):
        load_settings()


def test_log_settings_ignore_case(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (load_settings().log_level, load_settings().log_format) == ("INFO", "text")
    monkeypatch.setenv("FILEGATE_LOG_LEVEL", "warning")
    monkeypatch.setenv("FILEGATE_LOG_FORMAT", "JSON")
    settings = load_settings()
    assert (settings.log_level, settings.log_format) == ("WARNING", "json")


def test_empty_values_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILEGATE_MOONSHOT_API_KEY", "")
    monkeypatch.setenv("FILEGATE_PROVIDER_ORDER", "")
    settings = load_settings()
    assert settings.moonshot_api_key is None
    assert settings.provider_sandboxed("moonshot")
    assert settings.provider_order == ["moonshot", "zai"]


def test_production_never_sandboxes_a_provider_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILEGATE_ENV", "production")
    monkeypatch.setenv("FILEGATE_SECRET_KEY", "s" * 40)
    monkeypatch.setenv("FILEGATE_ZAI_API_KEY", "abc.def")
    settings = load_settings()
    configs = provider_configs(settings, sandbox_url=settings.sandbox_url)
    assert [(c.name, c.sandbox) for c in configs] == [("zai", False)]
    assert configs[0].base_url == "https://api.z.ai/api/paas/v4"


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILEGATE_MOONSHOT_API_KEY", "sk-very-secret-value")
    monkeypatch.setenv("FILEGATE_SECRET_KEY", "hmac-secret-value-0123456789")
    settings = load_settings()
    assert "sk-very-secret-value" not in repr(settings)
    assert "hmac-secret-value" not in repr(settings)


def test_sandbox_url_is_read_from_dotenv_and_unset_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings().sandbox_url is None
    (tmp_path / ".env").write_text("FILEGATE_SANDBOX_URL=http://127.0.0.1:9000/sandbox/\n")
    settings = load_settings()
    assert settings.sandbox_url == "http://127.0.0.1:9000/sandbox"
    configs = provider_configs(settings, sandbox_url=settings.sandbox_url)
    assert [c.base_url for c in configs] == [
        "http://127.0.0.1:9000/sandbox/moonshot/v1",
        "http://127.0.0.1:9000/sandbox/zai/api/paas/v4",
    ]


def test_a_sandboxed_provider_without_a_sandbox_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="FILEGATE_SANDBOX_URL"):
        provider_configs(load_settings(), sandbox_url=None)
