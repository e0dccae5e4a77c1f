"""`Authenticator` (`app.state.auth`): an `Authorization` header → a `Principal`, or `Unauthenticated` (401).

Missing, malformed, unknown, revoked and expired keys each get an OpenAI-like message that never echoes the key.
Lookups go through `KeyDirectory`'s short TTL cache (revocation by another process takes effect within its TTL,
1 s; see `llmaas.tenancy.keys`). Route protection itself lives in `api/deps.py`; this only verifies keys.
"""

from __future__ import annotations

import hmac

from llmaas.errors import Unauthenticated
from llmaas.store.db import now
from llmaas.tenancy.keys import SECRET_PREFIX, KeyDirectory, hash_secret
from llmaas.tenancy.types import Principal

MISSING = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth "
    "(i.e. Authorization: Bearer YOUR_KEY)."
)
MALFORMED = "Malformed Authorization header: expected 'Bearer sk-…'."
INCORRECT = "Incorrect API key provided. Ask your llmaas administrator for a valid key."
REVOKED = "This API key has been revoked."
EXPIRED = "This API key has expired."
MAX_SECRET_LEN = 256  # ours are 46 characters; anything much longer is not worth hashing


class Authenticator:
    def __init__(self, directory: KeyDirectory) -> None:
        self.directory = directory

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.strip():
            raise Unauthenticated(MISSING)
        scheme, _, secret = authorization.strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise Unauthenticated(MALFORMED)
        if not secret.startswith(SECRET_PREFIX) or len(secret) > MAX_SECRET_LEN or not secret.isprintable():
            raise Unauthenticated(INCORRECT)
        info = await self.directory.by_secret(secret)
        if info is None or not hmac.compare_digest(info.key_hash, hash_secret(secret)):
            raise Unauthenticated(INCORRECT)
        if info.revoked_at is not None:
            raise Unauthenticated(REVOKED)
        if info.expired(now()):
            raise Unauthenticated(EXPIRED)
        return Principal(
            project_id=info.project_id,
            key_id=info.id,
            is_admin=info.is_admin,
            allowed_models=frozenset(info.models) if info.models is not None else None,
            key_prefix=info.prefix,
        )
