"""Login latency (Argon2id cost) and access-token verifications per second.

uv run python -m bench.identity_login [--logins 50] [--verifications 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from agentmesh.identity.app import create_app
from agentmesh.identity.settings import IdentitySettings
from agentmesh.shared.auth import JWTVerifier
from agentmesh.shared.settings import CommonSettings
from agentmesh.shared.testing.fixtures import app_client, serve_app
from bench.servers import machine, percentile, servers

PASSWORD = "correct horse battery staple"


async def main(logins: int, verifications: int) -> dict[str, float]:
    async with servers() as (database_url, nats_url):
        settings = IdentitySettings(
            common=CommonSettings(
                env="test", database_url=database_url, nats_url=nats_url, log_level="WARNING"
            ),
            key_encryption_key="bench-key-encryption-key-0123456789abcdef",
            internal_token="bench-internal-token-0123456789abcdef",
        )
        app = create_app(settings)
        async with serve_app(app) as base_url, app_client(app) as client:
            email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
            body = {"email": email, "password": PASSWORD, "name": "Bench"}
            await client.post("/api/v1/auth/register", json=body)
            latencies = []
            token = ""
            for _ in range(logins):
                started = time.perf_counter()
                response = await client.post("/api/v1/auth/login", json=body)
                latencies.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text
                token = response.json()["access_token"]
            hash_times = []
            passwords = app.state.auth.passwords
            for _ in range(20):
                started = time.perf_counter()
                await passwords.hash(PASSWORD)
                hash_times.append((time.perf_counter() - started) * 1000)

            verifier = JWTVerifier(
                f"{base_url}/.well-known/jwks.json", "agentmesh-identity", "agentmesh"
            )
            await verifier.verify(token)  # warm the JWKS cache
            verifier.verified_cache_size = 0  # every call checks in full, as a new token
            verifier._verified.clear()
            started = time.perf_counter()
            for _ in range(verifications):
                await verifier.verify(token)
            elapsed = time.perf_counter() - started
            verifier.verified_cache_size = 10_000  # a token seen before: the usual case
            await verifier.verify(token)
            started = time.perf_counter()
            for _ in range(verifications):
                await verifier.verify(token)
            cached_elapsed = time.perf_counter() - started
            await verifier.aclose()
    figures = {
        "login_p50_ms": statistics.median(latencies),
        "login_p95_ms": percentile(latencies, 95),
        "argon2_hash_p50_ms": statistics.median(hash_times),
        "verifications_per_second": verifications / elapsed,
        "cached_verifications_per_second": verifications / cached_elapsed,
    }
    print(f"identity login and token verification ({machine()})")
    print(f"  logins: {logins} sequential, over in-process HTTP (ASGI), one account")
    print(
        f"  login latency p50 {figures['login_p50_ms']:.1f} ms, p95 "
        f"{figures['login_p95_ms']:.1f} ms (Argon2id m=19 MiB t=2 p=1; one hash "
        f"{figures['argon2_hash_p50_ms']:.1f} ms)"
    )
    print(
        f"  token verification (shared JWTVerifier, EdDSA, cached JWKS, 1 core): "
        f"{figures['verifications_per_second']:,.0f} per second checked in full; "
        f"{figures['cached_verifications_per_second']:,.0f} per second for a token already "
        f"verified"
    )
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logins", type=int, default=50)
    parser.add_argument("--verifications", type=int, default=5000)
    args = parser.parse_args()
    asyncio.run(main(args.logins, args.verifications))
