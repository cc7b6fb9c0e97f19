"""Shared fixtures: offline environment and the tiny Qwen2.5-VL, built once and cached in .cache/models."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

for _key, _value in (
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("FLWR_TELEMETRY_ENABLED", "0"),
    ("FLWR_DISABLE_UPDATE_CHECK", "1"),
):
    os.environ.setdefault(_key, _value)

# Parallel workers (`pytest -n N`) share the cores: torch's default of one intra-op thread per core in every worker
# oversubscribes them, and its OpenMP threads spin while they wait. Two workers running one model test each took
# 49.9 s with the default threads and 27.7 s with one each on the 2-core machine. Processes the tests start (site
# engines, `hub serve`) inherit the setting.
if _workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from prepare import tiny_model

    return tiny_model()


# The integration modules whose tests use the shared federation fixture (a parameter named `federation`).
_FEDERATION_MODULES = frozenset(
    path.relative_to(REPO).as_posix()
    for path in (REPO / "tests" / "integration").glob("test_*.py")
    if re.search(r"def \w+\([^)]*\bfederation\b", path.read_text(encoding="utf-8"))
)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` runs `pytest -n 2 --dist loadscope`: each test module runs whole on one worker (its module
    fixtures built once), and all modules on the shared integration federation on the same worker (one federation
    per session), handed out first: it is the longest unit, and the suite ends when it does. xdist's marker-based
    loadgroup does not group under pytest 9 (its node-id suffix is ignored)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScopes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "federation" if module in _FEDERATION_MODULES else module

        def _assign_work_unit(self, node: Any) -> None:
            # xdist queues the scopes by their number of tests, which put the federation's 31 seventh.
            if "federation" in self.workqueue:
                self.workqueue.move_to_end("federation", last=False)
            super()._assign_work_unit(node)

    return ModuleScopes(config, log)
