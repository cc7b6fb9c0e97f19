"""`site_node keys rotate|activate`: the old key stays until the coordinator's fingerprint matches the new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.keys import fingerprint
from site_node.audit import AuditLog, verify
from site_node.cli import main
from site_node.home import SiteHome, init_home


@pytest.fixture
def home(tmp_path: Path) -> SiteHome:
    return init_home(tmp_path / "site", "hospital-a")


def _fp(path: Path) -> str:
    return fingerprint(path.read_text())


def test_rotate_keeps_the_current_key_and_prints_what_to_send(
    home: SiteHome, capsys: pytest.CaptureFixture[str]
) -> None:
    current = home.node_key.read_bytes()
    assert main(["keys", "rotate", "--home", str(home.root)]) == 0
    out = capsys.readouterr().out
    pending = home.secrets_dir / "node.key.next.pub"
    assert home.node_key.read_bytes() == current
    assert (home.secrets_dir / "node.key.next").stat().st_mode & 0o777 == 0o600
    for expected in (
        pending.read_text().strip(),
        _fp(pending),
        _fp(home.node_pub),
        "hub sites rotate hospital-a node.key.next.pub",
        f"site_node keys activate --home {home.root} --fingerprint {_fp(pending)}",
    ):
        assert expected in out, expected
    # Asked again, the same pending key is shown; --restart makes another.
    assert main(["keys", "rotate", "--home", str(home.root)]) == 0
    assert _fp(pending) in capsys.readouterr().out
    first = _fp(pending)
    assert main(["keys", "rotate", "--home", str(home.root), "--restart"]) == 0
    assert _fp(pending) != first and home.node_key.read_bytes() == current


@pytest.mark.parametrize(
    ("confirmed", "error"),
    [
        ("SHA256:not-the-pending-key", "they registered another key"),
        (None, None),  # the pending key's own fingerprint
    ],
)
def test_activate_only_with_the_confirmed_fingerprint(
    home: SiteHome, capsys: pytest.CaptureFixture[str], confirmed: str | None, error: str | None
) -> None:
    old_fp, old_key = _fp(home.node_pub), home.node_key.read_bytes()
    main(["keys", "rotate", "--home", str(home.root)])
    new_fp = _fp(home.secrets_dir / "node.key.next.pub")
    capsys.readouterr()
    code = main(["keys", "activate", "--home", str(home.root), "--fingerprint", confirmed or new_fp])
    captured = capsys.readouterr()
    if error:
        assert code == 1 and error in captured.err and "Traceback" not in captured.err
        assert home.node_key.read_bytes() == old_key  # the old key is kept until the confirmation matches
        return
    assert code == 0 and "Restart `site_node serve`" in captured.out
    assert _fp(home.node_pub) == new_fp and home.node_key.read_bytes() != old_key
    assert home.node_key.stat().st_mode & 0o777 == 0o600
    assert not (home.secrets_dir / "node.key.next").exists()
    events = [e for e in AuditLog(home.audit_log).entries() if e["event"].startswith("node-key")]
    assert [e["event"] for e in events] == ["node-key-next", "node-key-activated"]
    assert events[1]["old_fingerprint"] == old_fp and events[1]["fingerprint"] == new_fp
    assert verify(home.audit_log) == 2


def test_activate_without_a_pending_key(home: SiteHome, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "activate", "--home", str(home.root), "--fingerprint", "SHA256:x"]) == 1
    assert "no pending node key" in capsys.readouterr().err


def test_study_ca_expiry_for_doctor(tmp_path: Path) -> None:
    from hub.pki import make_ca
    from protocols.cert_expiry import ExpiryState
    from site_node.keys import ca_expiry

    make_ca(tmp_path / "ca.crt", tmp_path / "ca.key", "study", days=20)
    with_ca = init_home(tmp_path / "a", "a", root_certificates=tmp_path / "ca.crt")
    check = ca_expiry(with_ca)
    assert check is not None and check.state is ExpiryState.WARN and "coordinator" in check.line()
    assert ca_expiry(init_home(tmp_path / "b", "b")) is None
