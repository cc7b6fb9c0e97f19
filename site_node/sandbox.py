"""Kernel-enforced file sandbox (Landlock) for the SuperNode and every ClientApp it starts.

`python -m site_node.sandbox --read DIR... --write DIR... -- CMD...` restricts itself, then execs CMD: the
process and all its descendants may read only the listed folders (plus the interpreter and system folders)
and write only the `--write` ones. An app bundle therefore cannot open the site home's data, keys or logs;
only the engine, a separate unrestricted process, reads them. Needs Linux >= 5.13 with Landlock enabled.
"""

from __future__ import annotations

import ctypes
import os
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from protocols.errors import ConfigError

_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446  # the same numbers on x86_64 and aarch64
_PR_SET_NO_NEW_PRIVS = 38
_RULE_PATH_BENEATH = 1
# Access rights of Landlock ABI 1-3 (execute ... truncate).
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1, 2, 4, 8
_ALL_ABI1 = (1 << 13) - 1
_REFER, _TRUNCATE = 1 << 13, 1 << 14
_READ = _EXECUTE | _READ_FILE | _READ_DIR
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys", "/dev")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version, or 0 when Landlock is unavailable."""
    if not sys.platform.startswith("linux"):
        return 0
    version = _libc().syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(version), 0)


def _handled(abi: int) -> int:
    return _ALL_ABI1 | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)


def restrict(read: Sequence[Path], write: Sequence[Path]) -> None:
    """Restrict this process (and what it execs) to reading `read` and writing `write`; irreversible."""
    abi = abi_version()
    if abi < 1:
        raise ConfigError(
            "this kernel has no Landlock (Linux >= 5.13 with lsm=landlock); the SuperNode cannot be "
            "sandboxed. Set [supernode] sandbox = false in site.toml only if the SuperNode runs "
            "under its own service account that cannot read the site home"
        )
    libc, handled = _libc(), _handled(abi)
    attr = _RulesetAttr(handled)
    fd = libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    if fd < 0:
        raise ConfigError(f"landlock_create_ruleset failed: errno {ctypes.get_errno()}")
    try:
        for paths, access in ((read, _READ), (write, handled)):
            for path in paths:
                _add_rule(libc, fd, Path(path), access & handled)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise ConfigError(f"prctl(NO_NEW_PRIVS) failed: errno {ctypes.get_errno()}")
        if libc.syscall(_SYS_RESTRICT, fd, ctypes.c_uint32(0)) != 0:
            raise ConfigError(f"landlock_restrict_self failed: errno {ctypes.get_errno()}")
    finally:
        os.close(fd)


def _add_rule(libc: ctypes.CDLL, ruleset: int, path: Path, access: int) -> None:
    if not path.exists():
        return
    if path.is_file():  # file rules may carry file rights only
        access &= _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE
    pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneathAttr(access, pfd)
        if (
            libc.syscall(
                _SYS_ADD_RULE, ruleset, ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_uint32(0)
            )
            != 0
        ):
            raise ConfigError(f"landlock_add_rule failed for {path}: errno {ctypes.get_errno()}")
    finally:
        os.close(pfd)


def runtime_read_paths() -> list[Path]:
    """What a Python process of this installation needs to read: system folders, interpreter, venv, `protocols`."""
    import protocols

    paths = {Path(p) for p in SYSTEM_READ}
    for key in ("stdlib", "platstdlib", "purelib", "platlib", "include", "scripts", "data"):
        paths.add(Path(sysconfig.get_paths()[key]).resolve())
    paths |= {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent}
    paths.add(Path(protocols.__file__).resolve().parent)  # the ClientApp's one import outside its bundle
    return sorted(paths)


def sandboxed_argv(argv: Sequence[str], read: Sequence[Path], write: Sequence[Path]) -> list[str]:
    """The command line that runs `argv` inside the sandbox."""
    out = [sys.executable, "-m", "site_node.sandbox"]
    for path in read:
        out += ["--read", str(path)]
    for path in write:
        out += ["--write", str(path)]
    return out + ["--", *argv]


def main(args: Sequence[str]) -> None:
    read: list[Path] = []
    write: list[Path] = []
    rest = list(args)
    while rest and rest[0] != "--":
        flag, value = rest[0], rest[1]
        (read if flag == "--read" else write).append(Path(value))
        rest = rest[2:]
    command = rest[1:]
    if not command:
        raise SystemExit("usage: python -m site_node.sandbox [--read DIR] [--write DIR] -- CMD ...")
    restrict(read, write)
    os.execvpe(command[0], command, os.environ)


if __name__ == "__main__":
    main(sys.argv[1:])
