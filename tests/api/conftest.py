"""Fixtures of the API tests: a gateway on each blob store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.core.config import Settings
from tests.api.test_files_on_s3 import on_s3
from tests.conftest import Gateway, started_gateway
from tests.support.seaweed import ObjectStore


@pytest.fixture(params=["local", "s3"])
async def store_gateway(
    request: pytest.FixtureRequest, settings: Settings, sandbox_reset: str
) -> AsyncIterator[Gateway]:
    if request.param == "s3":
        store: ObjectStore = request.getfixturevalue("object_store")
        settings = on_s3(settings, store)
    async with started_gateway(settings, sandbox_reset) as gateway:
        yield gateway
