"""``crm-pulse tokens create|list|revoke``, and the tokens ``crm-pulse demo`` prints (docs/access.md).

Runs in the CLI's process against the deployment's Redis (``services.token_store``), so the
first admin token can be made before anyone can call the API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from redis.asyncio import Redis

from services import localinfra
from services.auth import ROLE_HELP, InvalidPrincipal, Role, TokenNotFound
from services.localinfra.errors import START_SERVERS_HINT
from services.redis import redis_client
from services.settings import Settings
from services.token_store import TokenRecord, TokenStore
from services.topics import AuthKeys, RedisKeys

PROG = "crm-pulse"
T = TypeVar("T")


def add_parser(commands: Any) -> None:
    """Add ``tokens`` and its actions to the CLI's subcommands."""
    roles = "; ".join(f"{role.value}: {text}" for role, text in ROLE_HELP.items())
    tokens = commands.add_parser(
        "tokens",
        help="create, list or revoke API tokens (roles: admin, director, team_lead, manager, display)",
        description=f"API tokens for the REST API and the WebSocket (docs/access.md). Roles — {roles}. "
        "Only a token's SHA-256 is stored: the token is printed once, when created.",
        allow_abbrev=False,
    )
    actions = tokens.add_subparsers(title="actions", dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="create a token and print it (once)",
        description="Create a token and print it on standard output (its only appearance; keep it secret). "
        "Send it as 'Authorization: Bearer <token>', or as ?token=<token> for the wall page and /ws.",
        allow_abbrev=False,
    )
    create.add_argument("--role", required=True, choices=[role.value for role in Role], help="what the token may do")
    create.add_argument("--name", required=True, help="who or what holds it, e.g. 'lobby wall' (shown in the list)")
    create.add_argument("--team", metavar="TEAM_ID", help="team_lead: the team led; display: the team shown")
    create.add_argument("--manager", metavar="MANAGER_ID", help="manager: the manager")
    create.add_argument(
        "--allow-unknown",
        action="store_true",
        help="accept a team or manager no event has carried yet (by default that is refused: likely a typo)",
    )
    create.set_defaults(run=_create)
    listing = actions.add_parser(
        "list",
        help="list the tokens (never the tokens themselves)",
        description="List every token: id, role, team or manager, name, created, last used, revoked.",
        allow_abbrev=False,
    )
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    listing.add_argument("--json", action="store_true", help="print JSON (one object per token)")
    listing.set_defaults(run=_list)
    revoke = actions.add_parser(
        "revoke",
        help="revoke a token by its id",
        description="Revoke a token: requests and new WebSocket connections with it are refused from now on.",
        allow_abbrev=False,
    )
    revoke.add_argument("token_id", metavar="TOKEN_ID", help="the token's id, from 'crm-pulse tokens list'")
    revoke.set_defaults(run=_revoke)


def _run(settings: Settings, action: Callable[[TokenStore], Awaitable[T]]) -> T:
    async def run() -> T:
        settings_in_use = localinfra.client_settings(settings)
        redis = redis_client(settings_in_use)
        try:
            return await action(TokenStore(redis, AuthKeys.from_settings(settings_in_use)))
        finally:
            await redis.aclose()

    return asyncio.run(run())


def _fail(message: str, code: int = 1) -> int:
    print(f"{PROG} tokens: {message}", file=sys.stderr)
    return code


FLAGS = {"team_id": "--team", "manager_id": "--manager", "role": "--role", "name": "--name"}
"""The command-line flag of each field a message may name."""


def in_flags(message: str) -> str:
    """A message about the token's fields, in the words of this command's flags."""
    for field, flag in FLAGS.items():
        message = re.sub(rf"\b{field}\b", flag, message)
    return message


def _unknown_binding(settings: Settings, team: str | None, manager: str | None) -> str | None:
    """Why the team or manager looks like a typo (no event has carried it), or None."""

    async def check() -> str | None:
        settings_in_use = localinfra.client_settings(settings)
        redis = redis_client(settings_in_use)
        try:
            return await _unknown_in(redis, RedisKeys.from_settings(settings_in_use), team, manager)
        finally:
            await redis.aclose()

    return asyncio.run(check())


async def _unknown_in(redis: Redis, keys: RedisKeys, team: str | None, manager: str | None) -> str | None:
    if team is not None and not await redis.sismember(keys.teams, team):
        known = sorted(
            item.decode() if isinstance(item, bytes) else str(item) for item in await redis.smembers(keys.teams)
        )
        return f"unknown team {team!r} (--team): no event has carried it; known teams: {', '.join(known) or 'none yet'}"
    if manager is not None and not await redis.sismember(keys.managers, manager):
        return (
            f"unknown manager {manager!r} (--manager): no event was attributed to it (GET /api/v1/managers lists them)"
        )
    return None


def _create(settings: Settings, args: argparse.Namespace, extras: list[str]) -> int:
    from redis.exceptions import RedisError

    if not args.allow_unknown:
        try:
            unknown = _unknown_binding(settings, args.team, args.manager)
        except RedisError as exc:
            return _fail(f"Redis at {settings.redis.url} cannot be reached ({exc}); {START_SERVERS_HINT}")
        if unknown:
            return _fail(f"{unknown}; check the spelling, or pass --allow-unknown for one that has no events yet", 2)
    try:
        token, record = _run(
            settings,
            lambda store: store.create(
                name=args.name, role=Role(args.role), team_id=args.team, manager_id=args.manager, now=_now()
            ),
        )
    except (InvalidPrincipal, ValueError) as exc:
        return _fail(in_flags(str(exc)), 2)
    except RedisError as exc:
        return _fail(f"Redis at {settings.redis.url} cannot be reached ({exc}); {START_SERVERS_HINT}")
    print(token)
    print(
        f"created token {record.id} for {record.principal().describe()}; it is shown only this once. "
        f"Send it as 'Authorization: Bearer <token>', or open http://{settings.api.host}:{settings.api.port}/?token=<token>",
        file=sys.stderr,
    )
    return 0


def _list(settings: Settings, args: argparse.Namespace, extras: list[str]) -> int:
    from redis.exceptions import RedisError

    try:
        records = _run(settings, lambda store: store.list_tokens(include_revoked=args.all))
    except RedisError as exc:
        return _fail(f"Redis at {settings.redis.url} cannot be reached ({exc}); {START_SERVERS_HINT}")
    if args.json:
        for record in records:
            print(record.model_dump_json())
        return 0
    if not records:
        print("no tokens" + ("" if args.all else " (revoked ones are shown with --all)"))
        return 0
    rows = [_row(record) for record in records]
    header = ("id", "role", "bound to", "name", "created", "last used", "revoked")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _row(record: TokenRecord) -> tuple[str, ...]:
    bound = f"team {record.team_id}" if record.team_id else f"manager {record.manager_id}" if record.manager_id else ""
    if record.role is Role.DISPLAY and not record.team_id:
        bound = "company"
    return (
        record.id,
        record.role.value,
        bound or "-",
        record.name,
        _minute(record.created_at),
        _minute(record.last_used_at),
        _minute(record.revoked_at),
    )


def _minute(when: datetime | None) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ") if when is not None else "-"


def _revoke(settings: Settings, args: argparse.Namespace, extras: list[str]) -> int:
    from redis.exceptions import RedisError

    now = _now()
    try:
        record = _run(settings, lambda store: store.revoke(args.token_id, now))
    except TokenNotFound as exc:
        return _fail(str(exc))
    except RedisError as exc:
        return _fail(f"Redis at {settings.redis.url} cannot be reached ({exc}); {START_SERVERS_HINT}")
    if record.revoked_at is not None and record.revoked_at < now:
        print(
            f"token {record.id} ({record.principal().describe()}) was already revoked on {_minute(record.revoked_at)}"
        )
        return 0
    print(f"revoked token {record.id} ({record.principal().describe()})")
    return 0


def _now() -> datetime:
    return datetime.now(UTC)


# -- the demo's tokens --


@dataclass(frozen=True)
class DemoTokens:
    display: str
    """Read-only, company-wide: for the wall page URL."""
    admin: str


DEMO_TOKENS_FILE = "demo-tokens.json"
_DEMO_NAMES = {"display": ("demo wall (company display)", Role.DISPLAY), "admin": ("demo admin", Role.ADMIN)}


def demo_tokens(settings: Settings, data_dir: Path) -> DemoTokens:
    """The demo's display and admin tokens: those of the last run (kept in ``data_dir``, readable by
    the owner only) while they are valid, so a wall screen's URL keeps working; new ones otherwise."""
    path = data_dir / DEMO_TOKENS_FILE
    try:
        kept: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        kept = {}

    async def ensure(store: TokenStore) -> dict[str, str]:
        tokens: dict[str, str] = {}
        for kind, (name, role) in _DEMO_NAMES.items():
            token = kept.get(kind)
            record = await store.lookup(token) if token else None
            if token and record is not None and record.active and record.role is role:
                tokens[kind] = token
            else:
                # Redis was wiped (re-register the same token) or it was revoked (a new one).
                reuse = token if token and record is None else None
                tokens[kind], _ = await store.create(name=name, role=role, now=_now(), token=reuse)
        return tokens

    tokens = _run(settings, ensure)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(tokens, file)
    return DemoTokens(display=tokens["display"], admin=tokens["admin"])
