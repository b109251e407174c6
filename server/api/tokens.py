"""API tokens for systems (the province's CAP sender, scripts): issue, list, revoke.

A token acts with its user's roles, so a system gets exactly the rights of the service
account it was issued for, and revoking the user's role narrows the token at once.
Issuing or revoking needs ``token.manage`` wherever that user holds a role.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException, status
from sqlmodel import Session, col, select

from server.api.deps import ClockDep, DbId, SessionDep
from server.api.users import read_user_or_404, user_areas
from server.audit.log import record_audit
from server.auth.actor import Actor
from server.auth.deps import ActorDep, authorize, visible_areas
from server.auth.models import ApiToken, TokenCreate, TokenIssued, TokenPublic, User
from server.auth.permissions import Action
from server.auth.service import issue_token

router = APIRouter(prefix="/tokens", tags=["tokens"])


def _authorize_for_user(session: Session, actor: Actor, user: User, object_id: str) -> None:
    authorize(
        actor,
        Action.TOKEN_MANAGE,
        user_areas(session, user),
        session,
        object_type="token",
        object_id=object_id,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TokenIssued)
def create_token(
    body: TokenCreate, session: SessionDep, actor: ActorDep, clock: ClockDep
) -> TokenIssued:
    """Issue a token for ``user_id`` (default: yourself). The token is shown only here."""
    authorize(actor, Action.TOKEN_MANAGE, None, session)
    user_id = body.user_id if body.user_id is not None else actor.user_id
    if user_id is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "user_id: give the token's user")
    user = read_user_or_404(session, user_id)
    _authorize_for_user(session, actor, user, f"user {user_id}")
    now = clock()
    expires_at = now + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    token, raw = issue_token(session, user, body.name, now, expires_at)
    record_audit(
        session,
        actor,
        "token.create",
        "token",
        str(token.id),
        after={"name": body.name, "user": user.username, "expires_at": expires_at},
    )
    session.commit()
    session.refresh(token)
    return TokenIssued(**TokenPublic.model_validate(token).model_dump(), token=raw)


@router.get("", response_model=list[TokenPublic])
def read_tokens(session: SessionDep, actor: ActorDep) -> list[ApiToken]:
    """Tokens of the users the caller may issue tokens for."""
    authorize(actor, Action.TOKEN_MANAGE, None, session)
    scope = visible_areas(actor, Action.TOKEN_MANAGE, session)
    visible: list[ApiToken] = []
    for token in session.exec(select(ApiToken).order_by(col(ApiToken.id))):
        owner = session.get(User, token.user_id)
        areas = user_areas(session, owner) if owner is not None else None
        if areas is None or set(areas) <= scope:
            visible.append(token)
    return visible


@router.delete("/{token_id}", response_model=TokenPublic)
def revoke_token(token_id: DbId, session: SessionDep, actor: ActorDep, clock: ClockDep) -> ApiToken:
    """Revoke at once: the next request with it gets 401."""
    authorize(actor, Action.TOKEN_MANAGE, None, session)
    token = session.get(ApiToken, token_id)
    if token is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"token {token_id} does not exist")
    _authorize_for_user(session, actor, read_user_or_404(session, token.user_id), str(token_id))
    if token.revoked_at is None:
        token.revoked_at = clock()
        session.add(token)
        record_audit(
            session, actor, "token.revoke", "token", str(token_id), before={"name": token.name}
        )
        session.commit()
        session.refresh(token)
    return token
