"""The site's pseudonym key: loading, keyed pseudonyms, consistent UID remapping, per-patient date shifts."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import date, timedelta
from pathlib import Path

from pydicom.uid import generate_uid

from protocols.errors import ConfigError

MIN_KEY_BYTES = 32


def load_key(path: Path) -> bytes:
    """Read a key file holding at least 32 bytes of secret (surrounding whitespace is not counted)."""
    try:
        data = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    if len(data) < MIN_KEY_BYTES:
        raise ConfigError(f"key file {path} holds {len(data)} bytes; at least {MIN_KEY_BYTES} are required")
    return data


def keyed_hex(key: bytes, namespace: str, value: str) -> str:
    """HMAC-SHA256 of `value` in `namespace`: the same input and key always give the same digest."""
    msg = f"{namespace}\x1f{value}".encode("utf-8", "surrogateescape")
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def pseudonym(key: bytes, namespace: str, value: str, prefix: str = "", length: int = 16) -> str:
    """A short keyed pseudonym of lowercase letters (16 letters: ~75 bits, collisions negligible for a site).

    Letters only: a hex pseudonym with nine digits in a row would read as a phone or record number to the
    identifier scan of label text, and quarantine the very files it names.
    """
    if not 1 <= length <= 32:
        raise ValueError(f"pseudonym length must be in [1, 32], got {length}")
    digest = bytes.fromhex(keyed_hex(key, namespace, value))
    return prefix + "".join(chr(ord("a") + b % 26) for b in digest[:length])


class UidMapper:
    """Remaps UIDs with a keyed HMAC into `generate_uid(root, entropy_srcs=...)`; consistent across runs."""

    def __init__(self, key: bytes, root: str) -> None:
        self._key = key
        self._root = root
        self._cache: dict[str, str] = {}

    def __call__(self, uid: str) -> str:
        uid = uid.strip().rstrip("\x00")
        if not uid:
            return uid
        new = self._cache.get(uid)
        if new is None:
            # The HMAC, not the UID itself, is the entropy: without the key the mapping cannot be replayed.
            new = str(generate_uid(self._root, entropy_srcs=[keyed_hex(self._key, "uid", uid)]))
            self._cache[uid] = new
        return new

    @property
    def mapped(self) -> int:
        return len(self._cache)


def date_shift_days(key: bytes, patient_key: str, low: int, high: int) -> int:
    """Whole-day shift for one patient in [low, high]; every study of the patient gets the same shift."""
    if low > high:
        raise ConfigError(f"date_shift_days: low {low} is above high {high}")
    n = int(keyed_hex(key, "date-shift", patient_key)[:12], 16)
    return low + n % (high - low + 1)


_DA = re.compile(r"(\d{4})(\d{2})(\d{2})")


def _shift_one(yyyymmdd: str, days: int) -> str | None:
    m = _DA.fullmatch(yyyymmdd)
    if not m:
        return None
    try:
        d = date(int(m[1]), int(m[2]), int(m[3])) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return f"{d.year:04d}{d.month:02d}{d.day:02d}"


def shift_da(value: str, days: int) -> str:
    """Shift a DA value (or a DA range 'A-B'); anything that is not a valid date becomes empty."""
    parts = value.strip().split("-")
    if len(parts) > 2:
        return ""
    out = []
    for part in parts:
        if part == "":
            out.append("")
            continue
        shifted = _shift_one(part.strip(), days)
        if shifted is None:
            return ""
        out.append(shifted)
    return "-".join(out)


_DT = re.compile(r"(\d{8})(.*)")


def shift_dt(value: str, days: int) -> str:
    """Shift the date part of a DT value; time of day, fraction and UTC offset are kept."""
    value = value.strip()
    m = _DT.fullmatch(value)
    if not m:
        # Year-only or year-month DT values carry too little to shift meaningfully: drop them.
        return ""
    shifted = _shift_one(m[1], days)
    return "" if shifted is None else shifted + m[2]
