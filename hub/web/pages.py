"""Server-rendered pages: studies list, study page (live grid, per-center table, forest plots), sites."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from hub.report import per_center
from hub.web import actions, views
from hub.web.api import home_of
from hub.web.auth import Coordinator, Viewer, accounts
from hub.web.reportfiles import FIGURE, figures, report_dir
from protocols.errors import SurgFedError
from reports import POOLED

templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
# A protocol comes as an uploaded study file or as the path of one on the hub.
Upload = Annotated[UploadFile | None, File(description="the study protocol YAML")]
PathField = Annotated[str | None, Form(description="or the path of a protocol file on the hub")]
router = APIRouter(include_in_schema=False)


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


@router.get("/", response_class=HTMLResponse)
def studies_page(request: Request, user: Viewer) -> HTMLResponse:
    return render(request, "studies.html", user=user, studies=views.studies(home_of(request)))


@router.post("/studies")
async def launch_from_page(
    request: Request,
    user: Coordinator,
    protocol: Upload = None,
    protocol_path: PathField = None,
) -> RedirectResponse:
    upload = await protocol.read() if protocol is not None else None
    launch_id = actions.launch(home_of(request), accounts(request), user, upload, protocol_path)
    study_id = home_of(request).store().launch(launch_id)["study_id"]
    return RedirectResponse(f"/studies/{study_id}", status_code=303)


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(request: Request, study_id: str, user: Viewer) -> HTMLResponse:
    home = home_of(request)
    grid = views.grid(home, study_id)
    table, plots, missing = None, [], None
    try:
        table = views.headline_rows(views.json_rows(per_center(home, study_id)))
        plots = figures(report_dir(home, study_id))
    except SurgFedError as exc:  # no finished launch or no results yet: the page says so
        missing = str(exc) if grid["final"] else "Results appear here once the sites' numbers are stored."
    return render(
        request,
        "study.html",
        user=user,
        study=home.store().study(study_id),
        grid=grid,
        table=table,
        figures=plots,
        missing=missing,
        pooled=POOLED,
    )


@router.get("/studies/{study_id}/figures/{name}")
def figure(request: Request, study_id: str, name: str, user: Viewer) -> FileResponse:
    if not FIGURE.fullmatch(name):
        raise HTTPException(404, f"no figure {name!r}")
    return FileResponse(report_dir(home_of(request), study_id) / name, media_type="image/svg+xml")


@router.post("/studies/{study_id}/cancel")
def cancel_from_page(request: Request, study_id: str, user: Coordinator) -> RedirectResponse:
    actions.cancel(home_of(request), accounts(request), user, study_id)
    return RedirectResponse(f"/studies/{study_id}", status_code=303)


@router.get("/sites", response_class=HTMLResponse)
def sites_page(request: Request, user: Viewer) -> HTMLResponse:
    return render(request, "sites.html", user=user, sites=views.sites(home_of(request)))


@router.get("/signed-out", response_class=HTMLResponse)
def signed_out(request: Request) -> HTMLResponse:
    return render(request, "message.html", user=None, title="Signed out", message="You are signed out.")


@router.get("/favicon.ico")
def favicon() -> Response:
    return RedirectResponse("/static/favicon.svg", status_code=301)
