"""Identifier scan of free text (label files, DICOM descriptors): known identifiers plus PHI patterns."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# Each pattern names a category; reasons quote the category and never the matched text.
_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("email", re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")),
    ("date", re.compile(r"(?<!\d)(?:19|20)\d\d[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])(?!\d)")),
    ("date", re.compile(r"(?<!\d)(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|1[0-2])[-/.](?:19|20)?\d\d(?!\d)")),
    ("date", re.compile(r"(?<!\d)(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)")),
    (
        "date",
        re.compile(rf"(?i)\b\d{{1,2}}\.?\s+{_MONTHS}\s+(?:19|20)\d\d\b|\b{_MONTHS}\s+\d{{1,2}},?\s+(?:19|20)\d\d\b"),
    ),
    ("phone", re.compile(r"(?<![\w.])\+?\(?\d{2,4}\)?[ ./-]\d{2,4}[ ./-]\d{2,4}(?:[ ./-]\d{2,4})?(?![\w.])")),
    # 6+ digits: medical record numbers are often 7-8 digits; allow-listed numeric fields are checked by range
    # before this scan and never reach it.
    ("long number", re.compile(r"(?<![\d.])\d{6,}(?![\d.])")),
    (
        "identifier label",
        re.compile(
            r"(?i)\b(?:mrn|pid|ssn|nhs|ahv|dob|d\.o\.b|born|geb(?:oren|\.)?|patient(?:en)?\s*(?:id|name|nr|number)?"
            r"|name|surname|vorname|nachname|birth\s*date|date\s+of\s+birth|insurance|case\s*(?:id|no|nr|number))\b\s*[:#=]"
        ),
    ),
    ("person title", re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Prof|Herr|Frau)\.?\s+[A-Z][\w'-]+")),
    ("dicom person name", re.compile(r"[A-Za-z\u00c0-\u024f]{2,}\^[A-Za-z\u00c0-\u024f]{2,}")),
)


@dataclass(frozen=True)
class Finding:
    category: str
    start: int
    end: int


def known_tokens(values: Iterable[str], min_len: int = 3) -> tuple[str, ...]:
    """Split identifier values (names 'Family^Given', IDs, addresses) into searchable tokens, longest first."""
    tokens: set[str] = set()
    for value in values:
        value = str(value).strip()
        if len(value) >= min_len:
            tokens.add(value)
        for part in re.split(r"[\^=,;\\/]+|\s{2,}", value):
            part = part.strip()
            if len(part) >= min_len and not part.isspace():
                tokens.add(part)
    return tuple(sorted(tokens, key=lambda t: (-len(t), t)))


def scan(text: str, known: Iterable[str] = ()) -> list[Finding]:
    """Every suspected identifier in `text`: known identifiers (case-insensitive) and pattern matches."""
    found: list[Finding] = []
    lowered = text.casefold()
    for token in known:
        needle = token.casefold()
        start = lowered.find(needle)
        while needle and start >= 0:
            found.append(Finding("known identifier", start, start + len(needle)))
            start = lowered.find(needle, start + 1)
    for category, rx in PATTERNS:
        for m in rx.finditer(text):
            # Dates and version numbers share the phone shape; phone numbers have at least 9 digits.
            if category != "phone" or sum(c.isdigit() for c in m.group()) >= 9:
                found.append(Finding(category, m.start(), m.end()))
    return sorted(found, key=lambda f: (f.start, f.end))


def categories(findings: Iterable[Finding]) -> list[str]:
    """The distinct categories, in a stable order, for a reason text that holds no identifier."""
    return sorted({f.category for f in findings})


def redact_known(text: str, known: Iterable[str], replacement: str = "") -> tuple[str, int]:
    """Remove every occurrence of the known identifiers (case-insensitive); returns (text, count)."""
    count = 0
    for token in known:
        if not token:
            continue
        text, n = re.subn(re.escape(token), replacement, text, flags=re.IGNORECASE)
        count += n
    return text, count


def clean_text(text: str, known: Iterable[str]) -> tuple[str, int]:
    """Clean a descriptor: drop known identifiers; if a PHI pattern remains, drop the whole value."""
    cleaned, count = redact_known(text, known)
    if scan(cleaned):
        return "", count + 1
    return re.sub(r"\s{2,}", " ", cleaned).strip(), count
