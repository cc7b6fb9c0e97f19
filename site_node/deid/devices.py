"""Unknown devices: a video whose device matches no recorder rule is processed only by the profile's explicit choice."""

from __future__ import annotations

from pathlib import Path

from protocols.errors import DeidError
from site_node.deid.profile import DeidProfile, UnknownDevices
from site_node.deid.video import device_facts, open_video, video_stream

UNKNOWN_DEVICE = (
    "video from a device that matches no recorder rule (its burned-in overlay layout is unknown); quarantined. "
    "Add a recorder rule for it, or choose `unknown_devices: assume-clean` in the site profile"
)


def check_device(src: Path, profile: DeidProfile) -> dict[str, int]:
    """{} for a known device; the action count for an unknown one the profile assumes clean; else DeidError."""
    with open_video(src) as container:
        facts = device_facts(container, video_stream(container))
    if any(rule.matches(facts) for rule in profile.recorders):
        return {}
    if profile.unknown_devices is UnknownDevices.ASSUME_CLEAN:
        return {"unknown_device_assumed_clean": 1}
    raise DeidError(UNKNOWN_DEVICE)
