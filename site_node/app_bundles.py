"""ClientApp bundles (Flower FABs) the site operator approved: pinned by sha256, installed read-only.

Flower 1.42's `flwr-clientapp` installs the bundle it receives into FLWR_HOME/apps/
<publisher>.<name>.<version>.<sha256[:8]> (the hash of the bytes it received, computed locally), skips the
install when that folder exists, and only then imports the ClientApp from it. The ClientApp sandbox layer
may read FLWR_HOME but not write it (site_node/confinement.py), so only a bundle installed here can run:
any other one fails at its install, before a line of it is imported. A bundle whose name, version and
hash prefix collide with an approved one is not installed either: the approved code runs instead.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from protocols.errors import BundleError, ConfigError, UsageError
from protocols.procs import flower_env, site_env
from site_node.audit import AuditLog
from site_node.home import SiteHome
from site_node.sandbox import code_root

MAX_BUNDLE_BYTES = 16 * 1024 * 1024  # a ClientApp bundle is a few KiB of code; Flower's recipes say <= 10 MB
MAX_UNPACKED_BYTES = 64 * 1024 * 1024
MAX_FILES = 2000
INFO = ".info/"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,63}")  # Flower's publisher and app names (no dots, no slashes)
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
_SHA = re.compile(r"[0-9a-f]{64}")
_PREFIX = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True)
class AppBundle:
    """A verified bundle: its identity as Flower reads it, its hash, and its files (without .info/)."""

    publisher: str
    name: str
    version: str
    sha256: str
    files: dict[str, bytes]

    @property
    def fab_id(self) -> str:
        return f"{self.publisher}/{self.name}"

    @property
    def folder(self) -> str:
        """Where flwr-clientapp looks for it under FLWR_HOME/apps (flwr.common.config.get_project_dir)."""
        return f"{self.publisher}.{self.name}.{self.version}.{self.sha256[:8]}"


def approvals_dir(home: SiteHome) -> Path:
    """Approved bundles as `<sha256>.fab` plus `<sha256>.json`: the record `serve` reinstalls from."""
    return home.root / "apps"


def installed_dir(home: SiteHome) -> Path:
    """FLWR_HOME/apps of the SuperNode and its ClientApps (readable, not writable, in their sandbox)."""
    return home.clientapp_dir / "flwr" / "apps"


def _member_names(zf: zipfile.ZipFile, source: str) -> list[zipfile.ZipInfo]:
    infos = [i for i in zf.infolist() if not i.filename.endswith("/")]
    if len(infos) > MAX_FILES or sum(i.file_size for i in infos) > MAX_UNPACKED_BYTES:
        raise BundleError(f"{source}: {len(infos)} files, more than a ClientApp bundle may unpack to")
    for info in infos:
        name, mode = info.filename, info.external_attr >> 16
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
            raise BundleError(f"{source}: unsafe path in the bundle: {name!r}")
        if stat.S_ISLNK(mode):
            raise BundleError(f"{source}: the bundle holds a symbolic link: {name!r}")
    return infos


def _unpack(data: bytes, source: str) -> dict[str, bytes]:
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{source}: {len(data)} bytes, more than the {MAX_BUNDLE_BYTES} a bundle may have")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            files = {}
            for info in _member_names(zf, source):
                with zf.open(info) as fh:
                    content = fh.read(info.file_size + 1)
                if len(content) != info.file_size:
                    raise BundleError(f"{source}: {info.filename} does not unpack to its stated size")
                files[info.filename] = content
            return files
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise BundleError(f"{source}: not a Flower app bundle (.fab zip): {exc}") from None


def _check_manifest(files: dict[str, bytes], source: str) -> None:
    """Every file listed in .info/CONTENT with its sha256, and nothing unlisted (Flower checks listed ones only)."""
    manifest = files.get(INFO + "CONTENT")
    if manifest is None:
        raise BundleError(f"{source}: no .info/CONTENT manifest; expected a bundle made by `flwr build`")
    listed = {}
    for line in manifest.decode("utf-8", errors="replace").strip().splitlines():
        fields = line.split(",")
        if len(fields) != 3:
            raise BundleError(f"{source}: .info/CONTENT line {line[:80]!r}: expected path,sha256,bits")
        listed[fields[0]] = fields[1]
    payload = {k for k in files if not k.startswith(INFO)}
    if set(listed) != payload:
        raise BundleError(f"{source}: .info/CONTENT lists {sorted(set(listed) ^ payload)[:5]} differently from the zip")
    for name, digest in listed.items():
        if hashlib.sha256(files[name]).hexdigest() != digest:
            raise BundleError(f"{source}: {name} does not match its hash in .info/CONTENT")


def _identity(pyproject: bytes, source: str) -> tuple[str, str, str]:
    try:
        config = tomllib.loads(pyproject.decode("utf-8"))
        publisher = config["tool"]["flwr"]["app"]["publisher"]
        name, version = config["project"]["name"], config["project"]["version"]
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise BundleError(f"{source}: pyproject.toml lacks a Flower app's publisher, name or version: {exc}") from None
    for what, value, pattern in (
        ("publisher", publisher, _NAME),
        ("name", name, _NAME),
        ("version", version, _VERSION),
    ):
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise BundleError(f"{source}: app {what} {value!r} does not match {pattern.pattern}")
    return publisher, name, version


def read_bundle(data: bytes, source: str) -> AppBundle:
    """Verify a bundle's zip layout, manifest and identity; nothing in it is executed."""
    files = _unpack(data, source)
    _check_manifest(files, source)
    if "pyproject.toml" not in files:
        raise BundleError(f"{source}: no pyproject.toml; expected a bundle made by `flwr build`")
    publisher, name, version = _identity(files["pyproject.toml"], source)
    payload = {k: v for k, v in files.items() if not k.startswith(INFO)}
    return AppBundle(publisher, name, version, hashlib.sha256(data).hexdigest(), payload)


def _writable_tree(path: Path) -> None:
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            os.chmod(Path(root) / d, 0o700)
    os.chmod(path, 0o700)


def remove_tree(path: Path) -> None:
    """Remove an installed (read-only) bundle folder."""
    if path.is_dir() and not path.is_symlink():
        _writable_tree(path)
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _matches(folder: Path, bundle: AppBundle) -> bool:
    if not folder.is_dir() or folder.is_symlink():
        return False
    found = {
        p.relative_to(folder).as_posix(): p
        for p in folder.rglob("*")
        if p.is_file() or p.is_symlink()
        if "__pycache__" not in p.parts
    }
    return set(found) == set(bundle.files) and all(
        not p.is_symlink() and p.read_bytes() == bundle.files[n] for n, p in found.items()
    )


def install(bundle: AppBundle, apps: Path) -> Path:
    """Write the bundle into `apps` exactly as Flower lays it out, read-only; replace a folder that differs."""
    target = apps / bundle.folder
    if _matches(target, bundle):
        return target
    apps.mkdir(mode=0o700, parents=True, exist_ok=True)
    for folder in (apps.parent, apps):  # FLWR_HOME and its apps/: inside the owner-only site home
        folder.chmod(0o700)
    staging = Path(tempfile.mkdtemp(prefix=f".{bundle.folder}.", dir=apps))
    # Read-only for the owner (the SuperNode and its ClientApps run as the site's account), nothing for others.
    for name, content in bundle.files.items():
        path = staging / name
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(0o400)
    for root, dirs, _ in os.walk(staging, topdown=False):
        for d in dirs:
            os.chmod(Path(root) / d, 0o500)
    os.chmod(staging, 0o500)
    if target.exists() or target.is_symlink():
        remove_tree(target)
    staging.rename(target)
    return target


@dataclass(frozen=True)
class ApprovedApp:
    sha256: str
    fab_id: str
    version: str
    folder: str
    source: str
    approved: float


def _record(path: Path) -> ApprovedApp:
    data = json.loads(path.read_text(encoding="utf-8"))
    return ApprovedApp(**{k: data[k] for k in ApprovedApp.__dataclass_fields__})


def approved_apps(home: SiteHome) -> list[ApprovedApp]:
    folder = approvals_dir(home)
    records = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return [_record(p) for p in records if _SHA.fullmatch(p.stem)]


def approve(home: SiteHome, data: bytes, source: str) -> AppBundle:
    """Pin a bundle by sha256, keep a copy to reinstall from, install it read-only and audit the approval."""
    bundle = read_bundle(data, source)
    for other in approved_apps(home):
        if other.folder == bundle.folder and other.sha256 != bundle.sha256:
            raise BundleError(
                f"{source}: {bundle.fab_id} {bundle.version} hash {bundle.sha256[:16]}... shares Flower's folder "
                f"{bundle.folder} with approved bundle {other.sha256[:16]}...; revoke that one first"
            )
    folder = approvals_dir(home)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    (folder / f"{bundle.sha256}.fab").write_bytes(data)
    (folder / f"{bundle.sha256}.fab").chmod(0o600)
    record = ApprovedApp(bundle.sha256, bundle.fab_id, bundle.version, bundle.folder, source[:200], time.time())
    (folder / f"{bundle.sha256}.json").write_text(json.dumps(record.__dict__, indent=1), encoding="utf-8")
    (folder / f"{bundle.sha256}.json").chmod(0o600)
    install(bundle, installed_dir(home))
    AuditLog(home.audit_log).append(
        "app-approved", app_hash=bundle.sha256, app=bundle.fab_id, version=bundle.version, how=source[:200]
    )
    return bundle


def find(home: SiteHome, prefix: str) -> ApprovedApp:
    if not _PREFIX.fullmatch(prefix):
        raise UsageError(f"expected at least 8 hex digits of an approved bundle's sha256, got {prefix!r}")
    hits = [a for a in approved_apps(home) if a.sha256.startswith(prefix)]
    if len(hits) != 1:
        raise UsageError(f"{len(hits)} approved bundles start with {prefix} (see `site_node apps list`)")
    return hits[0]


def revoke(home: SiteHome, prefix: str) -> ApprovedApp:
    """Forget an approval and uninstall the bundle: the next message that needs it fails at its install."""
    app = find(home, prefix)
    remove_tree(installed_dir(home) / app.folder)
    for suffix in (".fab", ".json"):
        (approvals_dir(home) / f"{app.sha256}{suffix}").unlink(missing_ok=True)
    AuditLog(home.audit_log).append("app-revoked", app_hash=app.sha256, app=app.fab_id, version=app.version)
    return app


def _recorded(audit: AuditLog) -> set[str]:
    """Bundle hashes the audit log records as approved and not revoked since."""
    hashes: set[str] = set()
    for entry in audit.entries():
        if entry.get("event") in ("app-approved", "app-approval-found"):
            hashes.add(str(entry.get("app_hash")))
        elif entry.get("event") == "app-revoked":
            hashes.discard(str(entry.get("app_hash")))
    return hashes


def sync(home: SiteHome) -> list[str]:
    """At `serve` start: (re)install every approved bundle from its copy; remove every other folder in apps/.

    A folder that Flower or anyone else left there (an install from before pinning, a copied folder) would
    otherwise run without approval; an approval copied in by hand is installed but recorded as such.
    """
    audit, keep, notes = AuditLog(home.audit_log), set(), []
    recorded = _recorded(audit)
    for app in approved_apps(home):
        fab = approvals_dir(home) / f"{app.sha256}.fab"
        try:
            data = fab.read_bytes()
            if hashlib.sha256(data).hexdigest() != app.sha256:
                raise BundleError(f"{fab} no longer hashes to its name")
            bundle = read_bundle(data, str(fab))
        except (OSError, BundleError) as exc:
            notes.append(f"approved bundle {app.sha256[:16]}... not installed: {exc}")
            continue
        install(bundle, installed_dir(home))
        keep.add(bundle.folder)
        if app.sha256 not in recorded:
            audit.append("app-approval-found", app_hash=app.sha256, app=bundle.fab_id, how="file copied in")
            notes.append(f"approved bundle {app.sha256[:16]}... has no approval in the audit log (copied in)")
    apps = installed_dir(home)
    for path in sorted(apps.iterdir()) if apps.is_dir() else []:
        if path.name not in keep:
            remove_tree(path)
            audit.append("app-removed", folder=path.name[:120], why="not approved")
            notes.append(f"removed {path.name} from {apps}: not an approved bundle")
    return notes


@functools.lru_cache(maxsize=1)
def shipped_bundle() -> bytes:
    """The ClientApp bundle of the installed surgfed release, built by `flwr build` as `flwr run` builds it."""
    app = code_root() / "hub" / "flower_app"
    if not (app / "pyproject.toml").is_file():
        raise ConfigError(f"this installation has no Flower app at {app}; approve the coordinator's .fab file")
    exe = Path(sys.executable).with_name("flwr")
    with tempfile.TemporaryDirectory() as tmp:
        # `flwr build` wants a valid app name as the folder's name; the paths inside the bundle are relative.
        src, out = Path(tmp) / "surgfed-app", Path(tmp) / "out"
        shutil.copytree(app, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        out.mkdir()
        result = subprocess.run(
            [str(exe) if exe.exists() else "flwr", "build", "--app", str(src)],
            cwd=out,
            env=flower_env(Path(tmp) / "flwr-home", site_env()),
            capture_output=True,
            text=True,
            timeout=300,
        )
        fabs = sorted(out.glob("*.fab"))
        if result.returncode != 0 or len(fabs) != 1:
            raise ConfigError(f"`flwr build` of {app} failed ({result.returncode}): {result.stderr[-500:]}")
        return fabs[0].read_bytes()
