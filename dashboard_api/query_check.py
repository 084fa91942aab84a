"""Refuse query parameters a route does not take (422), so a typo or a wish is not silently ignored.

``GET /api/v1/kpis/managers/ann/series?days=3`` used to answer 30 days as if ``days`` meant
something; now it answers 422 naming ``days`` and the parameters the route does take.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from dashboard_api.auth import TOKEN_QUERY

_declared: dict[int, frozenset[str]] = {}
"""Query parameter names per route (by id: routes live as long as the app)."""


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def declared_query_parameters(route: APIRoute) -> frozenset[str]:
    """Every query parameter the route or its dependencies declare, by the name a client sends."""
    names = _declared.get(id(route))
    if names is None:
        names = frozenset(_query_names(route.dependant) | {TOKEN_QUERY})
        _declared[id(route)] = names
    return names


async def reject_unknown_query_parameters(request: Request) -> None:
    """A dependency: 422 for any query parameter the matched route does not declare."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    allowed = declared_query_parameters(route)
    unknown = [name for name in dict.fromkeys(request.query_params.keys()) if name not in allowed]
    if unknown:
        takes = ", ".join(sorted(allowed - {TOKEN_QUERY})) or "none"
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": f"unknown query parameter {name!r}; this path takes: {takes}",
                    "input": request.query_params.get(name),
                }
                for name in unknown
            ]
        )
