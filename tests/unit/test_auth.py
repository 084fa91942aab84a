"""The pure access-control rules of services/auth.py: every role against every kind of scope and action."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.auth import (
    TOKEN_PREFIX,
    Action,
    InvalidPrincipal,
    Principal,
    Role,
    alert_scopes,
    generate_token,
    hash_token,
    token_id_of,
)

ROSTER = ("alice", "bob")  # the managers seen with team-01
ADMIN = Principal(Role.ADMIN, "root")
DIRECTOR = Principal(Role.DIRECTOR, "dora")
LEAD = Principal(Role.TEAM_LEAD, "lena", team_id="team-01")
MANAGER = Principal(Role.MANAGER, "alice", manager_id="alice")
WALL = Principal(Role.DISPLAY, "lobby")
TEAM_WALL = Principal(Role.DISPLAY, "team wall", team_id="team-01")

SCOPES = ("c", "t:team-01", "t:team-02", "m:alice", "m:bob", "m:carol")
READS: dict[Principal, set[str]] = {
    ADMIN: set(SCOPES),
    DIRECTOR: set(SCOPES),
    WALL: set(SCOPES),
    LEAD: {"t:team-01", "m:alice", "m:bob"},
    TEAM_WALL: {"t:team-01", "m:alice", "m:bob"},
    MANAGER: {"m:alice"},
}
ACTIONS: dict[Principal, set[Action]] = {
    ADMIN: set(Action),
    DIRECTOR: {Action.INGEST, Action.QUOTAS, Action.ALERT_RULES_READ, Action.ALERTS_WRITE},
    WALL: {Action.ALERT_RULES_READ},
    LEAD: set(),
    TEAM_WALL: set(),
    MANAGER: set(),
}


@pytest.mark.parametrize("principal", list(READS), ids=lambda p: p.describe())
@pytest.mark.parametrize("scope", SCOPES)
def test_every_role_reads_exactly_its_scopes(principal: Principal, scope: str) -> None:
    denial = principal.read_denial(scope, ROSTER)

    if scope in READS[principal]:
        assert denial is None
    else:
        assert denial is not None
        assert scope in denial  # says which scope...
        assert principal.role.value in denial  # ...and which role
        assert "may not read" in denial


@pytest.mark.parametrize("principal", list(ACTIONS), ids=lambda p: p.describe())
@pytest.mark.parametrize("action", list(Action))
def test_every_role_takes_exactly_its_actions(principal: Principal, action: Action) -> None:
    denial = principal.action_denial(action)

    assert (denial is None) == (action in ACTIONS[principal])
    assert principal.may(action) == (action in ACTIONS[principal])
    if denial is not None:
        assert action.value in denial
        assert principal.role.value in denial


def test_a_display_never_writes() -> None:
    for display in (WALL, TEAM_WALL):
        assert [action for action in Action if display.may(action) and action is not Action.ALERT_RULES_READ] == []


def test_a_team_lead_reads_a_manager_only_while_seen_with_the_team() -> None:
    assert LEAD.needs_roster("m:carol")
    assert not LEAD.needs_roster("t:team-01")
    assert not DIRECTOR.needs_roster("m:carol")
    assert LEAD.read_denial("m:carol", ROSTER) is not None
    assert LEAD.read_denial("m:carol", (*ROSTER, "carol")) is None


def test_scopes_that_look_alike_are_not_confused() -> None:
    assert LEAD.read_denial("t:team-011", ROSTER) is not None
    assert LEAD.read_denial("t:team-0", ROSTER) is not None
    assert MANAGER.read_denial("m:alice2") is not None
    assert MANAGER.read_denial("m:") is not None
    assert LEAD.read_denial("m:", ROSTER) is not None


def test_allowed_scopes_for_a_star_subscription() -> None:
    assert ADMIN.allowed_scopes(ROSTER) is None
    assert WALL.allowed_scopes() is None
    assert LEAD.allowed_scopes(("bob", "alice")) == ["t:team-01", "m:alice", "m:bob"]
    assert TEAM_WALL.allowed_scopes(()) == ["t:team-01"]
    assert MANAGER.allowed_scopes(ROSTER) == ["m:alice"]


def test_a_team_wall_does_not_read_alert_rules_which_concern_any_scope() -> None:
    denial = TEAM_WALL.action_denial(Action.ALERT_RULES_READ)

    assert denial is not None
    assert "any scope" in denial


@pytest.mark.parametrize(
    ("entry", "scopes"),
    [
        ({"kind": "state", "scope": "t:team-01", "labels": {"team": "team-02"}}, ("t:team-01",)),
        ({"kind": "state", "scope": "m:alice"}, ("m:alice",)),
        ({"kind": "state", "scope": "c"}, ("c",)),
        ({"state": "firing", "labels": {"scope": "m:bob", "manager": "bob"}}, ("m:bob",)),  # an active alert
        (
            {"kind": "state", "scope": "deal:d1", "labels": {"manager": "carol", "team": "team-01"}},
            ("m:carol", "t:team-01"),
        ),
        ({"kind": "state", "scope": "deal:d2", "labels": {"manager": "carol"}}, ("m:carol",)),
        ({"kind": "state", "scope": "deal:d3", "reason": "rule_removed"}, ("c",)),
        ({"kind": "notification", "firing": ["f1", "f2"]}, ("c",)),
    ],
)
def test_an_alert_concerns_its_scope_or_the_owners_of_its_deal(
    entry: dict[str, object], scopes: tuple[str, ...]
) -> None:
    assert alert_scopes(entry) == scopes


@pytest.mark.parametrize(
    ("role", "team_id", "manager_id", "message"),
    [
        (Role.TEAM_LEAD, None, None, "needs the team"),
        (Role.MANAGER, None, None, "needs the manager"),
        (Role.ADMIN, "team-01", None, "not bound to a team"),
        (Role.DIRECTOR, None, "alice", "not bound to a manager"),
        (Role.MANAGER, "team-01", "alice", "not bound to a team"),
        (Role.DISPLAY, None, "alice", "not bound to a manager"),
        (Role.TEAM_LEAD, "", None, "cannot be empty"),
    ],
)
def test_a_role_must_fit_its_binding(role: Role, team_id: str | None, manager_id: str | None, message: str) -> None:
    with pytest.raises(InvalidPrincipal, match=message):
        Principal(role, "someone", team_id=team_id, manager_id=manager_id)


def test_describe_names_role_and_binding() -> None:
    assert LEAD.describe() == "team_lead 'lena' (team team-01)"
    assert MANAGER.describe() == "manager 'alice' (manager alice)"
    assert WALL.describe() == "display 'lobby' (company)"
    assert ADMIN.describe() == "admin 'root'"


def test_tokens_are_prefixed_random_and_hashed() -> None:
    tokens = {generate_token() for _ in range(100)}

    assert len(tokens) == 100
    for token in tokens:
        assert re.fullmatch(rf"{TOKEN_PREFIX}[A-Za-z0-9_-]{{43}}", token)
        digest = hash_token(token)
        assert re.fullmatch(r"[0-9a-f]{64}", digest)
        assert token not in digest
        assert token_id_of(digest) == digest[:12]


@given(st.text(min_size=1), st.text(min_size=1))
def test_hashes_differ_for_different_tokens(first: str, second: str) -> None:
    assert (hash_token(first) == hash_token(second)) == (first == second)
