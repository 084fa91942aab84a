"""API tokens: create, list, revoke (admins only; docs/access.md). Only their SHA-256 is stored."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, status
from pydantic import BaseModel, Field

from dashboard_api.auth import AccessDep, require
from dashboard_api.dependencies import NowDep
from dashboard_api.models import ErrorDetail
from services.auth import Action, InvalidPrincipal, Role, TokenNotFound
from services.token_store import MAX_NAME_CHARS, TokenRecord

router = APIRouter(prefix="/tokens", tags=["tokens"], dependencies=[Depends(require(Action.TOKENS))])


class TokenRequest(BaseModel):
    """A token to create: who holds it, its role, and the team or manager it is bound to."""

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS, examples=["lobby wall"])
    role: Role
    team_id: str | None = Field(None, description="team_lead: the team; display: the team shown (none: company)")
    manager_id: str | None = Field(None, description="manager: the manager")


class CreatedToken(BaseModel):
    """The new token, shown this once (only its hash is kept), and its record."""

    token: str = Field(description="send as 'Authorization: Bearer <token>' or ?token=<token>; not shown again")
    record: TokenRecord


class TokenList(BaseModel):
    """Every token's record, oldest first (revoked ones included)."""

    tokens: list[TokenRecord]


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorDetail, "description": "no token has this id"}}


@router.post("", summary="Create an API token", status_code=status.HTTP_201_CREATED)
async def create_token(body: TokenRequest, access: AccessDep, now: NowDep) -> CreatedToken:
    """Create a token with a role (admin, director, team_lead with team_id, manager with manager_id, display
    with an optional team_id). The answer holds the token itself, which cannot be shown again."""
    try:
        token, record = await access.store.create(
            name=body.name, role=body.role, team_id=body.team_id, manager_id=body.manager_id, now=now
        )
    except (InvalidPrincipal, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    return CreatedToken(token=token, record=record)


@router.get("", summary="List API tokens")
async def list_tokens(access: AccessDep) -> TokenList:
    """Every token's record (never the token), revoked ones included, oldest first."""
    return TokenList(tokens=await access.store.list_tokens())


@router.delete("/{token_id}", summary="Revoke an API token", responses=NOT_FOUND)
async def revoke_token(
    token_id: Annotated[str, Path(min_length=1, max_length=64, description="the token's id (from the list)")],
    access: AccessDep,
    now: NowDep,
) -> TokenRecord:
    """Refuse the token from now on (its record stays, with revoked_at). Revoking twice is harmless."""
    try:
        return await access.store.revoke(token_id, now)
    except TokenNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
