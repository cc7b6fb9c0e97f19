"""deploy/nginx/*.conf: Debian's nginx on 127.0.0.1 in front of a real `hub web`; a login and a page load through it."""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hub.accounts import Accounts, UserRole
from hub.home import init_hub
from hub.pki import make_ca, make_server_cert
from protocols.procs import Child, free_port, port_open, wait_for

REPO = Path(__file__).resolve().parents[2]
NGINX = REPO / "deploy" / "nginx"
MAIN_CONF = """worker_processes 1;
user root;
pid {run}/nginx.pid;
error_log {run}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {run}/access.log;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    include {run}/sites/*.conf;
}}
"""


def render(example: Path, dest: Path, *, listen: int, upstream: int, cert: Path, key: Path) -> None:
    """The example as shipped, with only its address, certificate paths and upstream port replaced."""
    text = example.read_text()
    replaced = 0
    for old, new in (
        ("listen 443 ssl;", f"listen 127.0.0.1:{listen} ssl;"),
        ("server 127.0.0.1:8780;", f"server 127.0.0.1:{upstream};"),
        ("server 127.0.0.1:8781;", f"server 127.0.0.1:{upstream};"),
    ):
        replaced += text.count(old)
        text = text.replace(old, new)
    lines = []
    for line in text.splitlines():
        if line.strip().startswith("ssl_certificate_key "):
            line = f"    ssl_certificate_key {key};"
        elif line.strip().startswith("ssl_certificate "):
            line = f"    ssl_certificate {cert};"
        lines.append(line)
    assert replaced == 2, f"{example.name}: expected one listen and one upstream line"
    dest.write_text("\n".join(lines) + "\n")


@dataclass
class Proxy:
    hub_port: int
    console_port: int
    ca: Path
    token: str
    run: Path


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).is_file(), "nginx is missing: `make test` installs Debian's nginx package"
    run = tmp_path_factory.mktemp("nginx")
    (run / "sites").mkdir()
    make_ca(run / "ca.crt", run / "ca.key", "dashboard test")
    make_server_cert(run / "ca.crt", run / "ca.key", run / "tls.crt", run / "tls.key", ["127.0.0.1"])
    web_port, hub_port, console_port, no_console = free_port(), free_port(), free_port(), free_port()
    home = init_hub(run / "hub")
    token = Accounts(home.store()).add_user("it-admin", UserRole.COORDINATOR)
    tls = {"cert": run / "tls.crt", "key": run / "tls.key"}
    render(NGINX / "hub-dashboard.conf", run / "sites" / "hub.conf", listen=hub_port, upstream=web_port, **tls)
    # No console on this branch (issue 16 item 1 is built elsewhere): its block routes to a port nobody serves.
    render(NGINX / "site-console.conf", run / "sites" / "console.conf", listen=console_port, upstream=no_console, **tls)
    (run / "nginx.conf").write_text(MAIN_CONF.format(run=run))
    check = subprocess.run([nginx, "-t", "-c", str(run / "nginx.conf")], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    web = Child(
        "hub web",
        [sys.executable, "-m", "hub.cli", "web", "--home", str(home.root), "--port", str(web_port)],
        run / "web.log",
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    server = Child("nginx", [nginx, "-c", str(run / "nginx.conf"), "-g", "daemon off;"], run / "nginx.log")
    try:
        wait_for(lambda: port_open("127.0.0.1", web_port), 60, "hub web to listen", web)
        wait_for(lambda: port_open("127.0.0.1", hub_port), 30, "nginx to listen", server)
        yield Proxy(hub_port, console_port, run / "ca.crt", token, run)
    finally:
        server.stop()
        web.stop()


def _get(p: Proxy, port: int, path: str, cookie: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, context=ssl.create_default_context(cafile=str(p.ca)), timeout=30
    )
    conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_login_and_dashboard_page_through_nginx(proxy: Proxy) -> None:
    assert _get(proxy, proxy.hub_port, "/").status in (401, 303, 307)  # not signed in
    login = _get(proxy, proxy.hub_port, f"/login?token={proxy.token}")
    assert login.status == 303, login.status
    set_cookie = login.headers["set-cookie"]
    # nginx passed X-Forwarded-Proto: the dashboard marked its session cookie Secure behind TLS.
    assert "secure" in set_cookie.lower() and "httponly" in set_cookie.lower()
    cookie = set_cookie.split(";", 1)[0]
    conn = http.client.HTTPSConnection(
        "127.0.0.1", proxy.hub_port, context=ssl.create_default_context(cafile=str(proxy.ca)), timeout=30
    )
    conn.request("GET", "/", headers={"Cookie": cookie})
    page = conn.getresponse()
    body = page.read().decode()
    conn.close()
    assert page.status == 200 and "it-admin" in body and "<html" in body.lower()
    assert page.headers["strict-transport-security"] == "max-age=31536000"
    # nginx passes Host with its port: a same-origin write is let through to the handler, a foreign one is not.
    same = _post(proxy, "/studies", cookie, f"https://127.0.0.1:{proxy.hub_port}")
    foreign = _post(proxy, "/studies", cookie, "https://evil.example")
    assert foreign == (403, True) and same[1] is False, (same, foreign)


def _post(p: Proxy, path: str, cookie: str, origin: str) -> tuple[int, bool]:
    """(status, whether the dashboard refused it as cross-origin)."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", p.hub_port, context=ssl.create_default_context(cafile=str(p.ca)), timeout=30
    )
    conn.request("POST", path, body=b"", headers={"Cookie": cookie, "Origin": origin})
    resp = conn.getresponse()
    body = resp.read().decode(errors="replace")
    conn.close()
    return resp.status, "cross-origin" in body


def test_console_block_routes_to_the_console_port(proxy: Proxy) -> None:
    """The console is not on this branch: nginx answers for it and reports its upstream (127.0.0.1) as down."""
    assert _get(proxy, proxy.console_port, "/").status == 502
    assert "connect() failed" in (proxy.run / "error.log").read_text()
