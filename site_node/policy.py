"""The site policy: limits in `site.toml` [policy] that every job obeys, whatever a protocol asks."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from protocols.errors import ConfigError, SurgFedError
from protocols.mapping import check_mapping, flag, integer, number

# A protocol may tighten any of these (a larger cell, fewer rounds), never loosen them.
DEFAULT_MIN_VIDEOS = 5
DEFAULT_MIN_TRAIN_VIDEOS = 10
DEFAULT_EPSILON_CAP = 10.0
DEFAULT_MAX_ROUNDS = 20


class PolicyRefused(SurgFedError):
    """A job asks for something the site policy does not allow (training without DP, too few videos)."""


@dataclass(frozen=True)
class SitePolicy:
    """What this site allows; `allowed_tasks` empty means every task the platform defines."""

    min_videos: int = DEFAULT_MIN_VIDEOS  # floor for every released evaluation cell (small-cell suppression)
    require_dp: bool = True  # training without differential privacy is refused
    min_train_videos: int = DEFAULT_MIN_TRAIN_VIDEOS  # fewest videos a site trains on
    epsilon_cap: float = DEFAULT_EPSILON_CAP  # site-wide epsilon per video, summed over every study
    allowed_tasks: tuple[str, ...] = ()
    max_rounds: int = DEFAULT_MAX_ROUNDS  # most rounds (evaluation or training) one study may ask for

    def __post_init__(self) -> None:
        integer(self.min_videos, "[policy] min_videos", 1, 10_000)
        flag(self.require_dp, "[policy] require_dp")
        integer(self.min_train_videos, "[policy] min_train_videos", 1, 1_000_000)
        number(self.epsilon_cap, "[policy] epsilon_cap", 0.0, 1_000.0)
        integer(self.max_rounds, "[policy] max_rounds", 1, 1_000)
        if not isinstance(self.allowed_tasks, tuple) or not all(isinstance(t, str) for t in self.allowed_tasks):
            raise ConfigError(f"[policy] allowed_tasks must be a list of task names, got {self.allowed_tasks!r}")

    def allows_task(self, task: str) -> bool:
        return not self.allowed_tasks or task in self.allowed_tasks

    def cell_floor(self, protocol_min_videos: int) -> int:
        """The smallest cell released: the stricter of the site's floor and the protocol's."""
        return max(self.min_videos, protocol_min_videos)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_policy(data: Any, where: str = "[policy]") -> SitePolicy:
    """The [policy] table of site.toml (absent = the defaults above); unknown keys are refused."""
    table = check_mapping({} if data is None else data, where, {f.name for f in fields(SitePolicy)})
    values = dict(table)
    if "epsilon_cap" in values:
        values["epsilon_cap"] = number(values["epsilon_cap"], f"{where} epsilon_cap", 0.0, 1_000.0)
    if "allowed_tasks" in values:
        tasks = values["allowed_tasks"]
        if not isinstance(tasks, list):
            raise ConfigError(f"{where} allowed_tasks must be a list of task names, got {tasks!r}")
        values["allowed_tasks"] = tuple(tasks)
    return SitePolicy(**values)


POLICY_TOML = f"""[policy]
# Limits every job obeys, whatever a protocol asks; a protocol may tighten them, never loosen them.
# Changes are recorded in the audit log at the next start (see README: Site policy).
# Fewest videos behind any released evaluation number (small cells are suppressed).
min_videos = {DEFAULT_MIN_VIDEOS}
# Fine-tuning without differential privacy is refused.
require_dp = true
# Fewest videos this site trains on.
min_train_videos = {DEFAULT_MIN_TRAIN_VIDEOS}
# Most epsilon (per video) this site spends over ALL studies together.
epsilon_cap = {DEFAULT_EPSILON_CAP}
# Tasks this site evaluates; empty = every task the platform defines.
allowed_tasks = []
# Most rounds one study may ask of this site.
max_rounds = {DEFAULT_MAX_ROUNDS}
"""
