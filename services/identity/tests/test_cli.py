"""``agentmesh admin create`` and ``agentmesh keys rotate``, run as the operator would."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid


def run_cli(args, *, env, stdin=""):
    return subprocess.run(
        [sys.executable, "-m", "agentmesh.shared.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def cli_env(identity_settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AGENTMESH_DATABASE_URL": identity_settings.common.database_url,
            "AGENTMESH_ENV": "test",
            "IDENTITY_KEY_ENCRYPTION_KEY": identity_settings.key_encryption_key.get_secret_value(),
            "AGENTMESH_INTERNAL_TOKEN": identity_settings.internal_token.get_secret_value(),
        }
    )
    return env


async def test_admin_create_then_login_as_admin(identity, identity_settings):
    email = f"root-{uuid.uuid4().hex[:8]}@example.com"
    password = "a long admin passphrase 1"
    result = run_cli(
        ["admin", "create", "--email", email], env=cli_env(identity_settings), stdin=password + "\n"
    )
    assert result.returncode == 0, result.stderr
    assert email in result.stdout
    tokens = await identity.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert tokens.status_code == 200
    listing = await identity.get(
        "/api/v1/users", headers={"Authorization": f"Bearer {tokens.json()['access_token']}"}
    )
    assert listing.status_code == 200

    duplicate = run_cli(
        ["admin", "create", "--email", email], env=cli_env(identity_settings), stdin=password + "\n"
    )
    assert duplicate.returncode == 1
    assert "Traceback" not in duplicate.stderr and "already registered" in duplicate.stderr
    short = run_cli(
        ["admin", "create", "--email", f"x{email}"], env=cli_env(identity_settings), stdin="short\n"
    )
    assert short.returncode == 1 and "12 to 256" in short.stderr


async def test_keys_rotate_publishes_a_new_key(identity, identity_settings):
    before = {k["kid"] for k in (await identity.get("/.well-known/jwks.json")).json()["keys"]}
    result = run_cli(["keys", "rotate"], env=cli_env(identity_settings))
    assert result.returncode == 0, result.stderr
    after = {k["kid"] for k in (await identity.get("/.well-known/jwks.json")).json()["keys"]}
    assert before < after
