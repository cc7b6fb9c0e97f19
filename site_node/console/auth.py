"""Console sessions: the login-link route, the cookie, and the checks every page and button depend on."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse

from site_node.audit import AuditLog
from site_node.console.accounts import ConsoleAccounts, Operator
from site_node.home import SiteHome

COOKIE = "surgfed_site_session"
router = APIRouter(include_in_schema=False)


def home_of(request: Request) -> SiteHome:
    home: SiteHome = request.app.state.home
    return home


def accounts(request: Request) -> ConsoleAccounts:
    return ConsoleAccounts(home_of(request).console_dir)


def current_operator(request: Request) -> Operator:
    operator = accounts(request).operator(request.cookies.get(COOKIE))
    if operator is None:
        raise HTTPException(401, "not signed in: open a link from `site_node console login`")
    return operator


def writer(request: Request, operator: Annotated[Operator, Depends(current_operator)]) -> Operator:
    """Decisions come from this console's own pages only (the cookie is SameSite=Strict as well)."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, f"cross-origin request from {origin!r} refused")
    return operator


Viewer = Annotated[Operator, Depends(current_operator)]
Writer = Annotated[Operator, Depends(writer)]


@router.get("/login")
def login(request: Request, token: str) -> RedirectResponse:
    operator, session = accounts(request).redeem(token)
    AuditLog(home_of(request).audit_log).append("console-login", operator=operator.name, role=operator.role.value)
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


@router.post("/logout")
def logout(request: Request) -> RedirectResponse:
    session = request.cookies.get(COOKIE)
    if session:
        accounts(request).end(session)
    response = RedirectResponse("/signed-out", status_code=303)
    response.delete_cookie(COOKIE)
    return response
