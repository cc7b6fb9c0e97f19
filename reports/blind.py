"""Blinding: institution names become Center A, B, C ... everywhere, and written files are checked for leaks."""

from __future__ import annotations

import dataclasses
import re
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from protocols.errors import ConfigError
from reports.meta import SiteInfo, StudyMeta


def pseudonym(index: int) -> str:
    """Center A ... Center Z, then Center AA, AB ... (spreadsheet-style letters)."""
    if index < 0:
        raise ConfigError(f"pseudonym index must be >= 0, got {index}")
    letters = ""
    n = index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return f"Center {letters}"


class Blinder:
    """Maps each institution to its pseudonym (in the order given) and scrubs names out of free text."""

    def __init__(self, names: Sequence[str], *, enabled: bool) -> None:
        self.enabled = enabled
        unique = list(dict.fromkeys(n for n in names if n))
        self.mapping: dict[str, str] = {n: pseudonym(i) if enabled else n for i, n in enumerate(unique)}
        self._by_fold = {n.casefold(): p for n, p in self.mapping.items()}
        # Longest names first, so "St Mary" does not pre-empt "St Mary Hospital"; whole words only,
        # so a site called "Isar" does not rewrite "Isarstrasse" (nor a site "A" every letter a).
        ordered = sorted(unique, key=len, reverse=True)
        alternatives = "|".join(re.escape(n) for n in ordered)
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE) if ordered else None

    @property
    def names(self) -> list[str]:
        return list(self.mapping)

    def center(self, name: str) -> str:
        return self.mapping.get(name, self.text(name))

    def text(self, value: str) -> str:
        """The text with every institution name (any case) replaced by its pseudonym."""
        if not self.enabled or self._pattern is None:
            return value
        return self._pattern.sub(lambda m: self._by_fold[m.group(0).casefold()], value)

    def frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """The results table with centers renamed and free-text columns scrubbed."""
        if not self.enabled:
            return df
        out = df.copy()
        out["center"] = out["center"].map(self.center)
        out["study"] = out["study"].map(self.text)
        return out

    def meta(self, meta: StudyMeta) -> StudyMeta:
        """The study metadata with every string scrubbed and sites renamed."""
        if not self.enabled:
            return meta
        t = self._opt
        sites = [SiteInfo(self.center(s.center), t(s.software_version), t(s.release)) for s in meta.sites]
        return dataclasses.replace(
            meta,
            study=self.text(meta.study),
            protocol_id=self.text(meta.protocol_id),
            protocol_version=self.text(meta.protocol_version),
            protocol_hash=self.text(meta.protocol_hash),
            model_hash=self.text(meta.model_hash),
            adapter_hashes={r: self.text(h) for r, h in meta.adapter_hashes.items()},
            round_dates={r: self.text(d) for r, d in meta.round_dates.items()},
            sites=sites,
            package_version=self.text(meta.package_version),
        )

    def _opt(self, value: str | None) -> str | None:
        return None if value is None else self.text(value)


def _png_text_parts(data: bytes) -> bytes:
    """A PNG without its IDAT payloads: compressed pixels carry no text, only random-looking bytes."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    parts, pos = [data[:8]], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        parts.append(kind if kind == b"IDAT" else data[pos : pos + 12 + length])
        pos += 12 + length
    parts.append(data[pos:])
    return b"".join(parts)


def _decodings(data: bytes) -> list[str]:
    """The bytes read as UTF-8, Latin-1 and UTF-16 (both byte orders, both alignments)."""
    texts = [data.decode("utf-8", "ignore"), data.decode("latin-1")]
    for offset in (0, 1):
        chunk = data[offset:]
        chunk = chunk[: len(chunk) - len(chunk) % 2]
        texts += [chunk.decode("utf-16-le", "ignore"), chunk.decode("utf-16-be", "ignore")]
    return texts


MIN_CHECKED = 3  # shorter names ("A", "UK") match ordinary words; they are renamed but cannot be searched for
_PSEUDONYM = re.compile(r"Center [A-Z]+")


def leaks_in_bytes(data: bytes, names: Iterable[str]) -> list[str]:
    """The names found as whole words in the bytes, in any case and any of the decodings above."""
    texts = [_PSEUDONYM.sub(" ", t) for t in _decodings(data)]
    found = []
    for name in names:
        if len(name.strip()) < MIN_CHECKED:
            continue
        pattern = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE)
        if any(pattern.search(t) for t in texts):
            found.append(name)
    return found


def find_leaks(paths: Iterable[Path], names: Sequence[str]) -> dict[Path, list[str]]:
    """Per written file, the institution names its bytes still contain (PNG pixel data excepted)."""
    found: dict[Path, list[str]] = {}
    for path in paths:
        hits = leaks_in_bytes(_png_text_parts(Path(path).read_bytes()), names)
        if hits:
            found[Path(path)] = hits
    return found
