"""`hub serve` and `site_node serve`, started for real on loopback, stop every process they started on each stop
signal; the hub's log stays free of per-request lines; `hub init --host/--bind` split the certificate name from
the listening address."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from cryptography import x509

from protocols.procs import free_port, port_open, wait_for
from protocols.proctree import alive, descendants, stop_all

pytestmark = pytest.mark.integration
SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
BIND = "127.0.0.2"  # loopback, but not the 127.0.0.1 a server falling back to the default would take
PUBLIC_NAME = "hub.some-hospital.example"  # unresolvable: a proxy that listened on --host could not start


def _cli(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _has(pid: int, program: str) -> bool:
    return any(program in _cmdline(p) for p in descendants(pid))


def _listening(public: int, internal: int) -> bool:
    return port_open(BIND, public) and port_open("127.0.0.1", internal)


def _all_gone(tree: dict[int, int]) -> bool:
    return not alive(tree)


def _bindable(host: str, port: int) -> bool:
    """What a restarted server does: bind with SO_REUSEADDR (a TIME_WAIT left by the test's own requests is fine)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


class Service:
    """A server started as a new user would: its own session, output to a file; stopped by the test if it fails."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.tree: dict[int, int] = {}
        self.programs = ""  # the command lines of `tree`, as they were when the signal went out

    def signal_and_wait(self, sig: signal.Signals) -> int:
        self.tree = descendants(self.proc.pid)  # noted before: orphans would hang off pid 1 afterwards
        self.programs = "\n".join(map(_cmdline, self.tree))
        os.kill(self.proc.pid, sig)
        return self.proc.wait(timeout=60)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.tree = {**self.tree, **descendants(self.proc.pid)}
            self.proc.kill()
            self.proc.wait()
        stop_all(self.tree, timeout=2)


Hub = tuple[Path, int, int]  # home, public port, internal port


@pytest.fixture(scope="module")
def hubs(tmp_path_factory: pytest.TempPathFactory) -> list[Hub]:
    """One hub home per stop signal (each server started once, all at the same time: the machine has 2 cores)."""
    from hub.home import init_hub

    run = tmp_path_factory.mktemp("signals")
    out: list[Hub] = []
    for i in range(len(SIGNALS)):
        public, internal = free_port(), free_port()
        if i == 0:  # the first through the real command line, as a new user types it
            init = _cli("hub.cli", "init", "--home", str(run / "hub0"), "--host", PUBLIC_NAME, "--bind", BIND)
            subprocess.run([*init, "--port", str(public), "--internal-port", str(internal)], check=True, timeout=60)
        else:
            init_hub(run / f"hub{i}", public_host=PUBLIC_NAME, bind=BIND, public_port=public, internal_port=internal)
        out.append((run / f"hub{i}", public, internal))
    return out


def _start_hubs(hubs: list[Hub], logs: Path) -> list[Service]:
    started = [
        Service(_cli("hub.cli", "serve", "--home", str(h[0]), "--insecure"), logs / f"{h[0].name}.log") for h in hubs
    ]
    try:
        for (_, public, internal), hub in zip(hubs, started, strict=True):
            wait_for(partial(_listening, public, internal), 90, "the hub to listen")
            wait_for(partial(_has, hub.proc.pid, "flower-superexec"), 60, "the SuperLink's flower-superexec")
    except Exception:
        for hub in started:
            hub.cleanup()
        raise
    return started


def test_init_names_the_public_host_and_serve_listens_on_bind(hubs: list[Hub]) -> None:
    root = hubs[0][0]
    cert = x509.load_pem_x509_certificate((root / "pki" / "server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert PUBLIC_NAME in names.get_values_for_type(x509.DNSName)
    assert f'bind = "{BIND}"' in (root / "hub.toml").read_text()


def _poll_fleet(public: int) -> None:
    """What an idle site's SuperNode does all day: poll the Fleet API through the proxy."""
    for _ in range(20):
        req = urllib.request.Request(f"http://{BIND}:{public}/v1/fleet/pull-messages", data=b"x", method="POST")
        try:
            urllib.request.urlopen(req, timeout=10).close()
        except OSError:
            pass  # the SuperLink refuses the junk body; the proxy forwarded it, which is all this needs


def test_hub_serve_stops_everything_it_started(hubs: list[Hub], tmp_path: Path) -> None:
    started = _start_hubs(hubs, tmp_path)
    try:
        for (_, public, internal), hub, sig in zip(hubs, started, SIGNALS, strict=True):
            assert not port_open("127.0.0.1", public), "the proxy listens on --bind only"
            _poll_fleet(public)
            assert hub.signal_and_wait(sig) == 0, sig.name
            wait_for(partial(_all_gone, hub.tree), 10, f"the hub's children to end after {sig.name}")
            assert "flower-superlink" in hub.programs and "flower-superexec" in hub.programs
            assert _bindable(BIND, public) and _bindable("127.0.0.1", internal), f"a port is taken after {sig.name}"
            lines = hub.log.read_text().splitlines()
            assert not [line for line in lines if "HTTP Request" in line], "httpx logs each proxied request"
            assert len(lines) < 12, "\n".join(lines)
    finally:
        for hub in started:
            hub.cleanup()


@pytest.fixture(scope="module")
def sites(hubs: list[Hub], tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    """Sites (no model: an engine starts without one) whose SuperNodes dial a running insecure hub."""
    run = tmp_path_factory.mktemp("sites")
    [hub] = _start_hubs(hubs[:1], run)
    public = hubs[0][1]
    homes = []
    for sig in SIGNALS:
        home = run / sig.name.lower()
        init = _cli(
            "site_node.cli", "init", "--home", str(home), "--site", home.name, "--superlink", f"{BIND}:{public}"
        )
        subprocess.run(init, check=True, timeout=60, stdout=subprocess.DEVNULL)
        homes.append(home)
    try:
        yield homes
    finally:
        hub.signal_and_wait(signal.SIGTERM)
        hub.cleanup()


def test_site_serve_stops_everything_it_started(sites: list[Path], tmp_path: Path) -> None:
    started = [
        Service(_cli("site_node.cli", "serve", "--home", str(home), "--insecure"), tmp_path / f"{home.name}.log")
        for home in sites
    ]
    try:
        for site in started:
            # The SuperNode starts its own flower-superexec once it reached the hub: a grandchild of the site.
            wait_for(partial(_has, site.proc.pid, "flower-superexec"), 90, "the SuperNode's flower-superexec")
        for site, sig in zip(started, SIGNALS, strict=True):
            assert site.signal_and_wait(sig) == 0, sig.name
            wait_for(partial(_all_gone, site.tree), 10, f"the site's children to end after {sig.name}")
            assert "flower-supernode" in site.programs and "flower-superexec" in site.programs
    finally:
        for site in started:
            site.cleanup()
