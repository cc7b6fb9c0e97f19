"""The versioned JSON API, /api/v1 (OpenAPI at /api/v1/openapi.json): studies, rounds, sites, results, report."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from hub.home import HubHome
from hub.report import per_center
from hub.web import actions, views
from hub.web.auth import Coordinator, Viewer, accounts
from hub.web.reportfiles import report_dir, zip_bytes

# A protocol comes as an uploaded study file or as the path of one on the hub.
Upload = Annotated[UploadFile | None, File(description="the study protocol YAML")]
PathField = Annotated[str | None, Form(description="or the path of a protocol file on the hub")]
router = APIRouter(prefix="/api/v1", tags=["v1"])


def home_of(request: Request) -> HubHome:
    return request.app.state.home


@router.get("/me")
def me(user: Viewer) -> dict[str, Any]:
    return {"name": user.name, "role": user.role.value}


@router.get("/studies")
def list_studies(request: Request, user: Viewer) -> list[dict[str, Any]]:
    return views.studies(home_of(request))


@router.post("/studies", status_code=201)
async def launch_study(
    request: Request,
    user: Coordinator,
    protocol: Upload = None,
    protocol_path: PathField = None,
) -> dict[str, Any]:
    """Register the study and queue a launch; a running `hub serve` starts it (state `pending` until then)."""
    upload = await protocol.read() if protocol is not None else None
    launch_id = actions.launch(home_of(request), accounts(request), user, upload, protocol_path)
    study_id = home_of(request).store().launch(launch_id)["study_id"]
    return {"study_id": study_id, "launch_id": launch_id, "state": "pending"}


@router.get("/studies/{study_id}")
def study(request: Request, study_id: str, user: Viewer) -> dict[str, Any]:
    store = home_of(request).store()
    row = store.study(study_id)
    return {
        **{k: row[k] for k in ("study_id", "title", "version", "protocol_hash", "model_hash", "created_at")},
        "launches": store.launches_of(study_id),
    }


@router.get("/studies/{study_id}/rounds")
def rounds(request: Request, study_id: str, user: Viewer) -> dict[str, Any]:
    """The latest launch as rounds x sites, each cell with its jobs' states (what the study page polls)."""
    return views.grid(home_of(request), study_id)


@router.post("/studies/{study_id}/cancel")
def cancel(request: Request, study_id: str, user: Coordinator) -> dict[str, Any]:
    return {"study_id": study_id, "cancelled": actions.cancel(home_of(request), accounts(request), user, study_id)}


class Extension(BaseModel):
    by: str = Field(description="how much later the round's deadline moves: 14d, 36h or 90m")


class Rerun(BaseModel):
    sites: list[str] = Field(description="missing, absent or failed sites (never one whose result is stored)")
    by: str | None = Field(None, description="the reopened round's deadline from now (default: the protocol's)")


@router.post("/studies/{study_id}/rounds/{round_}/extend")
def extend(request: Request, study_id: str, round_: int, body: Extension, user: Coordinator) -> dict[str, Any]:
    deadlines = actions.extend(home_of(request), accounts(request), user, study_id, round_, body.by)
    return {"study_id": study_id, "round": round_, "deadlines": deadlines}


@router.post("/studies/{study_id}/rounds/{round_}/rerun")
def rerun(request: Request, study_id: str, round_: int, body: Rerun, user: Coordinator) -> dict[str, Any]:
    """Ask sites of an ended round again; `hub serve` runs the reopened round (a stored result is refused, 400)."""
    asked = actions.rerun(home_of(request), accounts(request), user, study_id, round_, body.sites, body.by)
    return {"study_id": study_id, "round": round_, "jobs": asked}


@router.get("/studies/{study_id}/results")
def results(request: Request, study_id: str, user: Viewer, round: int | None = None) -> dict[str, Any]:
    """The per_center.csv rows of the latest finished launch: center rows and a pooled row per metric."""
    home_of(request).store().study(study_id)  # an unknown id is a 404 naming the known ones
    frame = per_center(home_of(request), study_id, round_=round)
    return {"study_id": study_id, "columns": [str(c) for c in frame.columns], "rows": views.json_rows(frame)}


@router.get("/studies/{study_id}/report.zip", response_class=Response)
def report_zip(request: Request, study_id: str, user: Viewer) -> Response:
    home_of(request).store().study(study_id)
    folder = report_dir(home_of(request), study_id)
    return Response(
        zip_bytes(folder, f"{study_id}-report"),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{study_id}-report.zip"'},
    )


@router.get("/sites")
def sites(request: Request, user: Viewer) -> list[dict[str, Any]]:
    return views.sites(home_of(request))
