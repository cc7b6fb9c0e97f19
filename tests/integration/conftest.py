"""One real federation on 127.0.0.1 with TLS and node authentication, shared by the integration tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prepare import FEDERATION_SITES, SMALL_SITE, federation_sources

from hub.demo.loopback import LoopbackFederation, render_protocol
from hub.demo.study import DemoSite
from protocols.model_ref import manifest_hash

CENTERS = FEDERATION_SITES[:3]  # the demo's three centers, with six videos each
DP_CAPPED = CENTERS[2].name


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

    def protocol(
        self,
        name: str,
        sites: list[str],
        replace: dict[str, str] | None = None,
        *,
        template: str = "demo.yaml.tmpl",
        trainers: tuple[str, ...] = (),
    ) -> Path:
        """A study file from a demo template, with the roster and optional text replacements."""
        path = render_protocol(
            self.run / f"{name}.yaml",
            template,
            sites=sites,
            trainers=list(trainers),
            model_sha256=manifest_hash(self.model_dir),
        )
        text = re.sub(r"(?m)^  id: .*$", f"  id: {name}", path.read_text())
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

    run = tmp_path_factory.mktemp("federation")
    raw = federation_sources()  # written once (`make test` writes them beside the model build) and only read

    def ingested(name: str, **site: str) -> SiteHome:
        home = SiteHome(fed.site_home(name, tiny_model_dir, **site))
        if name == DP_CAPPED:  # this site's own privacy budget is far below any DP study's target
            home.config_file.write_text(
                home.config_file.read_text().replace("# epsilon_budget = 8.0", "epsilon_budget = 0.05")
            )
        ingest(home, raw / name / "cholec80", "cholec80", out_of_body="none", profile="demo")  # synthetic
        return home

    with LoopbackFederation(run) as fed:
        fed.start_hub()
        for site in CENTERS:
            ingested(site.name)
            fed.serve_site(site.name)
        broken = "empty-store"
        fed.site_home(broken, tiny_model_dir)
        fed.serve_site(broken)
        ingested(SMALL_SITE.name, release="manual")
        fed.serve_site(SMALL_SITE.name)
        yield Federation(fed, tiny_model_dir, run, CENTERS, broken, SMALL_SITE.name)
