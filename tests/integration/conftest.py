"""One real federation on 127.0.0.1 with TLS and node authentication, shared by the integration tests."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from hub.demo import SITES, DemoSite
from hub.loopback import LoopbackFederation, render_protocol
from protocols.model_ref import manifest_hash


@dataclass
class Federation:
    fed: LoopbackFederation
    model_dir: Path
    run: Path
    sites: tuple[DemoSite, ...]
    broken: str
    small: str

    @property
    def hub(self):  # type: ignore[no-untyped-def]
        return self.fed.hub

    def protocol(self, name: str, sites: list[str], replace: dict[str, str] | None = None) -> Path:
        """A study file from the demo template, with the roster and optional text replacements."""
        path = render_protocol(self.run / f"{name}.yaml", "demo.yaml.tmpl", sites=sites,
                               model_sha256=manifest_hash(self.model_dir))
        text = path.read_text().replace("id: demo-phase", f"id: {name}")
        for old, new in (replace or {}).items():
            assert old in text, old
            text = text.replace(old, new)
        path.write_text(text)
        return path


@pytest.fixture(scope="session")
def federation(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """The demo's three centers (same seeds and shifts), a site with an empty store that fails on purpose,
    and a small site under manual release."""
    from site_node.home import SiteHome
    from site_node.ingest import ingest
    from site_node.synth import synthesize_site

    run = tmp_path_factory.mktemp("federation")
    with LoopbackFederation(run) as fed:
        fed.start_hub()
        for site in SITES:
            synthesize_site(run / "raw" / site.name, site.name, site.videos, site.shift, site.seed)
            ingest(SiteHome(fed.site_home(site.name, tiny_model_dir)), run / "raw" / site.name, "cholec80")
            fed.serve_site(site.name)
        broken = "empty-store"
        fed.site_home(broken, tiny_model_dir)
        fed.serve_site(broken)
        # Three videos (below the default minimum of five) and a data owner who approves each release.
        small = DemoSite("small-manual", 0.3, 44, videos=3)
        synthesize_site(run / "raw" / small.name, small.name, small.videos, small.shift, small.seed)
        ingest(SiteHome(fed.site_home(small.name, tiny_model_dir, release="manual")), run / "raw" / small.name, "cholec80")
        fed.serve_site(small.name)
        yield Federation(fed, tiny_model_dir, run, SITES, broken, small.name)
    shutil.rmtree(run / "raw", ignore_errors=True)
