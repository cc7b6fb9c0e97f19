"""The study report `hub report` writes, made once per launch and results snapshot, for the page and the zip."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import threading
import zipfile
from pathlib import Path

from hub.home import HubHome
from hub.report import latest_results, report

_LOCK = threading.Lock()  # matplotlib is not thread-safe and two requests must not write one folder
FIGURE = re.compile(r"forest_[A-Za-z0-9_]+\.svg")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def report_dir(home: HubHome, study_id: str) -> Path:
    """The report folder of the study's latest finished launch; rebuilt when its stored results change."""
    launch, frame = latest_results(home, study_id)
    key = hashlib.sha256(frame.to_csv(index=False).encode("utf-8")).hexdigest()[:12]
    out = home.root / "web" / "reports" / _safe(study_id) / f"{_safe(launch['launch_id'])}-{key}"
    with _LOCK:
        if not (out / ".complete").is_file():
            shutil.rmtree(out, ignore_errors=True)
            report(home, study_id, out)
            (out / ".complete").write_text(launch["launch_id"], encoding="utf-8")
    return out


def figures(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if FIGURE.fullmatch(p.name))


def zip_bytes(folder: Path, prefix: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                archive.write(path, f"{prefix}/{path.name}")
    return buffer.getvalue()
