"""Kernel-enforced sandbox (Landlock) for the SuperNode and every ClientApp it starts.

`python -m site_node.sandbox --read DIR... --write DIR... [--connect PORT] [--bind PORT] -- CMD...`
restricts itself, then execs CMD: the process and all its descendants may read only the listed folders
(plus the interpreter and system folders) and write only the `--write` ones; where the kernel has
Landlock ABI >= 4 it may open TCP connections only to the `--connect` ports and bind only the `--bind`
ones; with ABI >= 6 it can neither signal nor reach the abstract Unix sockets of processes outside its
sandbox. An app bundle therefore cannot open the site home's data, keys or logs; only the engine, a
separate unrestricted process, reads them. File rules need Linux >= 5.13 with Landlock enabled.
"""

from __future__ import annotations

import ctypes
import os
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from protocols.errors import ConfigError

_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446  # the same numbers on x86_64 and aarch64
_PR_SET_NO_NEW_PRIVS = 38
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
# Access rights of Landlock ABI 1-3 (execute ... truncate).
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1, 2, 4, 8
_ALL_ABI1 = (1 << 13) - 1
_REFER, _TRUNCATE = 1 << 13, 1 << 14
_READ = _EXECUTE | _READ_FILE | _READ_DIR
_NET_BIND, _NET_CONNECT = 1, 2  # ABI 4
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1, 2  # ABI 6
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/sys", "/dev")
# Not /proc as a whole: other processes' /proc/<pid>/environ (the engine's, with the hospital's secrets)
# stays closed even where the kernel's ptrace check lets a same-user process read it. /proc/self is
# resolved when the rule is made: the sandboxed process itself keeps its own entries.
PROC_READ = ("/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/sys", "/proc/filesystems")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


@dataclass(frozen=True)
class Grants:
    """What this kernel's Landlock can enforce."""

    abi: int

    @property
    def files(self) -> bool:
        return self.abi >= 1

    @property
    def network(self) -> bool:
        return self.abi >= 4

    @property
    def scoping(self) -> bool:
        return self.abi >= 6

    def describe(self) -> str:
        if not self.files:
            return "Landlock unavailable: NO file, network or process isolation"
        parts = ["file rules", "TCP port rules" if self.network else "NO network rules (needs ABI 4, Linux 6.7)"]
        parts.append(
            "signal/abstract-socket scoping" if self.scoping else "NO signal scoping (needs ABI 6, Linux 6.12)"
        )
        return f"Landlock ABI {self.abi}: " + ", ".join(parts)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version, or 0 when Landlock is unavailable."""
    if not sys.platform.startswith("linux"):
        return 0
    version = _libc().syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(version), 0)


def grants() -> Grants:
    return Grants(abi_version())


def _handled(abi: int) -> int:
    return _ALL_ABI1 | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)


def _ruleset(libc: ctypes.CDLL, abi: int, network: bool, scope_signals: bool) -> int:
    attr = _RulesetAttr(_handled(abi), 0, 0)
    size = ctypes.sizeof(ctypes.c_uint64)  # ABI 1-3 know only the file field
    if abi >= 4 and network:
        attr.handled_access_net, size = _NET_BIND | _NET_CONNECT, 2 * size
    if abi >= 6:
        scoped = _SCOPE_ABSTRACT_UNIX | (_SCOPE_SIGNAL if scope_signals else 0)
        attr.scoped, size = scoped, 3 * ctypes.sizeof(ctypes.c_uint64)
    fd = int(libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)))
    if fd < 0:
        raise ConfigError(f"landlock_create_ruleset failed: errno {ctypes.get_errno()}")
    return fd


def restrict(
    read: Sequence[Path],
    write: Sequence[Path],
    *,
    connect: Sequence[int] | None = None,
    bind: Sequence[int] = (),
    list_only: Sequence[Path] = (),
    scope_signals: bool = True,
) -> Grants:
    """Restrict this process (and what it execs); irreversible. `connect=None` leaves TCP unrestricted.

    `scope_signals=False` for an inner layer whose processes must probe a parent in the outer layer
    (Flower's superexec checks its SuperNode with kill(pid, 0)); the outer layer's scope still applies.
    """
    abi = abi_version()
    if abi < 1:
        raise ConfigError(
            "this kernel has no Landlock (Linux >= 5.13 with lsm=landlock); the SuperNode cannot be "
            "sandboxed. Set [supernode] sandbox = false in site.toml only if the SuperNode runs "
            "under its own service account that cannot read the site home"
        )
    libc, handled = _libc(), _handled(abi)
    fd = _ruleset(libc, abi, connect is not None, scope_signals)
    try:
        for paths, access in ((read, _READ), (write, handled), (list_only, _READ_DIR)):
            for path in paths:
                _add_rule(libc, fd, Path(path), access & handled)
        if abi >= 4 and connect is not None:
            for port, access in [(p, _NET_CONNECT) for p in connect] + [(p, _NET_BIND) for p in bind]:
                _add_port(libc, fd, int(port), access)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise ConfigError(f"prctl(NO_NEW_PRIVS) failed: errno {ctypes.get_errno()}")
        if libc.syscall(_SYS_RESTRICT, fd, ctypes.c_uint32(0)) != 0:
            raise ConfigError(f"landlock_restrict_self failed: errno {ctypes.get_errno()}")
    finally:
        os.close(fd)
    return Grants(abi)


def _add_port(libc: ctypes.CDLL, ruleset: int, port: int, access: int) -> None:
    rule = _NetPortAttr(access, port)
    if libc.syscall(_SYS_ADD_RULE, ruleset, ctypes.c_int(_RULE_NET_PORT), ctypes.byref(rule), ctypes.c_uint32(0)):
        raise ConfigError(f"landlock_add_rule failed for TCP port {port}: errno {ctypes.get_errno()}")


def _add_rule(libc: ctypes.CDLL, ruleset: int, path: Path, access: int) -> None:
    if not path.exists():
        return
    if path.is_file():  # file rules may carry file rights only
        access &= _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE
    pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneathAttr(access, pfd)
        if libc.syscall(
            _SYS_ADD_RULE, ruleset, ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_uint32(0)
        ):
            raise ConfigError(f"landlock_add_rule failed for {path}: errno {ctypes.get_errno()}")
    finally:
        os.close(pfd)


def runtime_read_paths() -> list[Path]:
    """What a Python process of this installation needs to read: system folders, interpreter, venv, our code."""
    import protocols

    paths = {Path(p) for p in SYSTEM_READ + PROC_READ}
    for key in ("stdlib", "platstdlib", "purelib", "platlib", "include", "scripts", "data"):
        paths.add(Path(sysconfig.get_paths()[key]).resolve())
    paths |= {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent}
    code = Path(protocols.__file__).resolve().parent
    paths |= {code, code.parent / "site_node"}  # the ClientApp's imports outside its bundle, and this module
    return sorted(paths)


def code_root() -> Path:
    """The folder holding `protocols`: listable (not readable) in the sandbox so that imports resolve there."""
    import protocols

    return Path(protocols.__file__).resolve().parent.parent


def sandboxed_argv(
    argv: Sequence[str],
    read: Sequence[Path],
    write: Sequence[Path],
    *,
    connect: Sequence[int] | None = None,
    bind: Sequence[int] = (),
    scope_signals: bool = True,
) -> list[str]:
    """The command line that runs `argv` inside the sandbox."""
    out = [sys.executable, "-m", "site_node.sandbox", "--list", str(code_root())]
    if not scope_signals:
        out.append("--signals-unscoped")
    for flag, values in (("--read", read), ("--write", write), ("--bind", bind)):
        for value in values:
            out += [flag, str(value)]
    if connect is not None:
        out += ["--tcp"] + [arg for port in connect for arg in ("--connect", str(port))]
    return out + ["--", *argv]


def main(args: Sequence[str]) -> None:
    lists: dict[str, list[str]] = {"--read": [], "--write": [], "--list": [], "--connect": [], "--bind": []}
    rest, tcp, signals = list(args), False, True
    while rest and rest[0] != "--":
        if rest[0] in ("--tcp", "--signals-unscoped"):
            tcp, signals = tcp or rest[0] == "--tcp", signals and rest[0] != "--signals-unscoped"
            rest = rest[1:]
            continue
        if rest[0] not in lists or len(rest) < 2:
            raise SystemExit(f"site_node.sandbox: unexpected argument {rest[0]!r}")
        lists[rest[0]].append(rest[1])
        rest = rest[2:]
    command = rest[1:]
    if not command:
        raise SystemExit("usage: python -m site_node.sandbox [--read DIR] [--write DIR] [--tcp --connect PORT] -- CMD")
    restrict(
        [Path(p) for p in lists["--read"]],
        [Path(p) for p in lists["--write"]],
        connect=[int(p) for p in lists["--connect"]] if tcp else None,
        bind=[int(p) for p in lists["--bind"]],
        list_only=[Path(p) for p in lists["--list"]],
        scope_signals=signals,
    )
    os.execvpe(command[0], command, os.environ)


if __name__ == "__main__":
    main(sys.argv[1:])
