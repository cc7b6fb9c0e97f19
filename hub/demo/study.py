"""`hub demo`: a full federated validation study on loopback, on the tiny model and three synthetic centers."""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from hub.demo.loopback import LoopbackFederation, render_protocol
from hub.launcher import launch
from hub.report import export_adapter, report
from protocols.model_ref import manifest_hash

STUDIES = {
    "evaluate": ("demo-phase", "demo.yaml.tmpl"),
    "finetune": ("demo-finetune", "demo-finetune.yaml.tmpl"),
    "grpo": ("demo-grpo", "demo-grpo.yaml.tmpl"),
}


@dataclass(frozen=True)
class DemoSite:
    name: str
    shift: float
    seed: int
    videos: int = 6


# Shift grows from the first to the last center; none matches the model's warm-up domain.
SITES = (
    DemoSite("lakeside-university", 0.2, 11),
    DemoSite("mercy-general", 0.5, 22),
    DemoSite("st-elsewhere", 0.8, 33),
)
# Together these formats feed all five tasks (coco and csv would add the same videos again).
DEMO_FORMATS = ("cholec80", "cholect50", "endoscapes")
# Fine-tuning: the least and the most shifted centers train; the held-out center's shift lies between theirs.
TRAINERS = ("lakeside-university", "st-elsewhere")


def cache_root() -> Path:
    return Path(os.environ.get("SURGFED_CACHE", Path.cwd() / ".cache")).resolve() / "models"


def run_demo(out: Path, *, mode: str = "evaluate", insecure: bool = False, sites: tuple[DemoSite, ...] = SITES) -> Path:
    """Synthesise, ingest, serve, launch, report; every process started here is stopped, also on Ctrl-C or failure."""
    from site_node.approvals import approve
    from site_node.home import SiteHome
    from site_node.ingest import ingest
    from site_node.synthetic.formats import synthesize_all
    from site_node.synthetic.tiny_model import ensure_tiny_model

    out = Path(out).resolve()
    run = out / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    model_dir = ensure_tiny_model(cache_root())
    study_id, template = STUDIES[mode]
    with LoopbackFederation(run, insecure=insecure) as fed:
        hub = fed.start_hub()
        protocol = render_protocol(
            run / "study.yaml",
            template,
            sites=[s.name for s in sites],
            trainers=list(TRAINERS),
            model_sha256=manifest_hash(model_dir),
        )
        for site in sites:
            folders = synthesize_all(run / "raw" / site.name, site.name, site.videos, site.shift, site.seed)
            home = SiteHome(fed.site_home(site.name, model_dir))
            for fmt in DEMO_FORMATS if mode == "evaluate" else ("cholec80",):
                # Synthetic scenes hold no room footage, and their organ colours are deliberately not tissue
                # colours, which the colour heuristic would read as out-of-body: the site declares it.
                ingest(home, folders[fmt], fmt, out_of_body="none", profile="demo")  # synthetic: no known device
            approve(home.approved_dir, protocol)
            fed.serve_site(site.name)
        launch_id = launch(hub, protocol)
        report_dir = out / "report"
        shutil.rmtree(report_dir, ignore_errors=True)
        report(hub, study_id, report_dir)
        if mode in ("finetune", "grpo"):
            export_adapter(hub.store().adapters(launch_id)[-1], out / "global-adapter")
    return report_dir


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
