"""The engine socket under attack: a real `site_node serve` engine (no SuperNode) in its own process."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.procs import wait_for
from protocols.wire import UNIX_PREFIX, call_engine
from site_node.home import SiteHome, init_home

BIG = 200 * 1024 * 1024


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen, SiteHome, str]]:
    """One engine for the module: every test also checks that it still serves after its attack."""
    home = init_home(tmp_path_factory.mktemp("eng") / "s", "site-a")
    code = "import sys; from site_node.home import SiteHome; from site_node.serve import serve; "
    code += "sys.exit(serve(SiteHome(sys.argv[1]), with_supernode=False))"
    proc = subprocess.Popen([sys.executable, "-c", code, str(home.root)], stdin=subprocess.DEVNULL)
    address_file = home.logs_dir / "engine.address"

    def up() -> bool:
        assert proc.poll() is None, f"the engine exited with {proc.returncode}"
        return address_file.is_file() and address_file.read_text() != ""

    try:
        wait_for(up, 300, "the engine's address (imports are slow on a busy machine)")
        yield proc, home, address_file.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _connect(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address[len(UNIX_PREFIX) :])
    return sock


def _frame(obj: object) -> bytes:
    data = json.dumps(obj).encode()
    return struct.pack(">Q", len(data)) + data


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def _stream(sock: socket.socket, prefix: bytes, total: int) -> int:
    """Send `prefix` then up to `total` bytes of junk in 1 MiB pieces; bytes accepted before the engine hung up."""
    sock.settimeout(10)
    sent, piece = 0, b"\0" * (1 << 20)
    try:
        sock.sendall(prefix)
        while sent < total:
            sock.sendall(piece)
            sent += len(piece)
    except OSError:
        pass
    return sent


def _hello(home: SiteHome, address: str) -> dict:
    return call_engine(address, {"token": home.token(), "op": "hello", "records": {}}, timeout=10)


def test_socket_is_a_0600_unix_socket_in_the_site_home(engine) -> None:  # type: ignore[no-untyped-def]
    _, home, address = engine
    assert address == f"{UNIX_PREFIX}{home.clientapp_dir / 'engine.sock'}"
    mode = os.stat(address[len(UNIX_PREFIX) :]).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert _hello(home, address)["ok"] is True


def test_200mb_tokenless_request_is_refused_after_the_first_frame(engine) -> None:  # type: ignore[no-untyped-def]
    proc, home, address = engine
    _hello(home, address)
    before = _peak_rss_mb(proc.pid)
    # The old attack: one frame that announces 200 MB and carries no token. Refused on its length alone.
    with _connect(address) as sock:
        assert _stream(sock, struct.pack(">Q", BIG), BIG) < 64 * 1024 * 1024
    # A well-formed header without the right token, then a 200 MB body: refused, the body is never read.
    with _connect(address) as sock:
        sock.sendall(_frame({"token": "guess", "op": "submit"}))
        length = struct.unpack(">Q", sock.recv(8))[0]
        refusal = json.loads(sock.recv(length))
        assert refusal == {"ok": False, "error": "engine token rejected"}
        assert _stream(sock, _frame({"records": {}})[:8], BIG) < 64 * 1024 * 1024
    assert _peak_rss_mb(proc.pid) - before < 30, "the engine grew while refusing"
    assert _hello(home, address)["ok"] is True
    assert proc.poll() is None


def test_fifty_idle_connections_do_not_block_a_legitimate_request(engine) -> None:  # type: ignore[no-untyped-def]
    _, home, address = engine
    idle = [_connect(address) for _ in range(50)]
    for sock in idle[:25]:
        sock.sendall(struct.pack(">Q", 100) + b"{")  # half a header, then silence
    try:
        started = time.monotonic()
        assert _hello(home, address)["ok"] is True
        assert time.monotonic() - started < 2.0
        # The idle ones are dropped after the header deadline; the engine keeps serving.
        time.sleep(6)
        idle[0].settimeout(2)
        assert idle[0].recv(1) == b""
        assert _hello(home, address)["ok"] is True
    finally:
        for sock in idle:
            sock.close()


def test_wrong_token_from_the_client_library_is_refused(engine) -> None:  # type: ignore[no-untyped-def]
    _, home, address = engine
    reply = call_engine(address, {"token": "nope", "op": "hello", "records": {}}, timeout=10)
    assert reply == {"ok": False, "error": "engine token rejected"}
    assert _hello(home, address)["ok"] is True
