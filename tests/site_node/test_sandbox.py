"""Hub-delivered code in the real sandbox: what a child process can no longer reach (kernel permitting)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.procs import free_port
from site_node import sandbox
from site_node.confinement import clientapp_layer, supernode_command
from site_node.home import SiteHome, init_home
from site_node.serve import prepare_clientapp_dir

ABI = sandbox.abi_version()
needs = {
    1: pytest.mark.skipif(ABI < 1, reason=f"kernel {os.uname().release} has no Landlock"),
    4: pytest.mark.skipif(ABI < 4, reason=f"Landlock ABI {ABI} < 4 on {os.uname().release}: no TCP port rules"),
    6: pytest.mark.skipif(ABI < 6, reason=f"Landlock ABI {ABI} < 6 on {os.uname().release}: no scoping"),
}
PROBE = r"""
import json, os, socket, sys
out = {}
def attempt(name, fn):
    try:
        fn(); out[name] = "ok"
    except OSError as exc:
        out[name] = type(exc).__name__
args = json.loads(sys.argv[1])
def tcp(port):
    with socket.create_connection(("127.0.0.1", port), timeout=3): pass
attempt("allowed_port", lambda: tcp(args["allowed"]))
attempt("other_port", lambda: tcp(args["other"]))
attempt("parent_environ", lambda: open(f"/proc/{os.getppid()}/environ", "rb").read())
attempt("signal_parent", lambda: os.kill(os.getppid(), 0))
def abstract():
    with socket.socket(socket.AF_UNIX) as s: s.connect(args["abstract"])
attempt("abstract_socket", abstract)
for name in ("node.key", "engine.token"):
    attempt(name, lambda: open(os.path.join(args["clientapp"], name), "rb").read())
out["secret_env"] = os.environ.get("HOSPITAL_DB_PASSWORD", "absent")
print(json.dumps(out))
"""


@pytest.fixture
def listeners() -> Iterator[dict[str, object]]:
    """Two local TCP services and an abstract Unix socket outside the sandbox."""
    socks = []
    ports = {}
    for name in ("allowed", "other"):
        s = socket.socket()
        s.bind(("127.0.0.1", free_port()))
        s.listen(8)
        socks.append(s)
        ports[name] = s.getsockname()[1]
    abstract = socket.socket(socket.AF_UNIX)
    name = f"\0surgfed-test-{os.getpid()}"
    abstract.bind(name)
    abstract.listen(1)
    socks.append(abstract)
    yield {**ports, "abstract": name}
    for s in socks:
        s.close()


def _site(tmp_path: Path, port: int) -> SiteHome:
    home = init_home(tmp_path / "s", "site-a", superlink=f"127.0.0.1:{port}")
    prepare_clientapp_dir(home)
    return home


def _probe(argv: list[str], env: dict[str, str], args: dict[str, object]) -> dict[str, str]:
    done = subprocess.run(
        [*argv, sys.executable, "-c", PROBE, json.dumps(args)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs[1]
def test_supernode_layer(tmp_path: Path, listeners: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSPITAL_DB_PASSWORD", "s3cret")  # in the engine's environment, as at a hospital
    home = _site(tmp_path, int(listeners["allowed"]))  # the "hub" is the allowed port
    supernode_port = free_port()
    argv, env = supernode_command(home, home.config(), [], supernode_port=supernode_port, engine_address="unix:/x")
    out = _probe(argv, env, {**listeners, "clientapp": str(home.clientapp_dir)})
    assert out["secret_env"] == "absent"
    assert out["allowed_port"] == "ok" and out["node.key"] == "ok"  # controls: the SuperNode needs both
    assert out["parent_environ"] == "PermissionError"
    if ABI >= 4:
        assert out["other_port"] == "PermissionError"
    if ABI >= 6:
        assert out["signal_parent"] == "PermissionError"
        assert out["abstract_socket"] == "PermissionError"


@needs[1]
def test_clientapp_layer_cannot_read_the_node_key(tmp_path: Path, listeners: dict[str, object]) -> None:
    home = _site(tmp_path, int(listeners["other"]))
    supernode_port = int(listeners["allowed"])  # the ClientApp may reach only the SuperNode's local port
    outer, env = supernode_command(home, home.config(), [], supernode_port=supernode_port, engine_address="unix:/x")
    inner = clientapp_layer(home, supernode_port, "unix:/x", [])
    out = _probe(outer + inner, env, {**listeners, "clientapp": str(home.clientapp_dir)})
    assert out["engine.token"] == "ok" and out["allowed_port"] == "ok"
    assert out["node.key"] == "PermissionError"
    assert out["parent_environ"] == "PermissionError"
    if ABI >= 4:
        assert out["other_port"] == "PermissionError"  # the hub's port: only the SuperNode talks to the hub
    if ABI >= 6:  # the inner layer leaves signals to the outer one, whose scope still keeps the engine out of reach
        assert out["signal_parent"] == "PermissionError"
        assert out["abstract_socket"] == "PermissionError"


@needs[4]
def test_network_rules_alone(tmp_path: Path, listeners: dict[str, object]) -> None:
    argv = sandbox.sandboxed_argv([], sandbox.runtime_read_paths(), [], connect=[int(listeners["allowed"])])
    out = _probe(argv, dict(os.environ), {**listeners, "clientapp": str(tmp_path)})
    assert (out["allowed_port"], out["other_port"]) == ("ok", "PermissionError")


def test_grants_are_described() -> None:
    text = sandbox.grants().describe()
    assert (f"ABI {ABI}" in text) if ABI else ("unavailable" in text)


@needs[4]
def test_site_proxy_setting_reaches_the_supernode(tmp_path: Path, listeners: dict[str, object]) -> None:
    """`[hub] https_proxy`: the SuperNode gets HTTPS_PROXY, loopback in NO_PROXY, and may dial the proxy's port."""
    home = _site(tmp_path, int(listeners["allowed"]))
    text = home.config_file.read_text().replace(
        '# https_proxy = "http://proxy.hospital.example:3128"', f'https_proxy = "http://127.0.0.1:{listeners["other"]}"'
    )
    home.config_file.write_text(text)
    argv, env = supernode_command(home, home.config(), [], supernode_port=free_port(), engine_address="unix:/x")
    assert env["HTTPS_PROXY"] == env["https_proxy"] == f"http://127.0.0.1:{listeners['other']}"
    assert set(env["NO_PROXY"].split(",")) >= {"http://127.0.0.1", "http://localhost"}
    out = _probe(argv, env, {**listeners, "clientapp": str(home.clientapp_dir)})
    assert out["allowed_port"] == "ok" and out["other_port"] == "ok"  # the hub and the proxy
