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
        raise ProtocolError(f"{protocol_file}: asks for {protocol.privacy.outputs.value} outputs; "
                            "a site releases aggregates only")
    approved_dir.mkdir(parents=True, exist_ok=True)
    dest = approved_dir / f"{protocol.content_hash}.yaml"
    tmp = dest.with_suffix(".tmp")
    shutil.copyfile(protocol_file, tmp)
    tmp.replace(dest)
    return protocol


def approved(approved_dir: Path, content_hash: str) -> StudyProtocol:
    """The approved protocol with this hash; ProtocolError when the site does not know it."""
    path = approved_dir / f"{content_hash}.yaml"
    if len(content_hash) != 64 or not all(c in "0123456789abcdef" for c in content_hash) or not path.is_file():
        raise ProtocolError(f"protocol {content_hash[:16]}... is not approved at this site "
                            "(the operator runs `site_node protocols approve FILE`)")
    protocol = load_protocol(path)
    if protocol.content_hash != content_hash:
        raise ProtocolError(f"approved protocol {path.name} now hashes to {protocol.content_hash[:16]}... "
                            "(package version changed?); approve it again")
    return protocol


def list_approved(approved_dir: Path) -> list[tuple[str, StudyProtocol | str]]:
    out: list[tuple[str, StudyProtocol | str]] = []
    for path in sorted(approved_dir.glob("*.yaml")):
        try:
            out.append((path.stem, approved(approved_dir, path.stem)))
        except ProtocolError as exc:
            out.append((path.stem, str(exc)))
    return out
