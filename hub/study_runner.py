"""`hub serve`'s study runner: starts each pending launch as a Flower run and resumes running ones after a restart."""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from typing import IO

from hub.home import HubHome
from hub.store_rounds import StudyRounds
from hub.superlink import run_status, start_run
from protocols.errors import ConfigError, SurgFedError
from protocols.states import LaunchState

log = logging.getLogger(__name__)
CHECK_SECONDS = 60.0  # how often a started run's Flower status is asked: `flwr ls` is a subprocess (~1.5 s of CPU)
MAX_RESTARTS = 3  # a ServerApp that keeps dying without marking its launch: give up, say so


def lock_path(home: HubHome) -> str:
    return str(home.superlink_db.parent / "serve.lock")


def runner_active(home: HubHome) -> bool:
    """True while a `hub serve` runs this home's studies (it holds the lock; the kernel drops it if killed)."""
    try:
        with open(lock_path(home), "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


class StudyRunner:
    """Polls the store: a pending launch gets a Flower run; a running one whose run ended unfinished gets a new one
    (same launch id, so the same job ids: the coordinator resumes from the stored states)."""

    def __init__(self, home: HubHome, poll_seconds: float = 2.0) -> None:
        self.home, self.poll_seconds = home, poll_seconds
        self._lock: IO[str] | None = None
        self._stop = threading.Event()
        self._runs: dict[str, tuple[str, float]] = {}  # launch id -> (Flower run id, last status check)
        self._restarts: dict[str, int] = {}
        self._thread = threading.Thread(target=self._loop, name="study-runner", daemon=True)

    def acquire(self) -> None:
        handle = open(lock_path(self.home), "a")  # noqa: SIM115 - held for the life of `hub serve`
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ConfigError(f"another `hub serve` already runs the studies of {self.home.root}") from None
        self._lock = handle

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._lock is not None:
            self._lock.close()  # closing drops the flock

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - one bad launch or a store hiccup must not stop the others
                log.exception("study runner: a pass over the open studies failed; trying again")
            self._stop.wait(self.poll_seconds)

    def tick(self) -> None:
        rounds = StudyRounds(self.home.store())
        open_launches = rounds.open_launches()
        for gone in set(self._runs) - {row["launch_id"] for row in open_launches}:
            del self._runs[gone]
        for row in open_launches:
            launch_id = row["launch_id"]
            if launch_id not in self._runs:
                # Pending, or running when this `hub serve` started: its run died with the previous one.
                self._start(rounds, launch_id, resumed=row["state"] == LaunchState.RUNNING.value)
            elif time.time() - self._runs[launch_id][1] > CHECK_SECONDS:
                self._check(rounds, launch_id)

    def _start(self, rounds: StudyRounds, launch_id: str, *, resumed: bool) -> None:
        run_id = start_run(self.home, launch_id)
        rounds.set_running(launch_id, run_id)
        self._runs[launch_id] = (run_id, time.time())
        log.info("launch %s %s as Flower run %s", launch_id, "resumed" if resumed else "started", run_id)

    def _check(self, rounds: StudyRounds, launch_id: str) -> None:
        run_id = self._runs[launch_id][0]
        self._runs[launch_id] = (run_id, time.time())
        try:
            status = str(run_status(self.home, run_id).get("status", ""))
        except SurgFedError as exc:
            log.warning("launch %s: cannot read the status of run %s: %s", launch_id, run_id, exc)
            return
        if not status.startswith("finished"):
            return
        if not LaunchState(rounds.store.launch(launch_id)["state"]).open:
            return  # it marked its launch as it ended
        self._restarts[launch_id] = self._restarts.get(launch_id, 0) + 1
        if self._restarts[launch_id] > MAX_RESTARTS:
            detail = f"the ServerApp ended ({status}) without finishing the launch {MAX_RESTARTS + 1} times"
            rounds.store.finish_launch(launch_id, LaunchState.FAILED, detail)
            log.error("launch %s failed: %s; see %s", launch_id, detail, self.home.logs_dir / "superlink.log")
            return
        log.warning("launch %s: run %s ended (%s) without finishing it; resuming", launch_id, run_id, status)
        self._start(rounds, launch_id, resumed=True)
