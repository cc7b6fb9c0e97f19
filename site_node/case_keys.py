"""Case keys: a keyed hash of a de-identified video's content, so two copies of one surgery are one unit."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

_CHUNK = 1 << 20


def case_key(key: bytes, media: Path) -> str:
    """Keyed over the file's bytes (a frame folder: each frame's own name and bytes, in order). De-identification
    is deterministic, so the same source ingested twice, under any name or folder, gives the same key."""
    mac = hmac.new(key, b"surgfed-case-key\x00", hashlib.sha256)
    files = [media] if media.is_file() else sorted(p for p in media.rglob("*") if p.is_file())
    for path in files:
        if path != media:
            mac.update(path.relative_to(media).as_posix().encode() + b"\x00")
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                mac.update(chunk)
    return "case-" + mac.hexdigest()[:24]
