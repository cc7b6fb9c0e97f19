"""Process trees: descendants found through /proc, orphans stopped after their parent is gone, signals caught."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocols.procs import Child, wait_for
from protocols.proctree import alive, descendants, stop_all

# A leader that exits on SIGTERM and leaves its children running: the shape of flower-superlink leaving
# flower-superexec behind.
TREE = "sleep 300 & sleep 300 & trap 'exit 0' TERM; wait"


def _start(tmp_path: Path) -> Child:
    child = Child("tree", ["sh", "-c", TREE], tmp_path / "tree.log", own_group=False)
    wait_for(lambda: len(descendants(child.proc.pid)) == 2, 10, "two sleeps under the shell", child)
    return child


def test_descendants_are_found_and_told_from_pid_reuse(tmp_path: Path) -> None:
    child = _start(tmp_path)
    try:
        found = descendants(child.proc.pid)
        assert set(alive(found)) == set(found)
        forged = {pid: started + 1 for pid, started in found.items()}  # same pids, other start times
        assert alive(forged) == {}
    finally:
        child.stop()
    assert alive(found) == {}


def test_stop_leaves_no_orphan_of_a_leader_that_exits_on_sigterm(tmp_path: Path) -> None:
    """The old Child.stop signalled only the leader (own_group=False): its children lived on under pid 1."""
    child = _start(tmp_path)
    found = descendants(child.proc.pid)
    child.stop(timeout=5)
    assert child.proc.returncode == 0  # the shell trapped TERM and exited
    assert alive(found) == {}, f"orphans survived: {alive(found)}"


def test_stop_all_kills_what_ignores_sigterm() -> None:
    proc = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 300"])
    try:
        wait_for(lambda: bool(descendants(proc.pid)), 10, "the sleep")
        tree = {proc.pid: descendants(os.getpid())[proc.pid], **descendants(proc.pid)}
        start = time.monotonic()
        stop_all(tree, timeout=1.0)
        assert proc.wait(5) == -signal.SIGKILL
        assert time.monotonic() - start < 5
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_stop_signals_set_the_event_instead_of_killing(sig: signal.Signals) -> None:
    code = (
        "import os, signal, sys\n"
        "from protocols.proctree import catch_stop_signals\n"
        "stop = catch_stop_signals('t')\n"
        f"os.kill(os.getpid(), {int(sig)})\n"
        "sys.exit(0 if stop.wait(5) else 3)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0
