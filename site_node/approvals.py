"""Protocols the site operator approved, pinned by content hash."""

from __future__ import annotations

import shutil
from pathlib import Path

from protocols.errors import ProtocolError
from protocols.study import OutputLevel, StudyProtocol, load_protocol


def approve(approved_dir: Path, protocol_file: Path) -> StudyProtocol:
    """Validate and pin a protocol; one asking for per-frame or per-video outputs cannot be approved."""
    protocol = load_protocol(protocol_file)
    if protocol.privacy.outputs is not OutputLevel.AGGREGATE:
        raise ProtocolError(
            f"{protocol_file}: asks for {protocol.privacy.outputs.value} outputs; a site releases aggregates only"
        )
    approved_dir.mkdir(parents=True, exist_ok=True)
    dest = approved_dir / f"{protocol.content_hash}.yaml"
    tmp = dest.with_suffix(".tmp")
    shutil.copyfile(protocol_file, tmp)
    tmp.replace(dest)
    return protocol


def is_approved(approved_dir: Path, content_hash: str) -> bool:
    valid = len(content_hash) == 64 and all(c in "0123456789abcdef" for c in content_hash)
    return valid and (approved_dir / f"{content_hash}.yaml").is_file()


def approved(approved_dir: Path, content_hash: str) -> StudyProtocol:
    """The approved protocol with this hash; ProtocolError when the site does not know it."""
    path = approved_dir / f"{content_hash}.yaml"
    if not is_approved(approved_dir, content_hash):
        raise ProtocolError(
            f"protocol {content_hash[:16]}... is not approved at this site "
            "(the operator runs `site_node protocols approve FILE`)"
        )
    protocol = load_protocol(path)
    if protocol.content_hash != content_hash:
        raise ProtocolError(
            f"approved protocol {path.name} now hashes to {protocol.content_hash[:16]}... "
            "(package version changed?); approve it again"
        )
    return protocol


def refusal_reason(content_hash: str, protocol_text: str | None) -> str:
    """Why an unapproved protocol is refused, from its text when the hub sent it."""
    from protocols.study import loads_protocol

    reason = f"protocol {content_hash[:16]}... is not approved at this site"
    if protocol_text:
        try:
            protocol = loads_protocol(protocol_text, "the hub's protocol")
        except ProtocolError as exc:
            return f"{reason}; its text is invalid: {exc}"
        if protocol.content_hash != content_hash:
            return f"{reason}; the text sent hashes to {protocol.content_hash[:16]}... instead"
        if protocol.privacy.outputs is not OutputLevel.AGGREGATE:
            return (
                f"{reason}: it asks for {protocol.privacy.outputs.value} outputs and this site releases aggregates only"
            )
    return reason + " (the operator runs `site_node protocols approve FILE`)"


def list_approved(approved_dir: Path) -> list[tuple[str, StudyProtocol | str]]:
    out: list[tuple[str, StudyProtocol | str]] = []
    for path in sorted(approved_dir.glob("*.yaml")):
        try:
            out.append((path.stem, approved(approved_dir, path.stem)))
        except ProtocolError as exc:
            out.append((path.stem, str(exc)))
    return out
