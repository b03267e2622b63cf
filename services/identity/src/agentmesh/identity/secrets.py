"""Identity's part of ``agentmesh secrets rotate``: every signing key's private half
re-encrypted under the newest ``IDENTITY_KEY_ENCRYPTION_KEY``."""

from __future__ import annotations

from agentmesh.identity.settings import IdentitySettings


async def rotate(settings: IdentitySettings | None = None) -> dict[str, int]:
    """Re-encrypt the signing keys (active and retired) under the newest key."""
    from agentmesh.identity.crypto import KeyEncryption
    from agentmesh.identity.keys.models import SigningKey
    from agentmesh.shared import db
    from agentmesh.shared.rotation import reencrypt_column

    settings = settings or IdentitySettings()
    box = KeyEncryption(settings.key_encryption_key.get_secret_value())
    engine = db.create_engine(settings.common, application_name="agentmesh-secrets-rotate")
    try:
        rewritten = await reencrypt_column(
            db.create_sessionmaker(engine), box, SigningKey.kid, SigningKey.private_key_encrypted
        )
    finally:
        await engine.dispose()
    return {"identity signing keys": rewritten}
