"""`hub serve`'s study runner lock: one runner per hub home, released by the kernel when its process is killed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hub.home import HubHome, init_hub
from hub.study_runner import StudyRunner, runner_active
from protocols.errors import ConfigError

HOLD = """
import sys, time
from pathlib import Path
from hub.home import HubHome
from hub.study_runner import StudyRunner
StudyRunner(HubHome(Path(sys.argv[1]))).acquire()
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> HubHome:
    return init_hub(tmp_path_factory.mktemp("hub") / "hub")


def test_one_runner_per_home(home: HubHome) -> None:
    assert not runner_active(home)
    first = StudyRunner(home)
    first.acquire()
    try:
        assert runner_active(home)
        with pytest.raises(ConfigError, match="another `hub serve` already runs the studies of"):
            StudyRunner(home).acquire()
    finally:
        first.stop()
    assert not runner_active(home)


def test_a_killed_runner_leaves_no_stale_lock(home: HubHome) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(home.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert runner_active(home)  # `hub launch --follow` follows it instead of running the study itself
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        end = time.time() + 10
        while runner_active(home) and time.time() < end:
            time.sleep(0.05)
        assert not runner_active(home)  # a restarted `hub serve` takes over at once
    finally:
        proc.kill()
        proc.wait()


def test_a_home_without_state_folder_has_no_runner(tmp_path: Path) -> None:
    assert not runner_active(HubHome(tmp_path / "nowhere"))
