"""The study's certificate authority and the hub's TLS server certificate (cryptography, no openssl needed)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from protocols.cert_expiry import ExpiryCheck, check_expiry, load_certificate
from protocols.errors import ConfigError
from protocols.keys import write_private


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "surgfed study"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(ca_cert: Path, ca_key: Path, study: str, days: int = 3650) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{study} CA"))
        .issuer_name(_name(f"{study} CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA384())
    )
    write_private(ca_key, _key_pem(key))
    ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _server_cert(
    ca_cert: Path, ca_key: Path, hosts: list[str], days: int
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP384R1())
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, "127.0.0.1", "localhost"]):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    # Never past the CA: a certificate outliving its issuer would fail every handshake anyway.
    not_after = min(now + dt.timedelta(days=days), ca.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0] if hosts else "localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # mypy: the loader's type admits keys that cannot sign (X25519); the study CA's is an EC key
        .sign(signer, hashes.SHA384())  # type: ignore[arg-type]
    )
    return key, cert


def make_server_cert(
    ca_cert: Path, ca_key: Path, cert_path: Path, key_path: Path, hosts: list[str], days: int = 825
) -> None:
    """A server certificate for the hub, valid for `hosts` (IP addresses or DNS names) plus loopback."""
    key, cert = _server_cert(ca_cert, ca_key, hosts, days)
    write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def certificate_hosts(cert_path: Path) -> list[str]:
    """The host names and addresses a certificate names (its subject's first, as `hub init --host` wrote it)."""
    cert = load_certificate(cert_path)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = x509.SubjectAlternativeName([])
    names = [str(v) for v in (*sans.get_values_for_type(x509.DNSName), *sans.get_values_for_type(x509.IPAddress))]
    subject = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return list(dict.fromkeys([*subject, *names]))


def renew_server_cert(
    ca_cert: Path, ca_key: Path, cert_path: Path, key_path: Path, hosts: list[str] | None = None, days: int = 825
) -> x509.Certificate:
    """A new key and certificate from the same CA, for the same hosts unless told; swapped in atomically.

    The key is replaced before the certificate: a reader that sees the new certificate finds its key.
    """
    if not ca_key.is_file():
        raise ConfigError(f"no CA key at {ca_key}: renewal needs the study CA's key (same CA, so sites change nothing)")
    names = hosts or certificate_hosts(cert_path)
    key, cert = _server_cert(ca_cert, ca_key, names, days)
    key_tmp, cert_tmp = key_path.with_name(key_path.name + ".new"), cert_path.with_name(cert_path.name + ".new")
    key_tmp.unlink(missing_ok=True)
    write_private(key_tmp, _key_pem(key))
    cert_tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(key_tmp, key_path)
    os.replace(cert_tmp, cert_path)
    return cert


def certificate_checks(ca_cert: Path, server_cert: Path, home_root: Path) -> list[ExpiryCheck]:
    """The hub's certificates against the clock (for `hub pki status` and `hub status`)."""
    return [
        check_expiry(
            server_cert,
            "hub server certificate",
            f"run `hub pki renew --home {home_root}` (same CA: sites change nothing)",
        ),
        check_expiry(
            ca_cert,
            "study CA certificate",
            "make a new study CA and send it to every site (no in-place CA renewal yet)",
        ),
    ]
