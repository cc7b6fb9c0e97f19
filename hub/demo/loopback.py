"""A whole federation on 127.0.0.1 (hub, proxy, SuperLink, site engines, SuperNodes) for the demo and tests."""

from __future__ import annotations

import json
import os
import sys
from importlib import resources
from pathlib import Path
from types import TracebackType

from hub.home import HubHome, init_hub
from hub.superlink import register_node
from protocols.errors import ConfigError
from protocols.keys import read_public_key
from protocols.procs import Child, free_port, port_open, wait_for


def _cli(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def render_protocol(dest: Path, template: str, **values: object) -> Path:
    """Fill a study template from protocols/studies ({name} placeholders; lists as JSON)."""
    text = resources.files("protocols.studies").joinpath(template).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{" + key + "}", json.dumps(value) if isinstance(value, list) else str(value))
    dest.write_text(text, encoding="utf-8")
    return dest


class LoopbackFederation:
    """Starts what it needs and stops every process it started, whatever happens (use it as a context manager)."""

    def __init__(self, run_dir: Path, *, insecure: bool = False) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.insecure = insecure
        self.children: dict[str, Child] = {}
        self.public_port, self.internal_port = free_port(), free_port()
        self.web_port = free_port()  # the dashboard too: several federations (tests, a demo) may share a machine
        self.hub: HubHome | None = None

    def __enter__(self) -> LoopbackFederation:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start_hub(self) -> HubHome:
        self.hub = init_hub(
            self.run_dir / "hub", study="loopback", public_port=self.public_port, internal_port=self.internal_port
        )
        return self.serve_hub()

    def serve_hub(self) -> HubHome:
        """Start `hub serve` on the hub home (again, after a stop or a kill: it resumes the open studies)."""
        assert self.hub is not None, "start_hub() first"
        args = ["serve", "--home", str(self.hub.root), "--web-port", str(self.web_port)]
        args += ["--insecure"] if self.insecure else []
        child = self.children["hub"] = Child("hub", _cli("hub.cli", *args), self.hub.logs_dir / "hub.log")
        wait_for(
            lambda: port_open("127.0.0.1", self.public_port) and port_open("127.0.0.1", self.internal_port),
            90,
            "the hub to listen",
            child,
        )
        return self.hub

    def site_home(self, name: str, model_dir: Path, *, release: str = "auto", register: bool = True) -> Path:
        """Create a site home pointing at this hub; register its node key unless told not to."""
        from site_node.commands_apps import approve_shipped
        from site_node.home import init_home

        assert self.hub is not None, "start_hub() first"
        home = init_home(
            self.run_dir / "sites" / name,
            name,
            model_dir=model_dir,
            release=release,
            superlink=f"127.0.0.1:{self.public_port}",
            root_certificates=None if self.insecure else self.hub.ca_cert,
        )
        _state_demo_policy(home.config_file)
        approve_shipped(home)  # what `site_node init` does: this release's own ClientApp bundle
        _own_console_port(home.config_file)
        if register and not self.insecure:
            self.register(name, home.node_pub)
        return home.root

    def register(self, name: str, public_key: Path) -> int:
        assert self.hub is not None
        node_id = register_node(self.hub, name, public_key)
        self.hub.store().add_site(name, node_id, read_public_key(public_key))
        return node_id

    def serve_site(self, name: str, *, extra_args: tuple[str, ...] = ()) -> Child:
        home = self.run_dir / "sites" / name
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # three engines share two cores
        args = ["serve", "--home", str(home), *(["--insecure"] if self.insecure else []), *extra_args]
        child = self.children[f"site:{name}"] = Child(
            f"site {name}", _cli("site_node.cli", *args), home / "logs" / "serve.log", env=env
        )
        return child

    def stop_site(self, name: str) -> None:
        child = self.children.pop(f"site:{name}", None)
        if child is not None:
            child.stop()

    def stop(self) -> None:
        for name in [n for n in self.children if n != "hub"] + ["hub"]:
            child = self.children.pop(name, None)
            if child is not None:
                child.stop()


def _own_console_port(config_file: Path) -> None:
    """Several sites share this machine: each site's console gets a free port of its own."""
    from site_node.home import DEFAULT_CONSOLE_PORT

    text = config_file.read_text()
    line = f"port = {DEFAULT_CONSOLE_PORT}"
    if line not in text:
        raise ConfigError(f"{config_file}: expected the default console line {line!r}")
    config_file.write_text(text.replace(line, f"port = {free_port()}", 1))


def console_port(site_home: Path) -> int:
    """The console port a loopback site was given (its site.toml [console] port)."""
    from site_node.home import SiteHome

    return SiteHome(site_home).config().console_port


def _state_demo_policy(config_file: Path) -> None:
    """The demo's site policy, stated in each demo site.toml: what it loosens from the defaults, and why."""
    from site_node.policy import DEFAULT_EPSILON_CAP, DEFAULT_MIN_TRAIN_VIDEOS

    text = config_file.read_text()
    for old, new in (
        (
            f"min_train_videos = {DEFAULT_MIN_TRAIN_VIDEOS}",
            "# DEMO: each synthetic site trains on six videos.\nmin_train_videos = 4",
        ),
        (
            "require_dp = true",
            "# DEMO: the fine-tuning demo trains without DP on synthetic videos, to show a held-out gain in\n"
            "# three rounds; a DP study (finetune.dp) still runs and is accounted in the ledger.\nrequire_dp = false",
        ),
        (
            f"epsilon_cap = {DEFAULT_EPSILON_CAP}",
            "# DEMO: room for the tests' DP study (target 50).\nepsilon_cap = 100.0",
        ),
    ):
        if old not in text:
            raise ConfigError(f"{config_file}: expected the default policy line {old!r}")
        text = text.replace(old, new)
    config_file.write_text(text)
