"""Which series a rule watches, their labels, fingerprints and message templates (pure)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

import orjson

from services.schemas.alerts import Rule, ScopeSelector
from services.topics import SCOPE_CODES

_KIND_OF_CODE = {code: kind for kind, code in SCOPE_CODES.items()}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)?)\}")


def parse_scope(token: str) -> tuple[str, str]:
    """``m:ann`` -> ("manager", "ann"); ``t:north`` -> ("team", "north"); ``c`` -> ("company", "all")."""
    if token == "c":
        return "company", "all"
    code, _, scope_id = token.partition(":")
    return _KIND_OF_CODE.get(code, code), scope_id


def selects(selector: ScopeSelector, scope: str, team_members: Mapping[str, frozenset[str]]) -> bool:
    """Whether a scope token is one of the selector's series."""
    kind, scope_id = parse_scope(scope)
    if kind != selector.kind:
        return False
    if selector.ids and scope_id not in selector.ids:
        return False
    if selector.team is not None:
        return scope_id in team_members.get(selector.team, frozenset())
    return True


def series_key(rule_id: str, scope: str) -> str:
    return f"{rule_id}|{scope}"


def rule_labels(rule: Rule, scope: str, scope_kind: str) -> dict[str, str]:
    """The rule's labels, then those every alert of it has (these win)."""
    labels = dict(rule.labels)
    labels.update(
        alertname=rule.name, rule_id=rule.id, severity=rule.severity, kpi=rule.kpi, scope=scope, scope_kind=scope_kind
    )
    return labels


def series_labels(rule: Rule, scope: str) -> dict[str, str]:
    """The alert's labels: the rule's, then the ones that identify the series (these win)."""
    kind, scope_id = parse_scope(scope)
    labels = rule_labels(rule, scope, kind)
    labels["period"] = rule.period
    if kind in ("manager", "team"):
        labels[kind] = scope_id
    if rule.scope.team is not None:
        labels.setdefault("team", rule.scope.team)
    return dict(sorted(labels.items()))


def fingerprint(labels: Mapping[str, str]) -> str:
    """Stable identity of an alert: a hash of its sorted labels (as Alertmanager does)."""
    return hashlib.sha256(orjson.dumps(dict(sorted(labels.items())))).hexdigest()[:16]


def render(template: str, fields: Mapping[str, str], labels: Mapping[str, str]) -> str:
    """Fill ``{name}`` and ``{labels.name}`` placeholders; unknown ones stay as written (no code runs)."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("labels."):
            return labels.get(name[len("labels.") :], match.group(0))
        return fields.get(name, match.group(0))

    return _PLACEHOLDER.sub(fill, template)
