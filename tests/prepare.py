"""`make test`'s first step: the tiny model and the integration tests' synthetic sources, built side by side.

The model's warm-up trains on one thread, so on a fresh clone the second core writes the videos meanwhile, one site
at a time (with two writers beside it, the warm-up ran 2.2 steps a second, against 4.2 alone). Otherwise the shared
federation, the faults test and the calibration test would write them while the other tests run.
Both caches are keyed on what shapes them (hub.demo.study.cached_sources,
site_node.synthetic.tiny_model.ensure_tiny_model) and reused.
"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from the Makefile
    sys.path.insert(0, str(REPO))

from hub.demo.study import DEMO_FORMATS, SITES, TRAINING_SITES, DemoSite, cached_sources  # noqa: E402

CHOLEC80 = ("cholec80",)
# The shared federation (tests/integration/conftest.py): the fine-tuning demo's three centers (six videos each: the
# evaluation demo's twelve would double the suite's longest unit), and a small site of three videos (below the
# default minimum of five) whose data owner approves each release.
SMALL_SITE = DemoSite("small-manual", 0.3, 44, videos=3)
FEDERATION_SITES = (*TRAINING_SITES, SMALL_SITE)
# The calibration test: the evaluation demo's least and most shifted centers, with all their videos.
CALIBRATION_SITES = (SITES[0], SITES[-1])
# The faults test: one center, with enough videos to be still working when its engine is killed.
FAULT_SITES = (DemoSite("st-elsewhere", 0.8, 33, videos=7),)


def calibration_sources() -> Path:
    """The evaluation demo's least and most shifted centers in all its formats (the calibration test's)."""
    return cached_sources(CALIBRATION_SITES, DEMO_FORMATS, workers=1)


def federation_sources() -> Path:
    return cached_sources(FEDERATION_SITES, CHOLEC80, workers=1)


def fault_sources() -> Path:
    return cached_sources(FAULT_SITES, CHOLEC80, workers=1)


def tiny_model() -> Path:
    """The tiny Qwen2.5-VL every test loads (the session fixture `tiny_model_dir` in tests/conftest.py)."""
    from site_node.synthetic.tiny_model import ensure_tiny_model

    return ensure_tiny_model(REPO / ".cache" / "models")


def main() -> None:
    with ProcessPoolExecutor(max_workers=1) as pool:
        model = pool.submit(tiny_model)
        # one after the other, beside the model
        for sources in (federation_sources, fault_sources, calibration_sources):
            print(f"synthetic sources: {sources()}", flush=True)
        print(f"tiny model: {model.result()}", flush=True)


if __name__ == "__main__":
    main()
