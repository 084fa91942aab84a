"""Access control: roles, the principal behind an API token, and what each role may read and do.

Pure logic, no I/O: the token store (``services.token_store``) keeps the token records, and the
API asks the functions here whether a principal may read a scope or take an action.

    role        reads                                             writes
    admin       every scope                                       everything, tokens included
    director    every scope                                       events, quotas, alert rules/silences/acks
    team_lead   t:<team>, m:<manager> of the team's managers      nothing
    manager     m:<self>                                          nothing
    display     every scope (company display), or t:<team> and    nothing, ever
                the team's managers (team display)

An alert concerns the scopes of ``alert_scopes``: a principal sees the alerts of the scopes it
reads (a team lead its team's and its managers'), and only those. Alert rules and silences
concern any scope: only principals that read every scope read them (admin, director, company
display). A team's managers are those the worker has seen with an event carrying the team id (the
directory set of ``services.kpi_reader.list_team_managers``): the caller supplies them.

AuthError
 ├── InvalidPrincipal     a role with a missing or superfluous team / manager
 └── TokenNotFound        no token with that id (services.token_store)
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

TOKEN_PREFIX = "crmp_"
"""Every token starts with this, so a leaked one is recognizable (secret scanners, logs)."""
TOKEN_BYTES = 32
TOKEN_ID_CHARS = 12
"""A token's public id: the first hex characters of its SHA-256 (listed, and named to revoke it)."""
COMPANY_SCOPE = "c"


class AuthError(Exception):
    """Root of the access-control errors."""


class InvalidPrincipal(AuthError, ValueError):
    """A token's role does not fit the team or manager given with it."""


class TokenNotFound(AuthError, LookupError):
    """No token has that id (or the id is ambiguous)."""


class Role(StrEnum):
    ADMIN = "admin"
    DIRECTOR = "director"
    TEAM_LEAD = "team_lead"
    MANAGER = "manager"
    DISPLAY = "display"


class Action(StrEnum):
    """What a principal may do besides reading KPIs."""

    INGEST = "ingest events"
    QUOTAS = "change quotas"
    ALERT_RULES_READ = "read alert rules and silences"
    ALERTS_WRITE = "change alert rules, silences and acknowledgements"
    TOKENS = "manage API tokens"


ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.DIRECTOR: frozenset({Action.INGEST, Action.QUOTAS, Action.ALERT_RULES_READ, Action.ALERTS_WRITE}),
    Role.TEAM_LEAD: frozenset(),
    Role.MANAGER: frozenset(),
    Role.DISPLAY: frozenset({Action.ALERT_RULES_READ}),
}
"""Actions per role. Reading alert rules and silences also needs every scope (see
``Principal.action_denial``): they are about any scope, so a team display does not read them.
Alerts themselves are read by everyone, each the alerts of its scopes (``alert_scopes``)."""

ROLE_HELP: dict[Role, str] = {
    Role.ADMIN: "everything, including API tokens",
    Role.DIRECTOR: "reads everything; ingests events, sets quotas, alert rules, silences and acknowledgements",
    Role.TEAM_LEAD: "reads their team (--team) and its managers",
    Role.MANAGER: "reads themselves (--manager)",
    Role.DISPLAY: "read-only wall screen: the company, or one team (--team) and its managers",
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's role and what it is bound to."""

    role: Role
    name: str
    team_id: str | None = None
    """The team of a team lead, or of a team display (None: a company display)."""
    manager_id: str | None = None
    """The manager of a manager token."""
    token_id: str | None = None

    def __post_init__(self) -> None:
        check_binding(self.role, self.team_id, self.manager_id)

    def describe(self) -> str:
        """For messages: ``team_lead 'anna' (team team-01)``."""
        bound = ""
        if self.team_id is not None:
            bound = f" (team {self.team_id})"
        elif self.manager_id is not None:
            bound = f" (manager {self.manager_id})"
        elif self.role is Role.DISPLAY:
            bound = " (company)"
        return f"{self.role.value} {self.name!r}{bound}"

    @property
    def reads_everything(self) -> bool:
        return self.role in (Role.ADMIN, Role.DIRECTOR) or (self.role is Role.DISPLAY and self.team_id is None)

    @property
    def team_bound(self) -> bool:
        """Reads one team and its managers (a team lead or a team display)."""
        return not self.reads_everything and self.team_id is not None

    def needs_roster(self, scope: str) -> bool:
        """Whether ``read_denial(scope, ...)`` needs the managers of the principal's team."""
        return self.team_bound and scope.startswith("m:")

    def read_denial(self, scope: str, team_managers: Collection[str] = ()) -> str | None:
        """Why this principal may not read the scope token (``c``, ``t:<team>``, ``m:<manager>``); None if it may.

        ``team_managers``: the managers of the principal's team, needed for ``m:`` scopes of a
        team-bound principal (``needs_roster``).
        """
        if self.reads_everything:
            return None
        if self.team_bound:
            if scope == f"t:{self.team_id}":
                return None
            if scope.startswith("m:") and scope[2:] in team_managers:
                return None
            return (
                f"{self.describe()} may not read {scope}: it reads only t:{self.team_id} "
                "and the managers seen with that team"
            )
        if self.manager_id is not None and scope == f"m:{self.manager_id}":
            return None
        return f"{self.describe()} may not read {scope}: it reads only m:{self.manager_id}"

    def action_denial(self, action: Action) -> str | None:
        """Why this principal may not take the action; None if it may."""
        if action in ROLE_ACTIONS[self.role]:
            if action is not Action.ALERT_RULES_READ or self.reads_everything:
                return None
            return f"{self.describe()} may not {action.value}: they concern any scope, and it does not read them all"
        writes = [a.value for a in Action if a in ROLE_ACTIONS[self.role] and a is not Action.ALERT_RULES_READ]
        may = f"; it may {', '.join(writes)}" if writes else "; it is read-only"
        return f"{self.describe()} may not {action.value}{may}"

    def may(self, action: Action) -> bool:
        return self.action_denial(action) is None

    def allowed_scopes(self, team_managers: Collection[str] = ()) -> list[str] | None:
        """The scope tokens this principal may read now (None: every scope, also those seen later)."""
        if self.reads_everything:
            return None
        if self.team_bound:
            return [f"t:{self.team_id}", *(f"m:{manager}" for manager in sorted(team_managers))]
        return [f"m:{self.manager_id}"]


def alert_scopes(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """The scope tokens an alert entry concerns (an alert history entry or an active alert, as the
    alerts worker writes them): whoever reads one of them sees the entry.

    A KPI alert concerns its series' scope (``scope``, or the ``scope`` label of an active alert); a
    deal alert (scope ``deal:<id>``) the manager and the team of its ``manager`` and ``team``
    labels. An entry that names neither concerns the company: a notification (it groups alerts of
    any scope), or a deal alert recorded without its labels (its rule was removed).
    """
    labels = entry.get("labels")
    if not isinstance(labels, Mapping):
        labels = {}
    scope = entry.get("scope") or labels.get("scope")
    if isinstance(scope, str) and (scope == COMPANY_SCOPE or scope.startswith(("m:", "t:"))):
        return (scope,)
    owners = tuple(
        f"{code}:{owner}"
        for code, label in (("m", "manager"), ("t", "team"))
        if isinstance(owner := labels.get(label), str) and owner
    )
    return owners or (COMPANY_SCOPE,)


def check_binding(role: Role, team_id: str | None, manager_id: str | None) -> None:
    """A team lead needs a team, a manager a manager id, a display at most a team; the others neither."""
    if team_id == "" or manager_id == "":
        raise InvalidPrincipal("team_id and manager_id cannot be empty")
    needs_team = role is Role.TEAM_LEAD
    may_team = role in (Role.TEAM_LEAD, Role.DISPLAY)
    needs_manager = role is Role.MANAGER
    if needs_team and not team_id:
        raise InvalidPrincipal("a team_lead token needs the team it leads (team_id)")
    if team_id is not None and not may_team:
        raise InvalidPrincipal(f"a {role.value} token is not bound to a team; only team_lead and display take team_id")
    if needs_manager and not manager_id:
        raise InvalidPrincipal("a manager token needs the manager it belongs to (manager_id)")
    if manager_id is not None and not needs_manager:
        raise InvalidPrincipal(f"a {role.value} token is not bound to a manager; give manager_id only to manager")


def generate_token() -> str:
    """A new secret token: the recognizable prefix and 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """The SHA-256 of a token, hex: what is stored. Tokens carry 256 random bits, so a plain
    hash (no salt, no slow KDF) cannot be reversed by guessing."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_id_of(token_hash: str) -> str:
    return token_hash[:TOKEN_ID_CHARS]
