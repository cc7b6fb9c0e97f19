"""`hub demo`: a full federated validation study on loopback, on the tiny model and three synthetic centers."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import shutil
import signal
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

from hub.demo.loopback import LoopbackFederation, render_protocol
from hub.home import HubHome
from hub.launcher import launch
from hub.report import export_adapter, report
from protocols.model_ref import manifest_hash
from protocols.procs import port_open, wait_for

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


# Shift grows from the first to the last center; none matches the model's warm-up domain. Twelve videos a center:
# at six, a center's case mix (how many frames of each action or triplet it happens to hold) set the order of the
# action and triplet results rather than the shift (README: calibration).
SITES = (
    DemoSite("lakeside-university", 0.2, 11, videos=12),
    DemoSite("mercy-general", 0.5, 22, videos=12),
    DemoSite("st-elsewhere", 0.8, 33, videos=12),
)
# The fine-tuning and GRPO demos' centers: their first six videos. Those demos compare each center with itself
# round after round, and they evaluate every round: twelve videos would double their time.
TRAINING_SITES = tuple(replace(site, videos=6) for site in SITES)
# Together these formats feed all five tasks (coco and csv would add the same videos again).
DEMO_FORMATS = ("cholec80", "cholect50", "endoscapes")
# Fine-tuning: the least and the most shifted centers train; the held-out center's shift lies between theirs.
TRAINERS = ("lakeside-university", "st-elsewhere")


def cache_root() -> Path:
    return Path(os.environ.get("SURGFED_CACHE", Path.cwd() / ".cache")).resolve() / "models"


def run_demo(
    out: Path,
    *,
    mode: str = "evaluate",
    insecure: bool = False,
    sites: tuple[DemoSite, ...] | None = None,
    keep_serving: bool = False,
) -> Path:
    """Synthesise, ingest, serve, launch, report; every process started here is stopped, also on Ctrl-C or failure.

    `sites`: SITES for the evaluation study, TRAINING_SITES for the fine-tuning and GRPO ones, unless given.
    `keep_serving`: after the report, keep the federation up and print a console login link for the first site.
    """
    if sites is None:
        sites = SITES if mode == "evaluate" else TRAINING_SITES
    out = Path(out).resolve()
    run = out / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    study_id, template = STUDIES[mode]
    formats = DEMO_FORMATS if mode == "evaluate" else ("cholec80",)
    # Before the federation starts: they are most of a first demo's time. The model's warm-up trains on one thread,
    # so it is built beside the videos, which leave a core idle once fewer sites than cores are left to write.
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        model = pool.submit(_tiny_model)
        raw_root = cached_sources(sites, formats)
        model.result()
    with LoopbackFederation(run, insecure=insecure) as fed:
        hub, protocol = start_study_sites(fed, template, sites, formats, raw_root=raw_root)
        launch_id = launch(hub, protocol)
        report_dir = out / "report"
        shutil.rmtree(report_dir, ignore_errors=True)
        report(hub, study_id, report_dir)
        if mode in ("finetune", "grpo"):
            export_adapter(hub.store().adapters(launch_id)[-1], out / "global-adapter")
        if keep_serving:
            _keep_serving(fed, sites[0].name, report_dir)
    return report_dir


def _tiny_model() -> Path:
    from site_node.synthetic.tiny_model import ensure_tiny_model

    return ensure_tiny_model(cache_root())


def start_study_sites(
    fed: LoopbackFederation,
    template: str,
    sites: tuple[DemoSite, ...],
    formats: tuple[str, ...],
    keys_from: Path | None = None,
    raw_root: Path | None = None,
    deadline: str | None = None,
) -> tuple[HubHome, Path]:
    """Start the hub, write the study from `template`, and start every site with its synthetic data ingested.

    `keys_from`: another run's folder whose sites' pseudonym keys to reuse and `raw_root`: the synthetic source
    folders both runs ingest (made once), so that both give their videos the same pseudonyms (keyed on the key and
    the source path; the bootstrap resamples videos in pseudonym order) and release the same numbers.
    `deadline`: the round deadline instead of the template's (e.g. "30m").
    """
    from site_node.approvals import approve
    from site_node.home import SiteHome
    from site_node.ingest import ingest

    model_dir = _tiny_model()
    hub = fed.start_hub()
    protocol = render_protocol(
        fed.run_dir / "study.yaml",
        template,
        sites=[s.name for s in sites],
        trainers=list(TRAINERS),
        model_sha256=manifest_hash(model_dir),
    )
    if deadline:
        text = protocol.read_text(encoding="utf-8")
        protocol.write_text(re.sub(r"(?m)^(\s+deadline: )\S+", rf"\g<1>{deadline}", text, count=1), encoding="utf-8")
    raws = {site.name: (raw_root or fed.run_dir / "raw") / site.name for site in sites}
    made = synthesize_sites(
        [(raws[s.name], s) for s in sites if raw_root is None or not (raws[s.name] / "cholec80").is_dir()], formats
    )
    for site in sites:
        folders = made.get(site.name) or {fmt: raws[site.name] / fmt for fmt in formats}  # or made by a first run
        home = SiteHome(fed.site_home(site.name, model_dir))
        if keys_from is not None:
            shutil.copyfile(SiteHome(keys_from / "sites" / site.name).key_file, home.key_file)
        for fmt in formats:
            # Synthetic scenes hold no room footage, and their organ colours are deliberately not tissue
            # colours, which the colour heuristic would read as out-of-body: the site declares it.
            ingest(home, folders[fmt], fmt, out_of_body="none", profile="demo")  # synthetic: no known device
        approve(home.approved_dir, protocol)
        fed.serve_site(site.name)
    return hub, protocol


def cached_sources(sites: tuple[DemoSite, ...], formats: tuple[str, ...], workers: int | None = None) -> Path:
    """The sites' synthetic source folders (`<root>/<site>/<format>`), written once per synthesis code, library
    versions, sites and formats, beside the tiny model's cache, and read (never changed) by every later demo:
    each site ingests a de-identified copy. `workers`: processes writing sites at once (default: one per core)."""
    target = cache_root().parent / "synthetic" / sources_key(sites, formats)
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=target.parent))
    try:
        synthesize_sites([(tmp / site.name, site) for site in sites], formats, workers)
        (tmp / ".complete").touch()
        try:
            os.rename(tmp, target)  # atomic: a demo never reads half-written sources
        except OSError:
            if not (target / ".complete").is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def sources_key(sites: tuple[DemoSite, ...], formats: tuple[str, ...]) -> str:
    """What shapes the synthetic sources: the synthesis code, the video and array libraries, the sites, formats."""
    import av
    import numpy

    from site_node import synthetic

    digest = hashlib.sha256(f"av={av.__version__} numpy={numpy.__version__} {sites!r} {formats!r}".encode())
    for source in sorted(Path(synthetic.__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()[:16]


def synthesize_sites(
    todo: list[tuple[Path, DemoSite]], formats: tuple[str, ...], workers: int | None = None
) -> dict[str, dict[str, Path]]:
    """Each site's synthetic source folders by format, the sites written in parallel (one process each, `workers`
    at a time, by default as many as there are cores): writing videos is most of a demo's start-up."""
    if not todo:
        return {}
    workers = min(len(todo), workers or os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {site.name: pool.submit(_synthesize, raw, site, formats) for raw, site in todo}
        return {name: future.result() for name, future in futures.items()}


def _synthesize(raw: Path, site: DemoSite, formats: tuple[str, ...]) -> dict[str, Path]:
    from site_node.synthetic.formats import synthesize_all
    from site_node.synthetic.videos import synthesize_site

    if formats == ("cholec80",):  # the videos and phase labels only: the other formats take time to write
        synthesize_site(raw / "cholec80", site.name, site.videos, site.shift, site.seed)
        return {"cholec80": raw / "cholec80"}
    return synthesize_all(raw, site.name, site.videos, site.shift, site.seed)


def _keep_serving(fed: LoopbackFederation, site: str, report_dir: Path) -> None:
    """Print the first site's console login link and wait for Ctrl-C (or SIGTERM)."""
    from site_node.console.commands import login_link
    from site_node.home import SiteHome

    home = SiteHome(fed.run_dir / "sites" / site)
    port = home.config().console_port
    wait_for(lambda: port_open("127.0.0.1", port), 60, f"the site console of {site}", fed.children.get(f"site:{site}"))
    print(f"demo report: {report_dir}")
    print(f"site console of {site} (the data owner's view; one-time link, valid 24 hours):")
    print(f"  {login_link(home, 'data-owner', 'owner')}")
    print(f"  more links: site_node console login --home {home.root}")
    print("the federation keeps running; Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping the demo federation")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
