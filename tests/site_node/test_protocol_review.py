"""Protocol review at a site: the hub's text is never parsed on request; approval checks what it approves."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from protocols.model_ref import manifest_hash
from site_node.approvals import list_pending
from site_node.audit import AuditLog, verify
from site_node.cli import main
from site_node.engine import SiteEngine
from site_node.home import SiteHome, init_home

# Under 535 characters (the size of the issue's) that expand to 9^8 strings when a YAML loader resolves the
# aliases and prints the result.
ALIAS_BOMB = (
    'study: {id: bomb, version: "1"}\n'
    "model: {manifest_sha256: '" + "0" * 64 + "'}\n"
    "tasks: [phase]\n"
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "sites: [*g,*g,*g,*g,*g,*g,*g,*g]\n"
)
PROTOCOL = {
    "study": {"id": "review", "version": "1"},
    "sites": ["a"],
    "model": {"manifest_sha256": "0" * 64},
    "tasks": ["phase"],
    "privacy": {"min_videos": 5},
}


def test_alias_bomb_is_kept_unparsed_and_the_engine_keeps_answering(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert len(ALIAS_BOMB) <= 535
    home = SiteHome(init_home(tmp_path / "site", "a").root)
    engine = SiteEngine(home, load=False)
    claimed = hashlib.sha256(ALIAS_BOMB.encode()).hexdigest()
    values = {
        "job-id": "bomb",
        "kind": "evaluate",
        "study": "bomb",
        "round": 0,
        "protocol-hash": claimed,
        "contract-version": 2,
    }
    reply = engine.handle(
        {
            "token": home.token(),
            "op": "submit",
            "records": {"job": {"kind": "config", "values": {**values, "protocol": ALIAS_BOMB}}},
        }
    )
    assert reply["records"]["job"]["values"] == {
        "job-id": "bomb",
        "state": "refused",
        "progress": 0.0,
        "reason": "protocol-not-approved",
    }
    hello = engine.handle({"token": home.token(), "op": "hello", "records": {}})
    assert hello["ok"] and hello["records"]["site"]["values"]["site-name"] == "a"
    assert verify(home.audit_log) == len(AuditLog(home.audit_log).entries())
    assert home.audit_log.stat().st_size < 10_000
    assert main(["audit", "verify", "--home", str(home.root)]) == 0

    assert [h for h, _, _ in list_pending(home.approved_dir)] == [claimed]
    assert main(["protocols", "pending", "--home", str(home.root)]) == 0
    assert claimed in capsys.readouterr().out
    for command in ("show", "approve"):  # the operator's tools refuse it in one line, without expanding it
        assert main(["protocols", command, claimed, "--home", str(home.root)]) == 1
        err = capsys.readouterr().err
        assert "aliases are not allowed" in err and len(err) < 500


def test_oversized_protocol_text_is_not_kept(tmp_path: Path) -> None:
    home = SiteHome(init_home(tmp_path / "site", "a").root)
    engine = SiteEngine(home, load=False)
    values = {
        "job-id": "big",
        "kind": "evaluate",
        "study": "s",
        "round": 0,
        "protocol-hash": "e" * 64,
        "contract-version": 2,
    }
    records = {"job": {"kind": "config", "values": {**values, "protocol": "é" * 40_000}}}  # 80 kB in 40k characters
    reply = engine.handle({"token": home.token(), "op": "submit", "records": records})
    assert reply["records"]["job"]["values"]["reason"] == "protocol-not-approved"
    assert list_pending(home.approved_dir) == []
    requests = [e for e in AuditLog(home.audit_log).entries() if e["event"] == "protocol-request"]
    assert [e["kept"] for e in requests] == ["too-large"]


@pytest.fixture
def model_site(tmp_path: Path, tiny_model_dir: Path) -> SiteHome:
    return SiteHome(init_home(tmp_path / "site", "a", model_dir=tiny_model_dir).root)


@pytest.mark.parametrize(
    ("case", "change", "problem"),
    [
        ("does not name this site", {"sites": ["b", "c"]}, "does not name this site"),
        ("names another model", {"model": {"manifest_sha256": "0" * 64}}, "is not this site's"),
    ],
)
def test_approval_refuses_a_protocol_not_meant_for_this_site(
    tmp_path: Path, model_site: SiteHome, tiny_model_dir: Path, capsys, case: str, change: dict, problem: str
) -> None:  # type: ignore[no-untyped-def]
    good = {**PROTOCOL, "model": {"manifest_sha256": manifest_hash(tiny_model_dir)}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({**good, **change}))
    home = str(model_site.root)
    assert main(["protocols", "approve", str(path), "--home", home]) == 1, case
    assert problem in capsys.readouterr().err
    assert not list(model_site.approved_dir.glob("*.yaml"))
    assert main(["protocols", "approve", str(path), "--force", "--home", home]) == 2  # --force needs a reason
    assert main(["protocols", "approve", str(path), "--force", "--reason", "pilot run", "--home", home]) == 0
    entry = AuditLog(model_site.audit_log).entries()[-1]
    assert entry["event"] == "protocol-approved" and entry["forced"] and entry["reason"] == "pilot run"

    path.write_text(yaml.safe_dump(good))
    capsys.readouterr()
    assert main(["protocols", "approve", str(path), "--home", home]) == 0
    shown = capsys.readouterr().out
    for asked in ("tasks", "rounds", "what leaves", "privacy", "fine-tuning", "matches this site's model"):
        assert asked in shown, asked


def test_policy_show_prints_the_policy_in_force(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    home = SiteHome(init_home(tmp_path / "site", "a").root)
    home.config_file.write_text(home.config_file.read_text().replace("max_rounds = 20", "max_rounds = 3"))
    assert main(["policy", "show", "--home", str(home.root)]) == 0
    out = capsys.readouterr().out
    assert "max_rounds = 3" in out and "min_videos = 5" in out and "require_dp = true" in out
