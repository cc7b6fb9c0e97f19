"""Process trees on Linux (/proc): a service's descendants, stopped even when they sit in the service's own group."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

PROC = Path("/proc")
# What supervisors send: systemd and `kill` (TERM), a terminal (INT), a closed terminal or a reload (HUP).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, None when it is gone or a zombie."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of `root`: pid -> start time (the pair tells a process from a later one on its pid)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                children.setdefault(st[0], []).append((int(entry.name), st[1]))
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            if pid not in found:
                found[pid] = started
                todo.append(pid)
    return found


def alive(procs: dict[int, int]) -> dict[int, int]:
    """Those of `procs` (pid -> start time) still running as the same process."""
    out = {}
    for pid, started in procs.items():
        st = _stat(pid)
        if st is not None and st[1] == started:
            out[pid] = started
    return out


def _send(procs: dict[int, int], sig: int) -> None:
    for pid in alive(procs):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_all(procs: dict[int, int], timeout: float = 5.0) -> None:
    """SIGTERM what is left of `procs` (and what they started since), then SIGKILL whatever outlives `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        procs = {**procs, **{d: s for p in alive(procs) for d, s in descendants(p).items()}}
        if not alive(procs):
            return
        _send(procs, sig)
        end = time.monotonic() + timeout
        while alive(procs) and time.monotonic() < end:
            time.sleep(0.05)


def catch_stop_signals(name: str) -> threading.Event:
    """From now on SIGTERM, SIGINT and SIGHUP set the returned event (logged once each) instead of killing `name`.

    A service then leaves its wait loop and its `finally` stops its children, whichever signal came; under the
    default handlers SIGTERM and SIGHUP killed it on the spot and left its children holding their ports.
    """
    stop = threading.Event()

    def _on(sig: int, _frame: object) -> None:
        if not stop.is_set():
            log.info("%s: %s received, stopping", name, signal.Signals(sig).name)
        stop.set()

    for sig in STOP_SIGNALS:
        signal.signal(sig, _on)
    return stop
