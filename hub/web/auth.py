"""Sessions for the dashboard: the login-link route, the cookie, and the role checks every route depends on."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse

from hub.accounts import Accounts, User

COOKIE = "surgfed_session"

router = APIRouter()


def accounts(request: Request) -> Accounts:
    return request.app.state.accounts


def current_user(request: Request) -> User:
    user = accounts(request).session_user(request.cookies.get(COOKIE))
    if user is None:
        raise HTTPException(401, "not signed in: open the login link `hub users add` printed")
    return user


def coordinator(request: Request, user: Annotated[User, Depends(current_user)]) -> User:
    """Writes need the coordinator role and a same-origin request (the cookie is SameSite=Strict as well)."""
    if not user.can_write:
        raise HTTPException(403, f"user {user.name!r} is a {user.role.value}; only coordinators launch or cancel")
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, f"cross-origin write from {origin!r} refused")
    return user


Viewer = Annotated[User, Depends(current_user)]  # any signed-in user
Coordinator = Annotated[User, Depends(coordinator)]  # may launch and cancel


@router.get("/login", include_in_schema=False)
def login(request: Request, token: str) -> RedirectResponse:
    user, session = accounts(request).redeem(token)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE,
        session,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https",
        max_age=12 * 3600,
    )
    return response


@router.post("/logout", include_in_schema=False)
def logout(request: Request) -> RedirectResponse:
    session = request.cookies.get(COOKIE)
    user = accounts(request).session_user(session)
    if session and user:
        accounts(request).end_session(session)
        accounts(request).log(user.name, "logout", None, None)
    response = RedirectResponse("/signed-out", status_code=303)
    response.delete_cookie(COOKIE)
    return response
