"""8: authentication overhead, a retrieve with an API key or a JWT vs none."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

from bench.context import Bench, profiled
from bench.rawhttp import RawClient
from bench.report import verdict

AUTH_DELTA_MAX_MS = 1.0


def make_jwt(*, tenant: str, scope: str, lifetime: int = 3600) -> str:
    from jose import jwt  # the app's own JWT library (python-jose)

    from bench.server import JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET

    now = int(time.time())
    claims = {
        "sub": "bench-user",
        "aud": JWT_AUDIENCE,
        "iss": JWT_ISSUER,
        "iat": now,
        "exp": now + lifetime,
        "tenant": tenant,
        "scope": scope,
    }
    token: str = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    return token


def auth_phase(b: Bench, *, file_id: str, requests: int, blocks: int = 10, warm: int = 200) -> None:
    from bench.server import NOAUTH_PREFIX

    jwt_token = make_jwt(tenant=b.tenant, scope="files:read")
    path = f"/v1/files/{file_id}"
    conn = RawClient(b.gateway.base_url)
    variants = {
        "noauth": conn.request(NOAUTH_PREFIX + path, {}),
        "key": conn.request(path, {"Authorization": f"Bearer {b.token}"}),
        "jwt": conn.request(path, {"Authorization": f"Bearer {jwt_token}"}),
    }
    mark = b.foreign_mark()
    per = max(1, requests // blocks)
    with asyncio.Runner() as runner:
        try:
            runner.run(_check_and_warm(conn, variants, warm=warm))
            with profiled(b.client, b.gateway, "auth", b.profile):
                samples, block_medians = runner.run(
                    _sequential(conn, variants, per=per, blocks=blocks)
                )
        finally:
            runner.run(conn.aclose())
    med = {name: statistics.median(ts) * 1e3 for name, ts in samples.items()}
    for name, label in (("key", "API key"), ("jwt", "JWT HS256")):
        delta = med[name] - med["noauth"]
        b.report.add(
            f"auth overhead, {label}: GET /v1/files/{{id}} (ms)",
            f"{med[name]:.3f}",
            f"{med['noauth']:.3f} no auth",
            f"{delta:+.3f} ms",
            f"<= +{AUTH_DELTA_MAX_MS:g} ms",
            verdict(delta <= AUTH_DELTA_MAX_MS),
        )
    blk_delta = {
        name: statistics.median(
            k - n for k, n in zip(block_medians[name], block_medians["noauth"], strict=True)
        )
        * 1e3
        for name in ("key", "jwt")
    }
    p90 = {name: statistics.quantiles(ts, n=10)[-1] * 1e3 for name, ts in samples.items()}
    b.report.notes.append(
        f"auth: {per * blocks} sequential GETs per variant ({blocks} interleaved blocks of "
        f"{per}, rotating order, after {warm} warm-ups each) over one keep-alive connection; "
        f"medians ms: noauth {med['noauth']:.3f}, key {med['key']:.3f}, jwt {med['jwt']:.3f}; "
        f"p90 ms: noauth {p90['noauth']:.3f}, key {p90['key']:.3f}, jwt {p90['jwt']:.3f}; "
        f"median of per-block deltas: key {blk_delta['key']:+.3f}, jwt {blk_delta['jwt']:+.3f}; "
        f"other processes used {b.foreign_since(mark)} meanwhile"
    )
    print(
        "auth: " + "  ".join(f"{n} {m:.3f} ms" for n, m in med.items()),
        file=sys.stderr,
    )


async def _check_and_warm(conn: RawClient, variants: dict[str, bytes], *, warm: int) -> None:
    """The three variants answer the same body; then `warm` untimed rounds."""
    bodies = {}
    for name, raw in variants.items():
        status, body = await conn.get(raw)
        if status != 200:
            raise RuntimeError(f"auth {name}: GET -> {status}: {body[:300]!r}")
        bodies[name] = json.loads(body)
    if not bodies["noauth"] == bodies["key"] == bodies["jwt"]:
        raise RuntimeError(f"the three retrieves differ: {bodies}")
    for _ in range(warm):
        for raw in variants.values():
            await conn.get(raw)


async def _sequential(
    conn: RawClient, variants: dict[str, bytes], *, per: int, blocks: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per-request latencies and per-block medians, blocks interleaved in rotating order."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    block_medians: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    perf = time.perf_counter
    for blk in range(blocks):
        order = names[blk % len(names) :] + names[: blk % len(names)]
        for name in order:
            raw = variants[name]
            block: list[float] = []
            for _ in range(per):
                t0 = perf()
                status, _body = await conn.get(raw)
                block.append(perf() - t0)
                if status != 200:
                    raise RuntimeError(f"auth {name}: GET -> {status}")
            samples[name] += block
            block_medians[name].append(statistics.median(block))
    return samples, block_medians
