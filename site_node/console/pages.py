"""Server-rendered console pages (Status, Data, De-identification, Protocols, Releases, Audit, Policy) and buttons."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from site_node.console import actions
from site_node.console.auth import Viewer, Writer, home_of
from site_node.console.status import human_bytes, site_status
from site_node.console.views_decisions import (
    audit_view,
    ledger_view,
    protocol_detail,
    protocols_view,
    releases_view,
    verify_result,
)
from site_node.console.views_site import data_view, deid_view, policy_view

templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
templates.env.filters["bytes"] = human_bytes
Note = Annotated[str, Form()]
router = APIRouter(include_in_schema=False)
MAX_ANCHORS_BYTES = 4 << 20


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("done", request.query_params.get("done"))
    return templates.TemplateResponse(request, name, context, status_code=status_code)


@router.get("/", response_class=HTMLResponse)
def status_page(request: Request, operator: Viewer) -> HTMLResponse:
    return render(request, "status.html", operator=operator, page="status", s=site_status(home_of(request)))


@router.get("/status.json")
def status_json(request: Request, operator: Viewer) -> JSONResponse:
    return JSONResponse(site_status(home_of(request)))


@router.get("/data", response_class=HTMLResponse)
def data_page(request: Request, operator: Viewer) -> HTMLResponse:
    return render(request, "data.html", operator=operator, page="data", d=data_view(home_of(request)))


@router.get("/deid", response_class=HTMLResponse)
def deid_page(request: Request, operator: Viewer) -> HTMLResponse:
    return render(request, "deid.html", operator=operator, page="deid", d=deid_view(home_of(request)))


@router.get("/protocols", response_class=HTMLResponse)
def protocols_page(request: Request, operator: Viewer) -> HTMLResponse:
    return render(request, "protocols.html", operator=operator, page="protocols", p=protocols_view(home_of(request)))


@router.get("/protocols/{content_hash}", response_class=HTMLResponse)
def protocol_page(request: Request, content_hash: str, operator: Viewer) -> HTMLResponse:
    detail = protocol_detail(home_of(request), content_hash)
    return render(request, "protocol.html", operator=operator, page="protocols", p=detail)


@router.post("/protocols/{content_hash}/approve")
def approve_protocol(request: Request, content_hash: str, operator: Writer, reason: Note = "") -> Response:
    study = actions.approve_protocol(home_of(request), operator, content_hash, force_reason=reason)
    return RedirectResponse(f"/protocols?done=approved+{study}", status_code=303)


@router.post("/protocols/{content_hash}/reject")
def reject_protocol(request: Request, content_hash: str, operator: Writer, note: Note = "") -> Response:
    actions.reject_protocol(home_of(request), operator, content_hash, note=note)
    return RedirectResponse("/protocols?done=rejected+the+request", status_code=303)


@router.get("/releases", response_class=HTMLResponse)
def releases_page(request: Request, operator: Viewer) -> HTMLResponse:
    return render(request, "releases.html", operator=operator, page="releases", r=releases_view(home_of(request)))


@router.post("/releases/{job_id}/approve")
def approve_release(request: Request, job_id: str, operator: Writer) -> Response:
    actions.decide_release(home_of(request), operator, job_id, approve=True)
    return RedirectResponse(f"/releases?done=released+{job_id}", status_code=303)


@router.post("/releases/{job_id}/reject")
def reject_release(request: Request, job_id: str, operator: Writer, note: Note = "") -> Response:
    actions.decide_release(home_of(request), operator, job_id, approve=False, note=note)
    return RedirectResponse(f"/releases?done=rejected+{job_id}", status_code=303)


def _audit(request: Request, operator: Any, event: str, q: str, anchors: dict[str, Any] | None) -> HTMLResponse:
    home = home_of(request)
    return render(
        request,
        "audit.html",
        operator=operator,
        page="audit",
        a=audit_view(home, event=event, text=q),
        ledger=ledger_view(home),
        anchors=anchors,
        event=event,
        q=q,
    )


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, operator: Viewer, event: str = "", q: str = "") -> HTMLResponse:
    return _audit(request, operator, event, q, None)


@router.post("/audit/anchors", response_class=HTMLResponse)
async def anchor_check(
    request: Request, operator: Viewer, anchors: Annotated[UploadFile, File(description="`hub sites anchors` file")]
) -> HTMLResponse:
    """`site_node audit verify --anchors FILE` on a file the hub exported, uploaded from the page."""
    data = await anchors.read(MAX_ANCHORS_BYTES + 1)
    if len(data) > MAX_ANCHORS_BYTES:
        result = {"ok": False, "text": f"anchors file over {MAX_ANCHORS_BYTES} bytes"}
    else:
        with tempfile.NamedTemporaryFile(suffix=".jsonl") as fh:
            fh.write(data)
            fh.flush()
            result = verify_result(home_of(request).audit_log, Path(fh.name))
    return _audit(request, operator, "", "", result)


@router.get("/policy", response_class=HTMLResponse)
def policy_page(request: Request, operator: Viewer) -> HTMLResponse:
    return render(request, "policy.html", operator=operator, page="policy", p=policy_view(home_of(request)))


@router.get("/signed-out", response_class=HTMLResponse)
def signed_out(request: Request) -> HTMLResponse:
    return render(request, "message.html", operator=None, title="Signed out", message="You are signed out.")


@router.get("/favicon.ico")
def favicon() -> Response:
    return RedirectResponse("/static/favicon.svg", status_code=301)
