"""Key loading, keyed pseudonyms, UID remapping and per-patient date shifts."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from pydicom.uid import UID

from protocols.errors import ConfigError
from protocols.keys import new_secret
from site_node.deid.keys import (
    UidMapper,
    date_shift_days,
    load_key,
    pseudonym,
    shift_da,
    shift_dt,
)

ROOT = "1.2.826.0.1.3680043.8.498."


def test_load_key_requires_32_bytes_and_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"x" * 31 + b"\n")
    with pytest.raises(ConfigError, match=r"k holds 31 bytes"):
        load_key(tmp_path / "k")
    with pytest.raises(ConfigError, match="cannot read key file"):
        load_key(tmp_path / "missing")
    (tmp_path / "k").write_bytes(b"y" * 32)
    assert load_key(tmp_path / "k") == b"y" * 32


def test_a_new_secret_keeps_every_random_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Replays CI's failure: random bytes that begin with a newline and end with a space lost both to the strip.
    raw = b"\n" + bytes(range(1, 31)) + b" "
    monkeypatch.setattr(secrets, "token_bytes", lambda n: raw[:n])
    new_secret(tmp_path / "site.key")
    assert load_key(tmp_path / "site.key") == raw.hex().encode()
    assert (tmp_path / "site.key").stat().st_mode & 0o777 == 0o600


def test_uid_mapper_is_keyed_deterministic_and_valid() -> None:
    a, b = UidMapper(b"a" * 32, ROOT), UidMapper(b"b" * 32, ROOT)
    uid = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    assert a(uid) == UidMapper(b"a" * 32, ROOT)(uid) != b(uid)
    assert a(uid) != a(uid + "1") and UID(a(uid)).is_valid and a(uid).startswith(ROOT) and len(a(uid)) <= 64


def test_date_shift_is_per_patient_and_in_range() -> None:
    key = b"k" * 32
    shifts = {date_shift_days(key, f"id::{i}", -3650, -366) for i in range(50)}
    assert all(-3650 <= s <= -366 for s in shifts) and len(shifts) > 40
    assert date_shift_days(key, "id::7", -3650, -366) == date_shift_days(key, "id::7", -3650, -366)


@pytest.mark.parametrize(
    ("fn", "value", "days", "expected"),
    [
        (shift_da, "20040119", -19, "20031231"),
        (shift_da, "20040301-20040302", 1, "20040302-20040303"),
        (shift_da, "20040301-", -1, "20040229-"),
        (shift_da, "2004", 3, ""),
        (shift_da, "20041399", 3, ""),
        (shift_dt, "20010213184746.123+0100", -365, "20000214184746.123+0100"),
        (shift_dt, "2001", 1, ""),
    ],
)
def test_date_shift_case_table(fn, value: str, days: int, expected: str) -> None:
    assert fn(value, days) == expected


def test_pseudonyms_differ_by_namespace_and_key() -> None:
    assert (
        pseudonym(b"a" * 32, "patient", "42")
        != pseudonym(b"a" * 32, "case", "42")
        != pseudonym(b"b" * 32, "patient", "42")
    )
    assert len(pseudonym(b"a" * 32, "patient", "42", prefix="P")) == 17
