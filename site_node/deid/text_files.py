"""Text files given to plain `deid`: quarantined, unless the site profile allows a named text format they fit."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from protocols.errors import DeidError
from site_node.deid.keys import pseudonym
from site_node.deid.labels_allowlist import (
    Rewritten,
    cholect50_json,
    coco_json,
    file_ref,
    labels_csv,
    phase_txt,
    tool_txt,
)
from site_node.deid.phi_scan import categories, scan

FREE_TEXT = (
    "free-text file: not de-identified (identifiers in prose cannot be found by pattern); quarantined. "
    "A site profile may allow named label formats with `text_formats`"
)


def _parsers(key: bytes) -> dict[str, Callable[[str], Rewritten]]:
    def case(stem: str) -> str:
        return "v" + pseudonym(key, "case", stem, length=12)

    def json_of(text: str) -> object:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise DeidError("not JSON") from None

    return {
        "cholec80-phase": phase_txt,
        "cholec80-tool": tool_txt,
        "labels-csv": lambda t: labels_csv(t, lambda cell: file_ref(cell, case)),
        "cholect50-json": lambda t: cholect50_json(json_of(t)),
        "coco-json": lambda t: coco_json(json_of(t), lambda n: file_ref(n, case), case),
    }


def allowed_text(
    src: Path, formats: Sequence[str], key: bytes, known: Sequence[str] = ()
) -> tuple[bytes, dict[str, int]]:
    """The file rebuilt by the first allowed format it fits (fields off the allow-list dropped and counted);
    DeidError (quarantine) when no format is allowed or none fits, or when a kept string looks identifying."""
    if not formats:
        raise DeidError(FREE_TEXT)
    try:
        text = src.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DeidError("text file is not UTF-8; quarantined") from None
    parsers = _parsers(key)
    for name in formats:
        try:
            out = parsers[name](text)
        except DeidError:
            continue
        findings = scan("\n".join(out.strings), known)
        if findings:
            raise DeidError(f"possible identifiers in kept label text ({', '.join(categories(findings))})")
        return out.data, {"text_rewritten": 1, "text_fields_dropped": out.dropped}
    raise DeidError(f"free-text file: fits none of the site profile's text formats {list(formats)}; quarantined")
