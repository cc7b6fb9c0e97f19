"""`hub pki renew`: a new key and certificate from the same CA, same hosts; a live TLS server presents it at once."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from hub.cert_reload import CertificateReloader
from hub.cli import main
from hub.home import init_hub
from hub.pki import certificate_hosts, make_ca, make_server_cert, renew_server_cert
from protocols.errors import ConfigError


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_renew_keeps_ca_and_hosts_and_changes_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = init_hub(tmp_path / "hub", public_host="hub.example.org", hosts=["hub.example.org", "10.0.0.7"])
    before, key_before = _load(home.server_cert), home.server_key.read_bytes()
    hosts_before = certificate_hosts(home.server_cert)
    assert main(["pki", "renew", "--home", str(home.root)]) == 0
    after, ca = _load(home.server_cert), _load(home.ca_cert)
    assert "same study CA" in capsys.readouterr().out
    assert after.serial_number != before.serial_number and home.server_key.read_bytes() != key_before
    assert certificate_hosts(home.server_cert) == hosts_before
    assert {"hub.example.org", "10.0.0.7", "127.0.0.1", "localhost"} <= set(certificate_hosts(home.server_cert))
    after.verify_directly_issued_by(ca)  # raises when not signed by the same CA
    assert home.server_key.stat().st_mode & 0o777 == 0o600
    assert not list(home.server_cert.parent.glob("*.new"))


def test_renewal_never_outlives_the_ca_and_needs_its_key(tmp_path: Path) -> None:
    make_ca(tmp_path / "ca.crt", tmp_path / "ca.key", "short", days=10)
    make_server_cert(tmp_path / "ca.crt", tmp_path / "ca.key", tmp_path / "s.crt", tmp_path / "s.key", ["h"], days=5)
    cert = renew_server_cert(tmp_path / "ca.crt", tmp_path / "ca.key", tmp_path / "s.crt", tmp_path / "s.key")
    assert cert.not_valid_after_utc <= _load(tmp_path / "ca.crt").not_valid_after_utc
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=9)
    (tmp_path / "ca.key").unlink()
    with pytest.raises(ConfigError, match="needs the study CA's key"):
        renew_server_cert(tmp_path / "ca.crt", tmp_path / "ca.key", tmp_path / "s.crt", tmp_path / "s.key")


def test_pki_status_warns_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = init_hub(tmp_path / "hub")
    assert main(["pki", "status", "--home", str(home.root)]) == 0
    out = capsys.readouterr().out
    assert out.count("ok\t") == 2
    home.server_cert.unlink()
    home.server_key.unlink()
    make_server_cert(home.ca_cert, home.ca_key, home.server_cert, home.server_key, ["127.0.0.1"], days=12)
    assert main(["pki", "status", "--home", str(home.root)]) == 0
    out_warn = capsys.readouterr().out
    assert f"warn\thub server certificate ({home.server_cert}) expires in" in out_warn
    assert f"run `hub pki renew --home {home.root}`" in out_warn


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, ssl.SSLContext]]:
    """A real TLS listener on 127.0.0.1 that answers each handshake and closes: what the public port does."""
    home = init_hub(tmp_path / "hub")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(home.server_cert), str(home.server_key))
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], home.root, ctx
    stop.set()
    thread.join(timeout=5)
    sock.close()


def _served_serial(port: int, ca: Path) -> int:
    client = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_live_context_presents_the_renewed_certificate(tls_server: tuple[int, Path, ssl.SSLContext]) -> None:
    port, root, ctx = tls_server
    pki = root / "pki"
    reloader = CertificateReloader(lambda: ctx, pki / "server.crt", pki / "server.key")
    first = _served_serial(port, pki / "ca.crt")
    assert reloader.check() is False  # nothing changed yet
    renewed = renew_server_cert(pki / "ca.crt", pki / "ca.key", pki / "server.crt", pki / "server.key")
    assert _served_serial(port, pki / "ca.crt") == first  # not before the reload ...
    assert reloader.check() is True
    assert _served_serial(port, pki / "ca.crt") == renewed.serial_number != first  # ... and at once after it
    assert reloader.check() is False and reloader.reloads == 1
