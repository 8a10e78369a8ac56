"""docker/compose.yaml describes a fleet the gateway can run as: replicas that share
everything through PostgreSQL, Redis and the object store, and keep nothing on their disks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from app.core.config import Settings

COMPOSE = Path(__file__).resolve().parents[1] / "docker" / "compose.yaml"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def gateways(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in doc["services"].items() if name.startswith("gateway")}


def test_two_replicas_share_the_database_redis_object_store_and_secret() -> None:
    replicas = gateways(compose())
    assert len(replicas) >= 2
    envs = [svc["environment"] for svc in replicas.values()]
    shared = (
        "FILEGATE_DATABASE_URL",
        "FILEGATE_REDIS_URL",
        "FILEGATE_SECRET_KEY",
        "FILEGATE_BLOB_STORE",
        "FILEGATE_S3_ENDPOINT_URL",
        "FILEGATE_S3_BUCKET",
        "FILEGATE_SANDBOX_URL",
    )
    for name in shared:
        assert len({env[name] for env in envs}) == 1, name
    assert envs[0]["FILEGATE_BLOB_STORE"] == "s3"
    assert envs[0]["FILEGATE_DATABASE_URL"].startswith("postgresql://")
    for svc in replicas.values():
        assert "volumes" not in svc  # stateless: nothing of its own to keep
    ports = [port for svc in replicas.values() for port in svc["ports"]]
    assert len(set(ports)) == len(ports)


def test_every_setting_the_fleet_passes_is_a_gateway_setting() -> None:
    fields = {f"FILEGATE_{name.upper()}" for name in Settings.model_fields}
    for svc in gateways(compose()).values():
        unknown = set(svc["environment"]) - fields
        assert not unknown, unknown


def test_the_object_store_knows_the_credentials_the_replicas_use() -> None:
    doc = compose()
    env = next(iter(gateways(doc).values()))["environment"]
    identities = json.loads(doc["configs"]["s3-identities"]["content"])["identities"]
    keys = {c["accessKey"]: c["secretKey"] for i in identities for c in i["credentials"]}
    assert keys[env["FILEGATE_S3_ACCESS_KEY_ID"]] == env["FILEGATE_S3_SECRET_ACCESS_KEY"]
    assert f"-bucket={env['FILEGATE_S3_BUCKET']}" in doc["services"]["seaweedfs"]["command"]
    assert env["FILEGATE_S3_ENDPOINT_URL"].startswith("http://seaweedfs:")
