"""Who is calling, and may they: API tokens on every data path (docs/access.md).

A token comes as ``Authorization: Bearer <token>`` or, for browsers and WebSockets that cannot
set headers, as the ``token`` query parameter. ``get_principal`` resolves it (401 when missing,
unknown or revoked); the *authorizers* below decide per route (403 naming the scope and the
role). Every route under /api/v1 gets ``get_principal`` from its router and must declare one
authorizer: a route that declares none answers 403 to everyone but admins (and fails
tests/integration/test_api_access.py), so a new route cannot be left open by mistake.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, HTTPException, Path, Query, Security, WebSocket, status
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from dashboard_api.errors import DashboardApiError
from dashboard_api.live_messages import ErrorMessage
from dashboard_api.models import ErrorDetail
from services.auth import COMPANY_SCOPE, Action, Principal, Role, alert_scopes
from services.kpi_reader import list_team_managers
from services.token_store import UNKNOWN_TOKEN, TokenStore
from services.topics import RedisKeys

TOKEN_QUERY = "token"
REALM = 'Bearer realm="crm-pulse"'
CLOSE_UNAUTHORIZED = 4401
"""WebSocket close code for a missing, unknown or revoked token (HTTP 401 + 4000), when connecting or
when an open connection's token is revoked (``dashboard_api.token_watch``)."""
AUTH_OFF = Principal(role=Role.ADMIN, name="anyone (api.auth=off)")

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerToken",
    description="An API token (crmp_...) as `Authorization: Bearer <token>`; `crm-pulse tokens create` makes one.",
)
query_scheme = APIKeyQuery(
    name=TOKEN_QUERY,
    auto_error=False,
    scheme_name="tokenQuery",
    description="The same token as the `token` query parameter, for browsers and WebSockets (`/ws?token=...`).",
)


class Access:
    """What the API needs to authenticate and authorize: the token store, and the team rosters."""

    def __init__(self, store: TokenStore, redis: Redis, keys: RedisKeys, *, enabled: bool) -> None:
        self.store = store
        self.redis = redis
        self.keys = keys
        self.enabled = enabled

    async def authenticate(self, token: str | None, now: datetime) -> Principal:
        """The principal of a token; ``Unauthenticated`` when it is missing, unknown or revoked."""
        if not self.enabled:
            return AUTH_OFF
        if not token:
            raise Unauthenticated(
                "an API token is needed: send 'Authorization: Bearer <token>' or add ?token=<token>; "
                "an admin creates one with 'crm-pulse tokens create'",
                invalid=False,
            )
        record = await self.store.lookup(token)
        if record is None:
            raise Unauthenticated(UNKNOWN_TOKEN)
        if record.refusal is not None:
            raise Unauthenticated(record.refusal)
        await self.store.touch(record, token, now)
        return record.principal()

    async def roster(self, principal: Principal) -> list[str]:
        """The managers of a team-bound principal's team (empty for the others)."""
        if principal.team_bound and principal.team_id is not None:
            return await list_team_managers(self.redis, self.keys, principal.team_id)
        return []

    async def read_denial(self, principal: Principal, scope: str) -> str | None:
        roster = await self.roster(principal) if principal.needs_roster(scope) else ()
        return principal.read_denial(scope, roster)

    async def scope_filter(self, principal: Principal) -> ScopeFilter:
        return ScopeFilter(principal, frozenset(await self.roster(principal)))


class Unauthenticated(DashboardApiError):
    """No usable token; ``invalid`` tells a bad token from a missing one (for WWW-Authenticate)."""

    def __init__(self, reason: str, *, invalid: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.invalid = invalid


@dataclass(frozen=True)
class ScopeFilter:
    """The scopes a principal may read, for what lists several (directory, quotas, alerts)."""

    principal: Principal
    roster: Collection[str]

    def allows(self, scope: str) -> bool:
        return self.principal.read_denial(scope, self.roster) is None

    def allows_any(self, scopes: Iterable[str]) -> bool:
        return any(self.allows(scope) for scope in scopes)

    def allows_alert(self, entry: Mapping[str, Any]) -> bool:
        """Whether the principal sees an alert history entry or active alert (``alert_scopes``)."""
        return self.allows_any(alert_scopes(entry))


def get_access(connection: HTTPConnection) -> Access:
    access: Access = connection.app.state.access
    return access


AccessDep = Annotated[Access, Depends(get_access)]


def _unauthorized(exc: Unauthenticated) -> HTTPException:
    challenge = f'{REALM}, error="invalid_token"' if exc.invalid else REALM
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=exc.reason, headers={"WWW-Authenticate": challenge})


def _forbidden(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail=f"forbidden: {reason}")


async def get_principal(
    connection: HTTPConnection,
    access: AccessDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    query_token: Annotated[str | None, Security(query_scheme)],
) -> Principal:
    """The caller, from the bearer token or the ``token`` query parameter; 401 without a valid one.

    Also refuses non-admins on a route that declares no authorizer (see the module docstring).
    """
    header = connection.headers.get("authorization")
    if header and bearer is None:
        raise _unauthorized(Unauthenticated("the Authorization header must be 'Bearer <token>'", invalid=False))
    token = bearer.credentials if bearer is not None else query_token
    try:
        principal = await access.authenticate(token, connection.app.state.clock())
    except Unauthenticated as exc:
        raise _unauthorized(exc) from None
    route = connection.scope.get("route")
    if principal.role is not Role.ADMIN and isinstance(route, APIRoute) and not route_authorizers(route):
        raise _forbidden(f"{connection.url.path} declares no access rule, so only admins may use it")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


# -- authorizers: each route under /api/v1 declares one (route_authorizers finds them) --

_AUTHORIZERS: set[Callable[..., Any]] = set()
F = TypeVar("F", bound=Callable[..., Any])


def authorizer(function: F) -> F:
    """Mark a dependency as an access rule."""
    _AUTHORIZERS.add(function)
    return function


def route_authorizers(route: APIRoute | APIWebSocketRoute) -> list[str]:
    """The names of the access rules among a route's dependencies (searched through sub-dependencies)."""
    found: list[str] = []

    def visit(dependant: Dependant) -> None:
        for sub in dependant.dependencies:
            if sub.call in _AUTHORIZERS:
                found.append(getattr(sub.call, "__name__", repr(sub.call)))
            visit(sub)

    visit(route.dependant)
    return found


async def _must_read(access: Access, principal: Principal, scope: str) -> Principal:
    """The principal, or 403 naming the scope and the role."""
    denial = await access.read_denial(principal, scope)
    if denial is not None:
        raise _forbidden(denial)
    return principal


@authorizer
async def authorize_company(principal: PrincipalDep, access: AccessDep) -> Principal:
    """The caller may read the company scope."""
    return await _must_read(access, principal, COMPANY_SCOPE)


@authorizer
async def authorize_team(
    team_id: Annotated[str, Path(description="team id as carried by events (team_id)")],
    principal: PrincipalDep,
    access: AccessDep,
) -> Principal:
    """The caller may read the team of the path (checked before the team's existence, which it may not learn)."""
    return await _must_read(access, principal, f"t:{team_id}")


@authorizer
async def authorize_manager(
    manager_id: Annotated[str, Path(description="manager id as carried by events (manager_id)")],
    principal: PrincipalDep,
    access: AccessDep,
) -> Principal:
    """The caller may read the manager of the path."""
    return await _must_read(access, principal, f"m:{manager_id}")


@authorizer
async def readable_scopes(principal: PrincipalDep, access: AccessDep) -> ScopeFilter:
    """Any caller; the route shows only the scopes it may read."""
    return await access.scope_filter(principal)


@authorizer
async def leaderboard_team(
    principal: PrincipalDep,
    access: AccessDep,
    team_id: Annotated[
        str | None,
        Query(
            description="rank only the managers seen with this team id; default: every manager, "
            "or the caller's team for a team lead or team display"
        ),
    ] = None,
) -> str | None:
    """The team to rank (None: every manager): the caller must read it; a team-bound caller gets its own."""
    if team_id is None:
        if principal.reads_everything:
            return None
        if principal.team_bound:
            return principal.team_id
        raise _forbidden(
            f"{principal.describe()} may not read the leaderboard: it shows other managers' figures; "
            f"read GET /api/v1/kpis/managers/{principal.manager_id}"
        )
    await _must_read(access, principal, f"t:{team_id}")
    return team_id


_ACTION_RULES: dict[Action, Callable[..., Awaitable[Principal]]] = {}


def require(action: Action) -> Callable[..., Awaitable[Principal]]:
    """The access rule "the caller may take this action" (one dependency per action)."""
    if action not in _ACTION_RULES:

        async def may(principal: PrincipalDep) -> Principal:
            denial = principal.action_denial(action)
            if denial is not None:
                raise _forbidden(denial)
            return principal

        may.__name__ = f"require_{action.name.lower()}"
        _ACTION_RULES[action] = authorizer(may)
    return _ACTION_RULES[action]


ScopeFilterDep = Annotated[ScopeFilter, Depends(readable_scopes)]
LeaderboardTeamDep = Annotated[str | None, Depends(leaderboard_team)]


# -- WebSocket --


def websocket_token(websocket: WebSocket) -> str | None:
    """The token of a WebSocket handshake: its Authorization header's bearer token, else ``?token=``."""
    header = websocket.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else websocket.query_params.get(TOKEN_QUERY)


async def websocket_principal(websocket: WebSocket, access: Access) -> Principal | None:
    """Authenticate an accepted WebSocket from ``?token=`` or its Authorization header.

    On failure the client gets an ``error`` message saying why, then close code 4401; None.
    """
    try:
        return await access.authenticate(websocket_token(websocket), websocket.app.state.clock())
    except Unauthenticated as exc:
        await websocket.send_text(ErrorMessage(message=f"unauthorized: {exc.reason}").model_dump_json())
        await websocket.close(code=CLOSE_UNAUTHORIZED, reason="unauthorized: a valid API token is needed"[:123])
        return None


class SubscriptionRefused(DashboardApiError):
    """A subscribe names a scope the principal may not read; the message says which and why."""


@dataclass(frozen=True)
class LiveGate:
    """What one WebSocket session's principal may subscribe to."""

    access: Access
    principal: Principal

    async def permitted(self, requested: Literal["*"] | list[str]) -> Literal["*"] | list[str]:
        """The scopes a subscribe may follow.

        "*" stays every scope (also later ones) for a principal that reads everything; for the
        others it becomes the scopes they may read now (docs/access.md). A list naming any scope
        the principal may not read is refused as a whole: ``SubscriptionRefused``.
        """
        principal = self.principal
        if requested == "*":
            if principal.reads_everything:
                return "*"
            return principal.allowed_scopes(await self.access.roster(principal)) or []
        needs_roster = any(principal.needs_roster(scope) for scope in requested)
        roster = await self.access.roster(principal) if needs_roster else []
        refusals = [denial for scope in requested if (denial := principal.read_denial(scope, roster)) is not None]
        if refusals:
            refused = "; ".join(refusals)
            raise SubscriptionRefused(f"forbidden: {refused}; nothing of this subscribe was subscribed")
        return requested

    async def alert_filter(self) -> ScopeFilter:
        """Which alerts the ticker sends this principal: those of the scopes it may read now."""
        return await self.access.scope_filter(self.principal)


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "no API token, or an unknown or revoked one"},
    403: {"model": ErrorDetail, "description": "the token's role may not read this scope or take this action"},
}


# -- logs --

_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"]*")
SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error")
"""uvicorn logs each request's path with its query (``/ws?token=...``, ``/?token=...``)."""


class RedactTokens(logging.Filter):
    """Replaces the value of a ``token`` query parameter in log records by ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(arg, str) and "token=" in arg for arg in record.args):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1***", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def redact_tokens_in_server_logs() -> None:
    """Keep tokens out of the server's access logs (once per process, whatever the number of apps)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactTokens) for existing in logger.filters):
            logger.addFilter(RedactTokens())
