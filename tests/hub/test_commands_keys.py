"""`hub sites rotate` refuses, in one line and before touching the SuperLink, what cannot be a rotation."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hub.cli import main
from hub.home import init_hub
from protocols.keys import new_node_key, read_public_key


@pytest.mark.parametrize(
    ("site", "key", "error"),
    [
        ("nobody", "new", "no active site named 'nobody'"),
        ("hospital-a", "current", "is already the registered key of hospital-a"),
        ("hospital-a", "rsa", "expected an ECDSA P-384 key"),
        ("hospital-a", "missing", "cannot read public key"),
    ],
)
def test_rotate_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str], site: str, key: str, error: str) -> None:
    home = init_hub(tmp_path / "hub")
    current = new_node_key(tmp_path / "current.key")
    home.store().add_site("hospital-a", 7, read_public_key(current))
    new_node_key(tmp_path / "new.key")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(tmp_path / "rsa.key")], check=True
    )
    code = main(["sites", "rotate", site, str(tmp_path / f"{key}.key.pub"), "--home", str(home.root)])
    err = capsys.readouterr().err
    assert code == 1 and error in err and "Traceback" not in err
    assert home.store().site_nodes() == {7: "hospital-a"}  # nothing changed
