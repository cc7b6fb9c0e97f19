"""App-bundle pinning: approved bundles installed as Flower lays them out; others cannot install in the sandbox."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk
from flwr.cli.install import install_from_fab

from protocols.errors import BundleError
from protocols.procs import free_port
from site_node import app_bundles as ab
from site_node import sandbox
from site_node.audit import AuditLog
from site_node.cli import main
from site_node.confinement import clientapp_layer, supernode_command
from site_node.home import SiteHome, init_home
from site_node.serve import prepare_clientapp_dir

ROGUE_APP = Path(__file__).resolve().parents[1] / "integration" / "rogue_app"
# What flwr-clientapp does with the bundle it pulls (flwr/supernode/runtime/run_clientapp.py), nothing more.
FLOWER_INSTALL = r"""
import json, sys
from pathlib import Path
from flwr.cli.install import install_from_fab
out = []
for fab in sys.argv[1:]:
    try:
        out.append({"installed": str(install_from_fab(Path(fab).read_bytes(), skip_prompt=True))})
    except Exception as exc:
        out.append({"error": type(exc).__name__})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def shipped() -> bytes:
    return ab.shipped_bundle()


@pytest.fixture
def home(tmp_path: Path) -> SiteHome:
    home = init_home(tmp_path / "site", "site-a", superlink=f"127.0.0.1:{free_port()}")
    prepare_clientapp_dir(home)
    return home


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _fab(files: dict[str, bytes], manifest: str | None = None, link: str | None = None) -> bytes:
    lines = [f"{n},{hashlib.sha256(c).hexdigest()},{8 * len(c)}" for n, c in files.items()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
        zf.writestr(".info/CONTENT", "\n".join(lines) if manifest is None else manifest)
    return buf.getvalue()


def test_approved_bundle_is_installed_exactly_where_and_as_flower_installs_it(
    home: SiteHome, shipped: bytes, tmp_path: Path
) -> None:
    bundle = ab.approve(home, shipped, "test")
    ours = ab.installed_dir(home) / bundle.folder
    flower = install_from_fab(shipped, install_dir=tmp_path / "flower", skip_prompt=True)
    assert flower.name == ours.name == bundle.folder
    assert _files(ours) == _files(flower) and "surgfed_app/client_app.py" in _files(ours)
    assert (ab.approvals_dir(home) / f"{bundle.sha256}.fab").read_bytes() == shipped
    events = [e for e in AuditLog(home.audit_log).entries() if e["event"] == "app-approved"]
    assert events[-1]["app_hash"] == hashlib.sha256(shipped).hexdigest()


def _flower_install_in_sandbox(home: SiteHome, bundles: list[bytes]) -> list[dict[str, str]]:
    """Flower's installer in the SuperNode + ClientApp layers, as every ClientApp process starts."""
    paths = []
    for i, data in enumerate(bundles):
        paths.append(home.clientapp_dir / "tmp" / f"incoming-{i}.fab")
        paths[-1].write_bytes(data)
    port = free_port()
    outer, env = supernode_command(home, home.config(), [], supernode_port=port, engine_address="unix:/x")
    inner = clientapp_layer(home, port, "unix:/x", [sys.executable, "-c", FLOWER_INSTALL, *map(str, paths)])
    done = subprocess.run(outer + inner, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(sandbox.abi_version() < 1, reason="no Landlock: bundles cannot be pinned on this kernel")
def test_only_approved_bundles_install_in_the_sandbox(home: SiteHome, shipped: bytes) -> None:
    approved = ab.approve(home, shipped, "test")
    rogue = build_fab_from_disk(ROGUE_APP)
    # The hub's own app, changed by one line: same name and version, another hash.
    altered = {**approved.files, "surgfed_app/client_app.py": approved.files["surgfed_app/client_app.py"] + b"#\n"}
    found = _flower_install_in_sandbox(home, [rogue, _fab(altered), shipped])
    assert found[:2] == [{"error": "PermissionError"}] * 2
    # The approved one is found installed: Flower skips its install and loads it from there.
    assert found[2] == {"installed": str(ab.installed_dir(home) / approved.folder)}
    assert [p.name for p in ab.installed_dir(home).iterdir()] == [approved.folder]


def _bad_bundles(shipped: bytes) -> list[tuple[str, bytes, str]]:
    good = ab.read_bundle(shipped, "x").files
    toml = good["pyproject.toml"].decode()
    return [
        ("not a zip", b"PK\x03\x04 nonsense", "not a Flower app bundle"),
        ("zip slip", _fab({**good, "../evil.py": b"x"}), "unsafe path"),
        ("absolute path", _fab({**good, "/tmp/evil.py": b"x"}), "unsafe path"),
        ("symlink", _fab(good, link="surgfed_app/link.py"), "symbolic link"),
        ("edited file", _fab(good, manifest=_fab_manifest(good, "surgfed_app/client_app.py")), "does not match"),
        ("unlisted file", _fab(good, manifest=_fab_manifest(good, None, drop="surgfed_app/records.py")), "differently"),
        ("no manifest", _zip_without_manifest(good), "no .info/CONTENT"),
        (
            "version escapes",
            _fab({**good, "pyproject.toml": toml.replace('"0.1.0"', '"0.1/../../x"').encode()}),
            "version",
        ),
        ("no publisher", _fab({**good, "pyproject.toml": toml.replace("publisher", "pub").encode()}), "publisher"),
        ("too large", b"\0" * (ab.MAX_BUNDLE_BYTES + 1), "bytes, more than"),
    ]


def _fab_manifest(files: dict[str, bytes], wrong: str | None, drop: str | None = None) -> str:
    lines = []
    for name, content in files.items():
        digest = hashlib.sha256(content + (b"!" if name == wrong else b"")).hexdigest()
        if name != drop:
            lines.append(f"{name},{digest},{8 * len(content)}")
    return "\n".join(lines)


def _zip_without_manifest(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def test_malformed_bundles_are_refused_naming_the_problem(home: SiteHome, shipped: bytes) -> None:
    for case, data, expected in _bad_bundles(shipped):
        with pytest.raises(BundleError, match=expected):
            ab.approve(home, data, case)
    assert ab.approved_apps(home) == [] and not ab.installed_dir(home).exists()


def test_start_removes_unapproved_folders_and_restores_approved_ones(
    home: SiteHome, shipped: bytes, tmp_path: Path
) -> None:
    approved = ab.approve(home, shipped, "test")
    apps = ab.installed_dir(home)
    stray = install_from_fab(build_fab_from_disk(ROGUE_APP), install_dir=apps.parent, skip_prompt=True)
    edited = apps / approved.folder / "surgfed_app" / "client_app.py"
    edited.parent.chmod(0o700)
    edited.chmod(0o600)
    edited.write_text("print('changed')\n")
    notes = ab.sync(home)
    assert sorted(p.name for p in apps.iterdir()) == [approved.folder]
    assert edited.read_bytes() == approved.files["surgfed_app/client_app.py"]
    assert any(stray.name in n for n in notes)
    assert [e["folder"] for e in AuditLog(home.audit_log).entries() if e["event"] == "app-removed"] == [stray.name]
    # An approval copied in by hand is honoured but recorded as such.
    other = SiteHome(init_home(tmp_path / "other", "site-b").root)
    ab.approvals_dir(other).mkdir()
    for p in ab.approvals_dir(home).iterdir():
        (ab.approvals_dir(other) / p.name).write_bytes(p.read_bytes())
    assert any("copied in" in n for n in ab.sync(other))
    assert (ab.installed_dir(other) / approved.folder).is_dir()
    assert [e["event"] for e in AuditLog(other.audit_log).entries()] == ["app-approval-found"]


def test_cli_approve_list_revoke(home: SiteHome, shipped: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    fab = home.root / "bundle.fab"
    fab.write_bytes(shipped)
    digest = hashlib.sha256(shipped).hexdigest()
    assert main(["apps", "approve", str(fab), "--home", str(home.root)]) == 0
    assert "surgfed_app/client_app.py" in capsys.readouterr().out  # the operator sees what they approve
    assert main(["apps", "list", "--shipped", "--home", str(home.root)]) == 0
    listed = capsys.readouterr().out
    assert digest in listed and "(approved)" in listed
    assert main(["apps", "revoke", digest[:12], "--home", str(home.root)]) == 0
    assert ab.approved_apps(home) == [] and list(ab.installed_dir(home).iterdir()) == []
    fab.write_bytes(shipped[:-10])
    assert main(["apps", "approve", str(fab), "--home", str(home.root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("site_node: error:") and "Traceback" not in err
    events = [e["event"] for e in AuditLog(home.audit_log).entries()]
    assert events == ["app-approved", "app-revoked"]
