"""The providers overview lists each circuit's recent transitions, newest first."""

from __future__ import annotations

from tests.conftest import Gateway


async def test_forced_transitions_are_listed_newest_first(gateway: Gateway) -> None:
    admin = await gateway.key("ops", scopes=("admin",))
    async with gateway.client(admin) as ops:
        for action in ("open", "close"):
            resp = await ops.post("/admin/providers/zai/breaker", json={"action": action})
            assert resp.status_code == 200
        providers = {p["provider"]: p for p in (await ops.get("/admin/providers")).json()["data"]}
    moves = [
        (t["from_state"], t["to_state"]) for t in providers["zai"]["breaker"]["recent_transitions"]
    ]
    assert moves == [("open", "closed"), ("closed", "open")]
    assert providers["moonshot"]["breaker"]["recent_transitions"] == []
