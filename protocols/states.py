"""The hub's stored states: of one site's job in a round (around the site's JobState) and of a launch."""

from __future__ import annotations

from enum import Enum

from protocols.contract import JobState


class SiteState(str, Enum):
    """The hub's view of one site's job in one round: the site's last reported JobState, or one of the hub's own."""

    PENDING = "pending"  # not acknowledged by the site yet (a restarted hub submits it again, same job id)
    QUEUED = JobState.QUEUED.value
    RUNNING = JobState.RUNNING.value
    AWAITING_APPROVAL = JobState.AWAITING_APPROVAL.value
    DONE = JobState.DONE.value  # released at the site; not over before the hub has fetched and stored it
    FAILED = JobState.FAILED.value
    REFUSED = JobState.REFUSED.value
    REJECTED = JobState.REJECTED.value
    ERROR = "error"  # the site's reply was an error or broke the contract, or its result was refused
    ABSENT = "absent"  # the site never connected before the deadline (a later launch retries it)
    STORED = "stored"  # the site's released numbers (or adapter) are in the hub's store

    @classmethod
    def of(cls, state: JobState) -> SiteState:
        return cls(state.value)

    @property
    def final(self) -> bool:
        """Over for this round: nothing more is asked of the site."""
        return self in _FINAL


_FINAL = frozenset(
    {
        SiteState.STORED,
        SiteState.ERROR,
        SiteState.ABSENT,
        SiteState.FAILED,
        SiteState.REFUSED,
        SiteState.REJECTED,
    }
)


class LaunchState(str, Enum):
    PENDING = "pending"  # registered; a running `hub serve` starts it
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def open(self) -> bool:
        return self in (LaunchState.PENDING, LaunchState.RUNNING)
