"""`site_node doctor`: preflight checks for hospital IT, each ok/warn/fail with the fix in one line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from importlib import metadata
from pathlib import Path

from protocols.cert_expiry import WARN_DAYS  # one warning horizon for doctor, `hub status` and `hub pki status`
from protocols.errors import SurgFedError, UsageError
from site_node.doctor_hub import HubProbe, KeyState, probe_hub
from site_node.home import HOME_ENV, ModelBackend, SiteConfig, SiteHome

PACKAGES = ("torch", "transformers", "peft", "flwr", "av", "pydicom", "surgfed")

GIB = 1024**3
FAIL_FREE, WARN_FREE = 1 * GIB, 10 * GIB
# Flower's node authentication accepts a signature up to 5 s ahead of the hub's clock and 300 s behind it.
AHEAD_LIMIT, BEHIND_LIMIT, SKEW_WARN = 4.0, 290.0, 2.0
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class Level(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""


def ok(name: str, detail: str) -> Check:
    return Check(name, Level.OK, detail)


def check_python() -> Check:
    versions, missing = [], []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            missing.append(name)
    detail = f"Python {platform.python_version()}; " + ", ".join(versions)
    if missing:
        return Check("python", Level.FAIL, f"{detail}; missing: {', '.join(missing)}", "install with requirements.lock")
    return ok("python", detail)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_home(home: SiteHome) -> Check:
    mode = _mode(home.root)
    if mode & 0o077:
        return Check("home", Level.FAIL, f"{home.root} has mode {mode:04o}, expected 0700", f"chmod 700 {home.root}")
    loose = [p for p in _tree(home.root) if _mode(p) & 0o077]
    if loose:  # inside a 0700 home nobody else can reach them, but a copy or a backup keeps the modes
        first = loose[0].relative_to(home.root)
        detail = f"{len(loose)} file(s) or folder(s) others may read, e.g. {first} ({_mode(loose[0]):04o})"
        return Check("home", Level.WARN, detail, f"chmod -R go-rwx {home.root}")
    return ok("home", f"{home.root}: owner-only (0700 folders, 0600 files)")


def _tree(root: Path) -> list[Path]:
    out = []
    for folder, dirs, files in os.walk(root):
        out += [Path(folder, name) for name in dirs + files if not Path(folder, name).is_symlink()]
    return out


def check_secrets(home: SiteHome) -> Check:
    required = (home.key_file, home.node_key, home.token_file)
    for path in required + ((home.reid_map,) if home.reid_map.exists() else ()):
        rel = path.relative_to(home.root)
        if not path.is_file():
            return Check("secrets", Level.FAIL, f"{rel} is missing", "restore the site home's secrets/ from its backup")
        mode = _mode(path)
        if mode & 0o077:
            return Check(
                "secrets",
                Level.FAIL,
                f"{rel} has mode {mode:04o} (others may read it), expected 0600",
                f"chmod 600 {path}",
            )
    return ok("secrets", "pseudonym key, node key, engine token present, owner-only")


def _weights_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def check_model(cfg: SiteConfig) -> Check:
    from protocols.model_ref import manifest_hash

    d = cfg.model_dir
    if d is None:
        return Check("model", Level.FAIL, "site.toml names no model directory", "set [model] dir in site.toml")
    if not d.is_dir():
        return Check("model", Level.FAIL, f"model directory {d} does not exist", f"copy the model to {d}")
    try:
        files = [p for p in d.rglob("*") if p.is_file()] if os.listdir(d) else []
        for path in files:
            with path.open("rb") as fh:
                fh.read(1)
        digest = manifest_hash(d)
    except (OSError, SurgFedError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return Check(
            "model",
            Level.FAIL,
            f"model directory {d} is not readable: {reason}",
            f"let the site's service account read it (chmod -R u+rX {d} or chown)",
        )
    return ok("model", f"{d}: {len(files)} files, manifest sha256 {digest}")


def check_gpu(cfg: SiteConfig) -> Check:
    import torch

    wanted = [dev for dev in (*cfg.devices, cfg.device) if dev.startswith("cuda")]
    size = _weights_bytes(cfg.model_dir) if cfg.model_dir and cfg.model_dir.is_dir() else 0
    if not torch.cuda.is_available():
        if wanted:
            return Check("gpu", Level.FAIL, f"no GPU visible, but site.toml asks for {wanted[0]}", "check the driver")
        return Check(
            "gpu",
            Level.WARN,
            f"no GPU visible: the engine runs on CPU (model weights {size / GIB:.2f} GiB; a 7B model is very slow)",
            "install the NVIDIA driver and a CUDA build of torch, or accept the CPU",
        )
    free = [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]
    detail = f"{len(free)} GPU(s), free {', '.join(f'{f / GIB:.1f}' for f in free)} GiB; weights {size / GIB:.2f} GiB"
    if max(free) < size * 1.2:  # weights plus activations and the LoRA optimizer state
        return Check("gpu", Level.WARN, detail + ": too little free memory", "stop other GPU jobs or use a larger GPU")
    return ok("gpu", detail)


def check_model_server(cfg: SiteConfig) -> Check:
    """[model] backend = "openai": the server answers at the endpoint and lists the served model."""
    from site_node.model.openai_backend import listed_models, served_model

    if cfg.model_dir is None:
        return Check("model server", Level.FAIL, "site.toml names no model directory", "set [model] dir")
    model = served_model(cfg, cfg.model_dir)
    try:
        names = listed_models(model)
    except SurgFedError as exc:
        return Check("model server", Level.FAIL, str(exc), "start the model server, or fix [model] endpoint")
    if model.name not in names:
        detail = f"{model.endpoint} lists {names[:5]}, not {model.name!r}"
        return Check("model server", Level.WARN, detail, "set [model] served_model to the name the server lists")
    return ok("model server", f"{model.endpoint} serves {model.name!r}")


def check_sandbox(cfg: SiteConfig) -> Check:
    from site_node.sandbox import grants

    granted = grants()
    if not cfg.sandbox:
        return Check("sandbox", Level.WARN, "[supernode] sandbox = false in site.toml", "set sandbox = true")
    if not granted.files:
        return Check(
            "sandbox", Level.FAIL, granted.describe(), "use Linux >= 5.13 with Landlock enabled (lsm=...,landlock)"
        )
    if not (granted.network and granted.scoping):
        return Check("sandbox", Level.WARN, granted.describe(), "a newer kernel (Linux >= 6.12) grants all rules")
    return ok("sandbox", granted.describe())


def check_disk(home: SiteHome) -> Check:
    free = shutil.disk_usage(home.store_dir if home.store_dir.is_dir() else home.root).free
    detail = f"{free / GIB:.1f} GiB free for the store and jobs"
    if free < FAIL_FREE:
        return Check("disk", Level.FAIL, detail, f"free space on the file system of {home.root}")
    if free < WARN_FREE:
        return Check("disk", Level.WARN, detail, f"free space on the file system of {home.root}")
    return ok("disk", detail)


def hub_checks(home: SiteHome, cfg: SiteConfig) -> list[Check]:
    if cfg.insecure:
        return [Check("hub", Level.WARN, "[hub] insecure = true: no TLS, no node authentication", "tests only")]
    if cfg.root_certificates is None or not cfg.root_certificates.is_file():
        return [
            Check(
                "hub",
                Level.FAIL,
                f"no study CA file (got {cfg.root_certificates})",
                "copy the coordinator's ca.crt into the home and set [hub] root_certificates",
            )
        ]
    probe = probe_hub(cfg, home.node_key)
    return [_hub_check(probe), _key_check(home, cfg, probe), _cert_check(cfg, probe), _clock_check(probe)]


def _hub_check(probe: HubProbe) -> Check:
    route = f" through the proxy {probe.via}" if probe.via else ""
    if probe.error:
        return Check(
            "hub",
            Level.FAIL,
            f"cannot reach the hub at {probe.address}{route}: {probe.error}",
            "check [hub] superlink and [hub] https_proxy, the firewall, and that the CA is the study's",
        )
    return ok("hub", f"TLS with {probe.address}{route}, verified against the study CA")


def _key_check(home: SiteHome, cfg: SiteConfig, probe: HubProbe) -> Check:
    if probe.error:
        return Check("node-key", Level.FAIL, "not checked: the hub is unreachable", "fix the hub check first")
    if probe.key_state is KeyState.REGISTERED:
        return ok("node-key", probe.key_detail)
    if probe.key_state is KeyState.UNCLEAR:  # another Flower version may answer otherwise: not proof of a fault
        return Check("node-key", Level.WARN, probe.key_detail, "compare the site's and the hub's Flower versions")
    fix = f"send {home.node_pub} to the coordinator for `hub sites add {cfg.name} FILE`"
    return Check("node-key", Level.FAIL, probe.key_detail, fix)


def _cert_check(cfg: SiteConfig, probe: HubProbe) -> Check:
    from cryptography import x509

    assert cfg.root_certificates is not None
    ca_end = x509.load_pem_x509_certificate(cfg.root_certificates.read_bytes()).not_valid_after_utc
    ends = [("study CA", ca_end)] + ([("hub certificate", probe.server_not_after)] if probe.server_not_after else [])
    now = dt.datetime.now(dt.UTC)
    detail = "; ".join(f"{what} valid until {end:%Y-%m-%d}" for what, end in ends if end)
    fix = "ask the coordinator for the renewed certificate (`hub pki renew`) and copy it into the home"
    for what, end in ends:
        if end is not None and end <= now:
            return Check("certificates", Level.FAIL, f"{what} expired on {end:%Y-%m-%d %H:%M} UTC", fix)
    for what, end in ends:
        if end is not None and end - now < dt.timedelta(days=WARN_DAYS):
            return Check("certificates", Level.WARN, f"{what} expires on {end:%Y-%m-%d} (< {WARN_DAYS} days)", fix)
    return ok("certificates", detail)


def _clock_check(probe: HubProbe) -> Check:
    if probe.error:
        return Check("clock", Level.WARN, "not checked: the hub is unreachable", "fix the hub check first")
    if probe.skew_seconds is None:
        return Check("clock", Level.WARN, "the hub sent no Date header; skew unknown", "check NTP on both machines")
    skew = probe.skew_seconds
    detail = f"this clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the hub's"
    if skew > AHEAD_LIMIT or -skew > BEHIND_LIMIT:
        return Check("clock", Level.FAIL, detail + ": the hub will refuse the node's signatures", "enable NTP")
    if abs(skew) > SKEW_WARN:
        return Check("clock", Level.WARN, detail, "enable NTP")
    return ok("clock", detail)


def run_checks(home: SiteHome) -> list[Check]:
    """Every check in order; a site.toml that does not load leaves only the checks that need no config."""
    home.require()
    checks = [check_python(), check_home(home), check_secrets(home), check_disk(home)]
    try:
        cfg = home.config()
    except SurgFedError as exc:
        return checks + [Check("config", Level.FAIL, str(exc), f"fix {home.config_file}")]
    steps: list[Callable[[], Check | list[Check]]] = [
        lambda: check_model(cfg),
        lambda: check_model_server(cfg) if cfg.backend is ModelBackend.OPENAI else check_gpu(cfg),
        lambda: check_sandbox(cfg),
        lambda: hub_checks(home, cfg),
    ]
    for step in steps:
        result = step()
        checks += result if isinstance(result, list) else [result]
    return checks


def render(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"{c.level.value.upper() if c.level is not Level.OK else 'ok':5} {c.name:13} {c.detail}")
        if c.fix and c.level is not Level.OK:
            lines.append(f"{'':5} {'':13} fix: {c.fix}")
    counts = {level: sum(1 for c in checks if c.level is level) for level in Level}
    lines.append(f"doctor: {counts[Level.FAIL]} fail, {counts[Level.WARN]} warn, {counts[Level.OK]} ok")
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.home is None:
        raise UsageError(f"no site home: pass --home DIR or set {HOME_ENV}")
    checks = run_checks(SiteHome(args.home))
    failed = any(c.level is Level.FAIL for c in checks)
    if args.json:
        rows = [{**asdict(c), "level": c.level.value} for c in checks]
        print(json.dumps({"ok": not failed, "checks": rows}, indent=2))
    else:
        print(render(checks))
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("doctor", parents=[common], help="preflight checks for hospital IT (exit 1 on any fail)")
    p.add_argument("--json", action="store_true", help="machine-readable output for monitoring")
    p.set_defaults(func=cmd_doctor)
