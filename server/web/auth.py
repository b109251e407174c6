"""Sign-in, sign-out and the language switch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server.api.auth import set_session_cookie, sign_in, sign_out
from server.api.deps import ContextDep, SessionDep
from server.auth.deps import LimiterDep, check_csrf
from server.auth.models import LoginBody, User
from server.auth.service import SESSION_COOKIE, session_user
from server.i18n import LANGUAGE_COOKIE, LANGUAGES, current_language, gettext, pick_language
from server.web.common import PageActorDep, PageRoute, render, safe_next

router = APIRouter(route_class=PageRoute)

LANGUAGE_COOKIE_DAYS = 400


def in_my_language(detail: str) -> str:
    """The auth layer answers ``"Vietnamese / English"``: keep the reader's half."""
    if " / " not in detail:
        return detail
    vi, en = detail.split(" / ", 1)
    return en if current_language() == "en" else vi


def _login_form(
    request: Request,
    next_path: str,
    username: str = "",
    errors: dict[str, str] | None = None,
    code: int = 200,
) -> HTMLResponse:
    context = {"next": safe_next(next_path), "username": username, "errors": errors or {}}
    return render(request, "login.html", context, status_code=code)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return _login_form(request, next)


@router.post("/login", response_class=HTMLResponse)
def login_submit(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    limiter: LimiterDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    totp: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    errors: dict[str, str] = {}
    if not username.strip():
        errors["username"] = gettext("Enter your username.")
    if not password:
        errors["password"] = gettext("Enter your password.")
    if errors:
        return _login_form(request, next, username, errors, status.HTTP_422_UNPROCESSABLE_CONTENT)
    body = LoginBody(username=username[:200], password=password[:1024], totp=totp[:12] or None)
    try:
        user, raw = sign_in(request, session, context, limiter, body)
    except HTTPException as exc:
        field = "totp" if "TOTP" in str(exc.detail) or "one-time" in str(exc.detail) else "form"
        errors = {field: in_my_language(str(exc.detail))}
        return _login_form(request, next, username, errors, exc.status_code)
    response = RedirectResponse(safe_next(next), status.HTTP_303_SEE_OTHER)
    set_session_cookie(response, raw, context)
    if user.language in LANGUAGES:  # their own choice follows them to any phone
        _remember_language(response, user.language)
    elif request.cookies.get(LANGUAGE_COOKIE) in LANGUAGES:  # chosen on the sign-in page
        user.language = request.cookies[LANGUAGE_COOKIE]
        session.add(user)
        session.commit()
    return response


@router.post("/logout")
def logout_submit(request: Request, session: SessionDep, actor: PageActorDep) -> RedirectResponse:
    sign_out(request, session, actor)
    response = RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _remember_language(response: Response, lang: str) -> None:
    response.set_cookie(
        LANGUAGE_COOKIE,
        pick_language(lang),
        max_age=LANGUAGE_COOKIE_DAYS * 86400,
        path="/",
        samesite="lax",
    )


@router.post("/language")
def choose_language(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    lang: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
) -> RedirectResponse:
    """Remember the reader's language: on their account when signed in (so it follows
    them to another phone at the next sign-in), and in a cookie (works before, too)."""
    chosen = pick_language(lang)
    response = RedirectResponse(safe_next(next), status.HTTP_303_SEE_OTHER)
    _remember_language(response, chosen)
    raw = request.cookies.get(SESSION_COOKIE)
    signed_in = session_user(session, raw, context.settings, context.clock()) if raw else None
    try:
        check_csrf(request, context.settings)  # a change to the account: same-site forms only
    except HTTPException:
        signed_in = None
    if isinstance(signed_in, User) and signed_in.language != chosen:
        signed_in.language = chosen
        session.add(signed_in)
        session.commit()
    return response
