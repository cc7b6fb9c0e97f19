"""Out-of-body frame detection: the detector interface a site's own classifier implements, and a default heuristic."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

T = TypeVar("T")


@runtime_checkable
class OutOfBodyDetector(Protocol):
    """Decides, frame by frame, whether a frame shows the room instead of the inside of the patient.

    `thumbnail_width` asks for the size of the RGB thumbnails the detector is given (height follows
    the aspect ratio). A site's classifier wraps its model in this interface and is passed to
    `deidentify_paths(..., out_of_body=...)`; nothing here downloads weights.
    """

    name: str
    thumbnail_width: int

    def is_out_of_body(self, rgb: np.ndarray) -> bool:
        """`rgb`: HxWx3 uint8 thumbnail of one frame."""
        ...


class ColourHeuristicDetector:
    """Laparoscopic frames are lit by the scope: saturated red/pink/orange tissue, dark corners.

    Room scenes (drapes, walls, staff, the patient's skin under room light) are grey, white,
    green or blue, or weakly saturated. A frame is in-body when most of its lit pixels are warm
    and saturated. Frames too dark to show anything are left alone (nothing to hide). The
    heuristic errs towards blanking: a dim, yellowish in-body frame may be blanked too.
    """

    name = "colour-heuristic-v1"
    thumbnail_width = 64

    def __init__(self, warm_fraction: float = 0.55, min_saturation: float = 0.33, dark_luma: float = 30.0) -> None:
        self.warm_fraction = warm_fraction
        self.min_saturation = min_saturation
        self.dark_luma = dark_luma

    def is_out_of_body(self, rgb: np.ndarray) -> bool:
        px = rgb.reshape(-1, 3).astype(np.float32)
        r, g, b = px[:, 0], px[:, 1], px[:, 2]
        luma = 0.299 * r + 0.587 * g + 0.114 * b
        lit = luma > self.dark_luma
        if lit.mean() < 0.05:
            return False
        r, g, b = r[lit], g[lit], b[lit]
        mx = np.maximum(np.maximum(r, g), b)
        mn = np.minimum(np.minimum(r, g), b)
        sat = (mx - mn) / np.maximum(mx, 1.0)
        # Warm hue: red is the largest channel and green does not dominate blue by much (no yellow-green).
        warm = (r >= mx) & (r - np.maximum(g, b) > 25.0) & (sat >= self.min_saturation)
        return bool(warm.mean() < self.warm_fraction or np.median(sat) < self.min_saturation)


class NeverOutOfBody:
    """For footage known to contain no room scenes (synthetic data, recordings already cut at the trocar).

    Chosen explicitly by the site (`site_node ingest --out-of-body none`); the de-identification report
    names the detector used, so the choice is on record.
    """

    name = "none (site declared: no out-of-body footage)"
    thumbnail_width = 8

    def is_out_of_body(self, rgb: np.ndarray) -> bool:
        return False


DETECTORS = {"colour": ColourHeuristicDetector, "none": NeverOutOfBody}


def detector_named(name: str) -> OutOfBodyDetector:
    try:
        return DETECTORS[name]()
    except KeyError:
        raise ValueError(f"out-of-body detector must be one of {sorted(DETECTORS)}, got {name!r}") from None


def with_margin(flags: Iterable[tuple[T, bool]], margin: int) -> Iterator[tuple[T, bool]]:
    """Yield (item, blank): blank if any flag within `margin` items on either side is set.

    Looks `margin` items ahead, so every frame is decided in a single pass over the video.
    """
    pending: deque[T] = deque()
    hits: deque[int] = deque()  # flagged indices that can still affect pending items
    seen = emitted = 0
    for item, flag in flags:
        if flag:
            hits.append(seen)
        pending.append(item)
        seen += 1
        if len(pending) > margin:
            yield pending.popleft(), _blank(hits, emitted, margin)
            emitted += 1
    while pending:
        yield pending.popleft(), _blank(hits, emitted, margin)
        emitted += 1


def _blank(hits: deque[int], index: int, margin: int) -> bool:
    while hits and hits[0] < index - margin:
        hits.popleft()
    return bool(hits) and hits[0] <= index + margin


def blank_mask(flags: list[bool], margin: int) -> list[bool]:
    """Dilate per-frame out-of-body flags by `margin` frames on each side (for frame folders)."""
    out = [False] * len(flags)
    for i, flag in enumerate(flags):
        if flag:
            for j in range(max(0, i - margin), min(len(flags), i + margin + 1)):
                out[j] = True
    return out
