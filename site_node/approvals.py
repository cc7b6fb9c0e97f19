"""Protocols the site operator approved, pinned by content hash; protocol text is parsed only here, safely."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import yaml

from protocols.errors import ProtocolError
from protocols.study import OutputLevel, StudyProtocol, loads_protocol

MAX_PROTOCOL_BYTES = 64 * 1024  # a real protocol is a few KiB
MAX_PENDING = 32  # unknown protocols kept for the operator; more are dropped (and audited)
_HASH = re.compile(r"[0-9a-f]{64}")


def read_protocol_text(text: str, source: str) -> StudyProtocol:
    """Parse protocol YAML with a size limit and without anchors or aliases (no expansion bombs)."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_PROTOCOL_BYTES:
        raise ProtocolError(f"{source}: {size} bytes, more than the {MAX_PROTOCOL_BYTES} a protocol may have")
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, (yaml.AliasToken, yaml.AnchorToken)):
                line = token.start_mark.line + 1
                raise ProtocolError(f"{source}: line {line}: YAML anchors and aliases are not allowed in a protocol")
    except yaml.YAMLError as exc:
        raise ProtocolError(f"{source}: invalid YAML: {str(exc)[:300]}") from None
    return loads_protocol(text, source)


def read_protocol_file(path: Path) -> tuple[StudyProtocol, str]:
    try:
        if Path(path).stat().st_size > MAX_PROTOCOL_BYTES:
            raise ProtocolError(f"{path}: larger than the {MAX_PROTOCOL_BYTES} bytes a protocol may have")
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ProtocolError(f"cannot read protocol {path}: {exc.strerror}") from exc
    return read_protocol_text(text, str(path)), text


def approve(approved_dir: Path, protocol_file: Path) -> StudyProtocol:
    """Validate and pin a protocol; one asking for per-frame or per-video outputs cannot be approved."""
    protocol, text = read_protocol_file(protocol_file)
    if protocol.privacy.outputs is not OutputLevel.AGGREGATE:
        raise ProtocolError(
            f"{protocol_file}: asks for {protocol.privacy.outputs.value} outputs; a site releases aggregates only"
        )
    approved_dir.mkdir(parents=True, exist_ok=True)
    dest = approved_dir / f"{protocol.content_hash}.yaml"
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o600)  # like everything in the site home: owner-only, whoever calls
    tmp.replace(dest)
    pending_file(approved_dir, protocol.content_hash).unlink(missing_ok=True)
    return protocol


def is_approved(approved_dir: Path, content_hash: str) -> bool:
    return bool(_HASH.fullmatch(content_hash)) and (approved_dir / f"{content_hash}.yaml").is_file()


def approved(approved_dir: Path, content_hash: str) -> StudyProtocol:
    """The approved protocol with this hash; ProtocolError when the site does not know it."""
    path = approved_dir / f"{content_hash}.yaml"
    if not is_approved(approved_dir, content_hash):
        raise ProtocolError(
            f"protocol {content_hash[:16]}... is not approved at this site "
            "(the operator reviews it with `site_node protocols pending`)"
        )
    protocol, _ = read_protocol_file(path)
    if protocol.content_hash != content_hash:
        raise ProtocolError(
            f"approved protocol {path.name} now hashes to {protocol.content_hash[:16]}... "
            "(package version changed?); approve it again"
        )
    return protocol


def list_approved(approved_dir: Path) -> list[tuple[str, StudyProtocol | str]]:
    out: list[tuple[str, StudyProtocol | str]] = []
    for path in sorted(approved_dir.glob("*.yaml")):
        try:
            out.append((path.stem, approved(approved_dir, path.stem)))
        except ProtocolError as exc:
            out.append((path.stem, str(exc)))
    return out


# -- protocols the hub asked for that the operator has not approved (kept as text, never parsed on request) --
def pending_file(approved_dir: Path, content_hash: str) -> Path:
    if not _HASH.fullmatch(content_hash):
        raise ProtocolError(f"{content_hash[:80]!r} is not a protocol hash (64 lowercase hex digits)")
    return approved_dir / "pending" / f"{content_hash}.yaml"


def keep_pending(approved_dir: Path, claimed_hash: str, text: str) -> str:
    """Store the hub's text under the hash it claims, for `site_node protocols pending`; returns what happened."""
    if not _HASH.fullmatch(claimed_hash):
        return "bad-hash"
    if len(text.encode("utf-8", errors="replace")) > MAX_PROTOCOL_BYTES:
        return "too-large"
    path = pending_file(approved_dir, claimed_hash)
    if path.is_file():
        return "already-pending"
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(list(path.parent.glob("*.yaml"))) >= MAX_PENDING:
        return "queue-full"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return "kept"


def list_pending(approved_dir: Path) -> list[tuple[str, int, float]]:
    """(claimed hash, bytes, received) of every pending protocol request."""
    folder = approved_dir / "pending"
    files = sorted(folder.glob("*.yaml"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return [(p.stem, p.stat().st_size, p.stat().st_mtime) for p in files]


# -- a study bound to a new store snapshot by the operator (`site_node protocols approve HASH --snapshot`) --
def snapshot_file(approved_dir: Path, content_hash: str) -> Path:
    return approved_dir / f"{content_hash}.snapshot.json"


def approve_snapshot(approved_dir: Path, content_hash: str, digest: str) -> None:
    path = snapshot_file(approved_dir, content_hash)
    path.write_text(json.dumps({"digest": digest, "time": time.time()}))
    path.chmod(0o600)


def approved_snapshot(approved_dir: Path, content_hash: str) -> str | None:
    path = snapshot_file(approved_dir, content_hash)
    return str(json.loads(path.read_text())["digest"]) if path.is_file() else None
