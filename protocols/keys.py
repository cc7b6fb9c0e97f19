"""Key material shared by hub and site tooling: OpenSSH ECDSA P-384 node keys and random secrets."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from protocols.errors import ConfigError


def write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only (created 0600, never world-readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def new_secret(path: Path, n_bytes: int = 32) -> None:
    """A secret of `n_bytes` random bytes, written as hex text.

    Text, not raw bytes: key readers strip surrounding whitespace (an editor's newline), and raw random bytes
    begin or end with a whitespace byte about one time in twenty, which the strip would cut off.
    """
    write_private(path, (secrets.token_hex(n_bytes) + "\n").encode("ascii"))


def new_node_key(private_path: Path) -> Path:
    """An OpenSSH ECDSA P-384 key pair, as `ssh-keygen -t ecdsa -b 384` makes; returns the .pub path."""
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    write_private(private_path, pem)
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pub_path = private_path.with_name(private_path.name + ".pub")
    pub_path.write_bytes(pub + b"\n")
    return pub_path


def read_public_key(path: Path) -> str:
    """Validate an OpenSSH public key file (ECDSA P-384, as Flower's node auth needs) and return its text."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read public key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_ssh_public_key(text.encode())
    except ValueError as exc:
        raise ConfigError(f"{path} is not an OpenSSH public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise ConfigError(f"{path}: expected an ECDSA P-384 key (ssh-keygen -t ecdsa -b 384), got {text.split()[0]}")
    return text


def fingerprint(public_key: str) -> str:
    """SHA256:... of an OpenSSH public key's blob, as `ssh-keygen -lf` prints it: what a site and the
    coordinator read to each other to confirm a rotated key."""
    try:
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except (IndexError, ValueError) as exc:
        raise ConfigError(
            f"expected an OpenSSH public key line 'TYPE BASE64 [COMMENT]', got {public_key[:40]!r}"
        ) from exc
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
