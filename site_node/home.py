"""The site home: one folder per site with its config, secrets, data store, jobs, releases and logs."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from protocols.errors import ConfigError
from protocols.keys import new_node_key, new_secret, write_private
from site_node.policy import POLICY_TOML, SitePolicy, parse_policy

HOME_ENV = "SURGFED_SITE_HOME"
DEFAULT_CONSOLE_PORT = 8790
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ReleaseMode(str, Enum):
    AUTO = "auto"  # results leave as soon as the gate passes them
    MANUAL = "manual"  # results wait for `site_node releases approve`


class ModelBackend(str, Enum):
    HF = "hf"  # the engine loads [model] dir itself (transformers)
    OPENAI = "openai"  # the site's own OpenAI-compatible server answers, at [model] endpoint


@dataclass(frozen=True)
class SiteConfig:
    """site.toml, validated."""

    name: str
    release: ReleaseMode
    model_dir: Path | None
    device: str
    batch_size: int
    engine_port: int
    superlink: str
    root_certificates: Path | None
    insecure: bool
    supernode_port: int
    sandbox: bool
    epsilon_budget: float | None
    policy: SitePolicy
    devices: tuple[str, ...] = ()  # [model] devices: one model copy per device (empty: the one `device`)
    frame_workers: int = 0  # [model] frame_workers: processes that decode and preprocess frames ahead of the model
    backend: ModelBackend = ModelBackend.HF  # [model] backend
    endpoint: str | None = None  # [model] endpoint: the OpenAI-compatible server's base URL, http(s)://HOST:PORT/v1
    served_model: str | None = None  # [model] served_model: the model name the server knows (default: [model] dir)
    https_proxy: str | None = None  # [hub] https_proxy: the hospital's outbound proxy, http://HOST:PORT
    max_blank_share: float | None = None  # [ingest] max_blank_share: an ingest blanking more of its frames fails

    console_port: int = DEFAULT_CONSOLE_PORT  # [console] port: the data owner's console, on 127.0.0.1
    console_with_serve: bool = True  # [console] with_serve: `site_node serve` runs the console too
    console_public_url: str = ""  # [console] public_url: the base of login links behind a reverse proxy


@contextlib.contextmanager
def owner_only() -> Iterator[None]:
    """Everything created inside is 0600/0700 (umask 077): a site home holds patient data and secrets."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


class SiteHome:
    """Paths inside a site home; every site command takes one (`--home` or $SURGFED_SITE_HOME)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    config_file = property(lambda self: self.root / "site.toml")
    secrets_dir = property(lambda self: self.root / "secrets")
    key_file = property(lambda self: self.root / "secrets" / "site.key")
    node_key = property(lambda self: self.root / "secrets" / "node.key")
    node_pub = property(lambda self: self.root / "secrets" / "node.key.pub")
    token_file = property(lambda self: self.root / "secrets" / "engine.token")
    store_dir = property(lambda self: self.root / "store")
    manifest_file = property(lambda self: self.root / "store" / "manifest.json")
    reid_map = property(lambda self: self.root / "secrets" / "reid-map.json")
    ca_file = property(lambda self: self.root / "study-ca.crt")  # copied in by `init --ca`
    approved_dir = property(lambda self: self.root / "protocols")
    jobs_dir = property(lambda self: self.root / "jobs")
    audit_log = property(lambda self: self.root / "audit" / "audit.jsonl")
    logs_dir = property(lambda self: self.root / "logs")
    console_dir = property(lambda self: self.root / "console")  # console operators' login tokens and sessions
    # The only folder the SuperNode and its ClientApps may read: a token copy, the node key and FLWR_HOME.
    clientapp_dir = property(lambda self: self.root / "clientapp")

    def require(self) -> SiteHome:
        if not self.config_file.is_file():
            raise ConfigError(
                f"{self.root} is not a site home (no site.toml); run `site_node init --home {self.root} --site NAME`"
            )
        return self

    def token(self) -> str:
        try:
            return self.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the engine token {self.token_file}: {exc.strerror}") from exc

    def config(self) -> SiteConfig:
        self.require()
        try:
            data = tomllib.loads(self.config_file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{self.config_file}: {exc}") from exc
        return parse_site_config(data, self.config_file)


def _get(data: dict[str, Any], section: str, key: str, kind: type, default: Any, source: Path) -> Any:
    value = data.get(section, {}).get(key, default)
    if value is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{source}: [{section}] {key} must be {kind.__name__}, got {value!r}")


def _budget(data: dict[str, Any], source: Path) -> float | None:
    value = data.get("privacy", {}).get("epsilon_budget")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{source}: [privacy] epsilon_budget must be a positive number, got {value!r}")
    return float(value)


def parse_site_config(data: dict[str, Any], source: Path) -> SiteConfig:
    name = _get(data, "site", "name", str, None, source)
    if not name or not _NAME.fullmatch(name):
        raise ConfigError(f"{source}: [site] name must match {_NAME.pattern}, got {name!r}")
    release = _get(data, "site", "release", str, "auto", source)
    try:
        mode = ReleaseMode(release)
    except ValueError:
        raise ConfigError(f"{source}: [site] release must be 'auto' or 'manual', got {release!r}") from None
    model_dir = _get(data, "model", "dir", str, None, source)
    batch = _get(data, "model", "batch_size", int, 8, source)
    if not 1 <= batch <= 256:
        raise ConfigError(f"{source}: [model] batch_size must be in [1, 256], got {batch}")
    certs = _get(data, "hub", "root_certificates", str, None, source)
    return SiteConfig(
        name=name,
        release=mode,
        model_dir=(source.parent / model_dir).resolve() if model_dir else None,
        device=_get(data, "model", "device", str, "auto", source),
        batch_size=batch,
        engine_port=_get(data, "engine", "port", int, 0, source),
        superlink=_get(data, "hub", "superlink", str, "127.0.0.1:9092", source),
        root_certificates=(source.parent / certs).resolve() if certs else None,
        insecure=_get(data, "hub", "insecure", bool, False, source),
        supernode_port=_get(data, "supernode", "port", int, 0, source),
        sandbox=_get(data, "supernode", "sandbox", bool, True, source),
        epsilon_budget=_budget(data, source),
        policy=parse_policy(data.get("policy"), f"{source}: [policy]"),
        devices=_devices(data, source),
        frame_workers=_frame_workers(data, source),
        **_backend(data, source),
        https_proxy=_https_proxy(data, source),
        max_blank_share=_share(data, "ingest", "max_blank_share", source),
        **_console(data, source),
    )


def _https_proxy(data: dict[str, Any], source: Path) -> str | None:
    value = _get(data, "hub", "https_proxy", str, None, source)
    if not value:
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        port, parts = None, urlsplit("")
    if parts.scheme != "http" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ConfigError(f"{source}: [hub] https_proxy must be http://HOST:PORT (the outbound proxy), got {value!r}")
    return str(value)


def proxy_shown(url: str) -> str:
    """The proxy as logs and reports name it: without any user name or password in the URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}"


def _share(data: dict[str, Any], section: str, key: str, source: Path) -> float | None:
    value = data.get(section, {}).get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{source}: [{section}] {key} must be a number in [0, 1], got {value!r}")
    return float(value)


def _console(data: dict[str, Any], source: Path) -> dict[str, Any]:
    port = _get(data, "console", "port", int, DEFAULT_CONSOLE_PORT, source)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{source}: [console] port must be in [1, 65535], got {port}")
    url = _get(data, "console", "public_url", str, "", source)
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: [console] public_url must start with http:// or https://, got {url!r}")
    return {
        "console_port": port,
        "console_with_serve": _get(data, "console", "with_serve", bool, True, source),
        "console_public_url": url.rstrip("/"),
    }


def _devices(data: dict[str, Any], source: Path) -> tuple[str, ...]:
    value = data.get("model", {}).get("devices", [])
    if not isinstance(value, list) or not all(isinstance(d, str) and d for d in value):
        raise ConfigError(
            f'{source}: [model] devices must be a list of device names like ["cuda:0", "cuda:1"], got {value!r}'
        )
    return tuple(value)


def _frame_workers(data: dict[str, Any], source: Path) -> int:
    value = _get(data, "model", "frame_workers", int, 0, source)
    if not 0 <= value <= 64:
        raise ConfigError(f"{source}: [model] frame_workers must be in [0, 64], got {value}")
    return int(value)


def _backend(data: dict[str, Any], source: Path) -> dict[str, Any]:
    value = _get(data, "model", "backend", str, "hf", source)
    try:
        backend = ModelBackend(value)
    except ValueError:
        raise ConfigError(f"{source}: [model] backend must be 'hf' or 'openai', got {value!r}") from None
    endpoint = _get(data, "model", "endpoint", str, None, source)
    if backend is ModelBackend.HF and endpoint is not None:
        raise ConfigError(f'{source}: [model] endpoint {endpoint!r} is set, but backend is "hf" (use "openai")')
    if backend is ModelBackend.OPENAI:
        try:  # .port raises ValueError on a port that is no number in [0, 65535]
            parts = urlsplit(endpoint or "")
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.username and parts.port != 0
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(
                f'{source}: [model] endpoint must be the server\'s base URL like "http://127.0.0.1:8000/v1" '
                f'(no user name or password) when backend is "openai", got {endpoint!r}'
            )
        if parts.query or parts.fragment:
            raise ConfigError(f"{source}: [model] endpoint must have no query or fragment, got {endpoint!r}")
    served = _get(data, "model", "served_model", str, None, source)
    return {"backend": backend, "endpoint": endpoint, "served_model": served or None}


SITE_TOML = (
    """# Site node configuration, written by `site_node init` (see README.md, section "At a hospital (site node)").
[site]
name = "{name}"
# auto: results leave once the release gate passes them; manual (`site_node init --release manual`): they wait
# for `site_node releases approve` (restart `site_node serve` after changing this).
release = "{release}"

[model]
# Local model directory (Surg-R1 weights, tokenizer, processor); loaded with local_files_only.
{model_line}
device = "auto"
batch_size = 8
# Processes that decode and preprocess frames ahead of the model (0: in the engine's own thread).
frame_workers = 0
# Several GPUs: one model copy per device, batches shared between them, e.g. devices = ["cuda:0", "cuda:1"].
# A model server the site runs itself (vLLM, SGLang, TGI, `transformers serve`) on the same weights as `dir`:
# backend = "openai", endpoint = "http://127.0.0.1:8000/v1", served_model = its model name (default: dir).
backend = "hf"

[engine]
# The site engine listens on 127.0.0.1 only; 0 picks a free port at start.
port = 0

[hub]
# The hub's public (Fleet-only) address and the study CA certificate.
superlink = "{superlink}"
{certs_line}
insecure = false
# The hospital's outbound HTTPS proxy (the SuperNode then dials the hub through it, CONNECT only), e.g.
# https_proxy = "http://proxy.hospital.example:3128"

[ingest]
# An ingest whose out-of-body detector blanks more than this share of a dataset's frames fails (unset: it
# only warns above 10%); `site_node ingest --max-blank-share` sets it for one run.
# max_blank_share = 0.5

[privacy]
# The most differential-privacy epsilon (per video) this site spends on one fine-tuning study;
# unset = the protocol's target. A training round that would pass it is refused before it starts.
# epsilon_budget = 8.0

"""
    + POLICY_TOML
    + """
[console]
# The data owner's console (`site_node console`): status, data, protocols, releases, audit, policy.
# It listens on 127.0.0.1 only; sign in with a link from `site_node console login`.
port = {console_port}
# `site_node serve` runs the console too (false: run `site_node console` on its own).
with_serve = true
# Behind a reverse proxy, the address login links should use, e.g. "https://console.hospital.example".
# public_url = ""

[supernode]
port = 0
# The SuperNode and every ClientApp it starts run in a Landlock sandbox that cannot read this site home
# (data, keys, audit log) except clientapp/: only the engine reads the rest. It also pins the app bundles:
# only those approved with `site_node apps approve` can run (false: any bundle can). Needs Linux >= 5.13.
sandbox = true
"""
)


def init_home(
    root: Path,
    name: str,
    *,
    model_dir: Path | None = None,
    superlink: str = "127.0.0.1:9092",
    root_certificates: Path | None = None,
    release: str = "auto",
) -> SiteHome:
    """Create a new site home; refuses to overwrite an existing one."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"site name must match {_NAME.pattern}, got {name!r}")
    home = SiteHome(root)
    if home.config_file.exists():
        raise ConfigError(f"{home.config_file} already exists; refusing to overwrite a site home")
    with owner_only():
        _create(home, name, model_dir, superlink, root_certificates, release)
    home.config()  # what we wrote must load
    return home


def _create(
    home: SiteHome, name: str, model_dir: Path | None, superlink: str, root_certificates: Path | None, release: str
) -> None:
    home.root.mkdir(parents=True, exist_ok=True)
    if root_certificates is not None:  # the home keeps its own copy: the given path may be a download folder
        _copy_ca(Path(root_certificates), home.ca_file)
    for d in (
        home.store_dir,
        home.approved_dir,
        home.jobs_dir,
        home.audit_log.parent,
        home.logs_dir,
        home.secrets_dir,
        home.clientapp_dir,
    ):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)  # owner only: the engine's account
    new_secret(home.key_file)
    new_node_key(home.node_key)
    write_private(home.token_file, secrets.token_urlsafe(32).encode())
    text = SITE_TOML.format(
        name=name,
        release=ReleaseMode(release).value,
        model_line=f'dir = "{Path(model_dir).resolve()}"' if model_dir else '# dir = "/path/to/surg-r1"',
        superlink=superlink,
        console_port=DEFAULT_CONSOLE_PORT,
        certs_line=f'root_certificates = "{home.ca_file.name}"  # the study CA, copied here by `site_node init --ca`'
        if root_certificates
        else '# root_certificates = "/path/to/ca.crt"',
    )
    home.config_file.write_text(text, encoding="utf-8")
    home.config_file.chmod(0o600)
    home.node_pub.chmod(0o600)
    os.chmod(home.root, 0o700)


def _copy_ca(source: Path, dest: Path) -> None:
    """The study CA, checked to be a PEM certificate, copied into the home (the given path may be a download)."""
    from cryptography import x509

    try:
        data = source.read_bytes()
        x509.load_pem_x509_certificate(data)
    except OSError as exc:
        raise ConfigError(f"--ca {source}: cannot read the study CA: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"--ca {source}: expected a PEM certificate (the hub's pki/ca.crt), got: {exc}") from exc
    dest.write_bytes(data)
    dest.chmod(0o600)
