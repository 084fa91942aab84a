"""API tokens in Redis: created, looked up, listed and revoked; only their SHA-256 is stored.

One hash (``AuthKeys.tokens``) maps each token's SHA-256 to its record; a revoked token keeps
its record (with ``revoked_at``) so the list shows what existed. Tokens are few, so listing
and revoking by id read the whole hash.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

from services.auth import (
    TOKEN_ID_CHARS,
    Principal,
    Role,
    TokenNotFound,
    check_binding,
    generate_token,
    hash_token,
    token_id_of,
)
from services.topics import AuthKeys

MAX_NAME_CHARS = 200
TOUCH_INTERVAL_S = 60.0
"""``last_used_at`` is written at most this often per token and process (not on every request)."""
UNKNOWN_TOKEN = "the API token is not valid (unknown token); ask an admin for a new one"
"""Why a token without a record is refused."""


class TokenRecord(BaseModel):
    """What is kept about a token (never the token itself)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description=f"the first {TOKEN_ID_CHARS} hex characters of the token's SHA-256")
    name: str = Field(description="who or what holds it, e.g. 'lobby wall' or 'anna (team lead)'")
    role: Role
    team_id: str | None = None
    manager_id: str | None = None
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = Field(None, description="approximate (updated at most once a minute)")

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def refusal(self) -> str | None:
        """Why the token is refused (it was revoked); None while it is accepted."""
        if self.revoked_at is None:
            return None
        return f"the API token {self.id} ({self.name!r}) was revoked at {self.revoked_at.isoformat()}"

    def principal(self) -> Principal:
        return Principal(
            role=self.role, name=self.name, team_id=self.team_id, manager_id=self.manager_id, token_id=self.id
        )


class TokenStore:
    """The tokens of one deployment, in its Redis."""

    def __init__(self, redis: Redis, keys: AuthKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._touched: dict[str, float] = {}

    async def create(
        self,
        *,
        name: str,
        role: Role,
        now: datetime,
        team_id: str | None = None,
        manager_id: str | None = None,
        token: str | None = None,
    ) -> tuple[str, TokenRecord]:
        """Store a new token and return it (its only appearance in plaintext) with its record.

        ``token``: register this plaintext instead of generating one (the demo keeps its tokens
        across runs). Raises ``InvalidPrincipal`` when the role does not fit the team/manager.
        """
        check_binding(role, team_id, manager_id)
        name = name.strip()
        if not name or len(name) > MAX_NAME_CHARS:
            raise ValueError(f"a token needs a name of 1 to {MAX_NAME_CHARS} characters (who or what holds it)")
        plaintext = token if token is not None else generate_token()
        digest = hash_token(plaintext)
        record = TokenRecord(
            id=token_id_of(digest), name=name, role=role, team_id=team_id, manager_id=manager_id, created_at=now
        )
        await self._redis.hset(self._keys.tokens, digest, _stored(record))
        return plaintext, record

    async def lookup(self, token: str) -> TokenRecord | None:
        """The record of a token (revoked ones included), or None when it was never issued."""
        raw = await self._redis.hget(self._keys.tokens, hash_token(token))
        return TokenRecord.model_validate_json(raw) if raw is not None else None

    async def refused(self, digests: Sequence[str]) -> dict[str, str]:
        """Of these token hashes, those refused now (revoked, or without a record), with why; one HMGET."""
        if not digests:
            return {}
        raws = await self._redis.hmget(self._keys.tokens, list(digests))
        refusals: dict[str, str] = {}
        for digest, raw in zip(digests, raws, strict=True):
            reason = UNKNOWN_TOKEN if raw is None else TokenRecord.model_validate_json(raw).refusal
            if reason is not None:
                refusals[digest] = reason
        return refusals

    async def touch(self, record: TokenRecord, token: str, now: datetime) -> None:
        """Note that the token was used (at most once per ``TOUCH_INTERVAL_S`` per process)."""
        clock = time.monotonic()
        if clock - self._touched.get(record.id, -TOUCH_INTERVAL_S) < TOUCH_INTERVAL_S:
            return
        self._touched[record.id] = clock
        await self._redis.hset(self._keys.last_used, hash_token(token), now.isoformat())

    async def list_tokens(self, *, include_revoked: bool = True) -> list[TokenRecord]:
        """Every token's record with when it was last used, oldest first."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._keys.tokens)
            pipe.hgetall(self._keys.last_used)
            raw_tokens, raw_used = await pipe.execute()
        used = {_text(digest): _text(at) for digest, at in raw_used.items()}
        records = [
            TokenRecord.model_validate_json(raw).model_copy(update={"last_used_at": _when(used.get(_text(digest)))})
            for digest, raw in raw_tokens.items()
        ]
        records.sort(key=lambda record: (record.created_at, record.id))
        return [record for record in records if include_revoked or record.active]

    async def revoke(self, token_id: str, now: datetime) -> TokenRecord:
        """Revoke the token with this id (requests with it are refused from now on); revoking twice is harmless.

        Raises ``TokenNotFound`` when no token has this id.
        """
        raw_tokens = await self._redis.hgetall(self._keys.tokens)
        for digest, raw in raw_tokens.items():
            record = TokenRecord.model_validate_json(raw)
            if record.id == token_id:
                if record.active:
                    record = record.model_copy(update={"revoked_at": now})
                    await self._redis.hset(self._keys.tokens, _text(digest), _stored(record))
                return record
        raise TokenNotFound(f"no API token has the id {token_id!r}; 'crm-pulse tokens list' shows the ids")


def _stored(record: TokenRecord) -> str:
    return record.model_dump_json(exclude={"last_used_at"})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None
