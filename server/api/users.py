"""Users and their roles, managed by province administrators within their own subtree.

A grant may be given or taken only in an area where the caller holds ``user.manage``,
so a Cao Bằng administrator can appoint commune operators in Cao Bằng and nowhere else.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlmodel import Field, Session, SQLModel, col, delete, select

from server.api.deps import ClockDep, DbId, SessionDep
from server.audit.log import record_audit
from server.auth.deps import ActorDep, authorize, visible_areas
from server.auth.errors import AccountExists, AuthError
from server.auth.models import GrantBody, User, UserCreate, UserPublic, WebSession
from server.auth.permissions import Action, Role
from server.auth.service import add_grant, create_user, grants_of, remove_grant, user_public
from server.models import Area

router = APIRouter(prefix="/users", tags=["users"])


class UserUpdate(SQLModel):
    display_name: str | None = Field(default=None, max_length=200)
    is_active: bool | None = Field(
        default=None, description="False signs the user out everywhere and refuses sign-in"
    )


def read_user_or_404(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"user {user_id} does not exist")
    return user


def user_areas(session: Session, user: User) -> list[str] | None:
    """Where the user holds roles: managing them needs ``user.manage`` over all of it.

    None for a user without roles (any administrator may manage them).
    """
    assert user.id is not None
    return sorted({g.area_code for g in grants_of(session, user.id)}) or None


def _known_area_or_422(session: Session, code: str) -> None:
    if session.get(Area, code) is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"area_code {code!r} is not a known area"
        )


@router.get("", response_model=list[UserPublic])
def read_users(session: SessionDep, actor: ActorDep) -> list[UserPublic]:
    """Users with a role in the caller's subtree, and users without any role yet."""
    authorize(actor, Action.USER_MANAGE, None, session)
    scope = visible_areas(actor, Action.USER_MANAGE, session)
    users = [user_public(session, u) for u in session.exec(select(User).order_by(col(User.id)))]
    return [u for u in users if not u.grants or any(g.area_code in scope for g in u.grants)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UserPublic)
def create_user_route(
    body: UserCreate, session: SessionDep, actor: ActorDep, clock: ClockDep
) -> UserPublic:
    """Create a user, optionally with roles; without a password it can only use tokens."""
    for grant in body.grants:
        _known_area_or_422(session, grant.area_code)
    areas = [g.area_code for g in body.grants] or None
    authorize(
        actor, Action.USER_MANAGE, areas, session, object_type="user", object_id=body.username
    )
    now = clock()
    try:
        user = create_user(session, body.username, body.password, now, body.display_name)
        for grant in body.grants:
            add_grant(session, user, grant.role, grant.area_code, now)
    except AccountExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except AuthError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    after = {
        "username": user.username,
        "grants": [f"{g.role.value}@{g.area_code}" for g in body.grants],
        "service_account": body.password is None,
    }
    record_audit(session, actor, "user.create", "user", str(user.id), after=after)
    session.commit()
    session.refresh(user)
    return user_public(session, user)


@router.post("/{user_id}/grants", status_code=status.HTTP_201_CREATED, response_model=UserPublic)
def create_grant(
    user_id: DbId, body: GrantBody, session: SessionDep, actor: ActorDep, clock: ClockDep
) -> UserPublic:
    """Give the user a role in an area (and so in its whole subtree)."""
    authorize(actor, Action.USER_MANAGE, None, session)
    user = read_user_or_404(session, user_id)
    _known_area_or_422(session, body.area_code)
    authorize(
        actor,
        Action.USER_MANAGE,
        [body.area_code],
        session,
        object_type="user",
        object_id=str(user_id),
    )
    if add_grant(session, user, body.role, body.area_code, clock()):
        record_audit(
            session,
            actor,
            "user.grant",
            "user",
            str(user_id),
            after={"grant": f"{body.role.value}@{body.area_code}"},
        )
        session.commit()
    return user_public(session, user)


@router.delete("/{user_id}/grants", response_model=UserPublic)
def delete_grant(
    user_id: DbId, role: Role, area_code: str, session: SessionDep, actor: ActorDep
) -> UserPublic:
    authorize(actor, Action.USER_MANAGE, None, session)
    user = read_user_or_404(session, user_id)
    authorize(
        actor,
        Action.USER_MANAGE,
        [area_code],
        session,
        object_type="user",
        object_id=str(user_id),
    )
    if not remove_grant(session, user, role, area_code):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"user {user_id} has no role {role.value} in {area_code!r}"
        )
    record_audit(
        session,
        actor,
        "user.revoke_grant",
        "user",
        str(user_id),
        before={"grant": f"{role.value}@{area_code}"},
    )
    session.commit()
    return user_public(session, user)


@router.patch("/{user_id}", response_model=UserPublic)
def update_user(
    user_id: DbId, body: UserUpdate, session: SessionDep, actor: ActorDep
) -> UserPublic:
    """Rename or (de)activate a user; needs ``user.manage`` wherever the user has roles."""
    authorize(actor, Action.USER_MANAGE, None, session)
    user = read_user_or_404(session, user_id)
    authorize(
        actor,
        Action.USER_MANAGE,
        user_areas(session, user),
        session,
        object_type="user",
        object_id=str(user_id),
    )
    if body.is_active is False and user.id == actor.user_id:
        # Locking oneself out can leave a province with no administrator.
        raise HTTPException(
            status.HTTP_409_CONFLICT, "you cannot deactivate your own account; ask another admin"
        )
    before = {"display_name": user.display_name, "is_active": user.is_active}
    if body.display_name is not None:
        user.display_name = body.display_name
    if body.is_active is not None:
        user.is_active = body.is_active
        if not body.is_active:
            session.exec(delete(WebSession).where(col(WebSession.user_id) == user_id))
    session.add(user)
    after = {"display_name": user.display_name, "is_active": user.is_active}
    record_audit(session, actor, "user.update", "user", str(user_id), before=before, after=after)
    session.commit()
    session.refresh(user)
    return user_public(session, user)
