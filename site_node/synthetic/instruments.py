"""Surgical instruments in the synthetic frames: where each enters the view, how a site's port placement turns
them, and how they are painted (synthetic/formats.py boxes them with the same geometry)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import numpy as np

TOOL_NAMES = ("Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag")
# Port placement: a center's trocars sit elsewhere than the source's (the surgeon's habits, French or American
# position), so its instruments enter the view from other directions: their ports and the tips' approach turn
# about the view by an angle that grows with shift, swaying over time as the assistant holds the scope. The
# instrument cues (which tools, what they do, where their boxes lie) then fall with shift as the organ-colour
# cue does; the source domain (shift 0) is unrotated.
PORT_TURN_DEG = 35.0  # fixed turn at shift 1
PORT_SWAY_DEG = 20.0  # amplitude of the sway at shift 1
PORT_SWAY_PERIOD_S = 11.0


@cache
def grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised pixel coordinates and the laparoscope's circular vignette for one frame size."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x, y = (x + 0.5) / width, (y + 0.5) / height
    r = np.hypot((x - 0.5) * 4 / 3, y - 0.5) / 0.5
    vignette = np.clip(1.0 - (r - 1.0) / 0.4, 0.1, 1.0).astype(np.float32)
    return x, y, vignette


def paint_segment(
    img: np.ndarray,
    p0: tuple[float, float],
    p1: tuple[float, float],
    width: float,
    colour: np.ndarray,
    alpha: float = 1.0,
) -> None:
    """Anti-aliased thick line (pixel units), painted only inside its bounding box for speed."""
    h, w, _ = img.shape
    pad = width / 2 + 1
    x0, x1 = int(max(0, min(p0[0], p1[0]) - pad)), int(min(w, max(p0[0], p1[0]) + pad + 1))
    y0, y1 = int(max(0, min(p0[1], p1[1]) - pad)), int(min(h, max(p0[1], p1[1]) + pad + 1))
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((xx - p0[0]) * dx + (yy - p0[1]) * dy) / max(dx * dx + dy * dy, 1e-6), 0.0, 1.0)
    dist = np.hypot(xx - p0[0] - t * dx, yy - p0[1] - t * dy)
    mask = (np.clip(width / 2 - dist + 0.5, 0.0, 1.0) * alpha)[..., None]
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - mask) + colour * mask


# Where each instrument enters (fraction of frame) and where its tip rests relative to the organ.
TOOL_ENTRY = {
    "Grasper": ((0.0, 0.1), (-0.12, -0.1)),
    "Hook": ((1.0, 0.85), (0.08, 0.08)),
    "Clipper": ((1.0, 0.7), (0.05, 0.02)),
    "Scissors": ((0.85, 1.0), (0.02, 0.12)),
    "Bipolar": ((1.0, 0.35), (0.1, -0.08)),
    "Irrigator": ((0.7, 0.0), (0.0, -0.15)),
}
_METAL = np.array([0.62, 0.63, 0.66], np.float32)
_DARK = np.array([0.18, 0.18, 0.2], np.float32)
_CLIP = np.array([0.9, 0.8, 0.5], np.float32)
_INSULATION = np.array([0.25, 0.35, 0.7], np.float32)


def port_turn(t: float, shift: float, phase: float) -> float:
    """The turn (degrees) of the instruments' directions of entry at time t, at a site of this shift (`phase`: the
    video's own phase of the sway)."""
    sway = math.sin(2 * math.pi * t / PORT_SWAY_PERIOD_S + phase)
    return shift * (PORT_TURN_DEG + PORT_SWAY_DEG * sway)


def _turned(point: tuple[float, float], about: tuple[float, float], deg: float) -> tuple[float, float]:
    if deg == 0.0:  # the source domain's frames stay exactly as they were drawn before ports turned
        return point
    a = math.radians(deg)
    dx, dy = point[0] - about[0], point[1] - about[1]
    return about[0] + dx * math.cos(a) - dy * math.sin(a), about[1] + dx * math.sin(a) + dy * math.cos(a)


def _turned_fraction(point: tuple[float, float], deg: float, size: tuple[int, int]) -> tuple[float, float]:
    """A point in fractions of the frame, turned about the view's centre in pixel space (a true rotation)."""
    if deg == 0.0:
        return point
    (w, h), (x, y) = size, _turned((point[0] * size[0], point[1] * size[1]), (size[0] / 2, size[1] / 2), deg)
    return x / w, y / h


def tool_geometry(
    tool: str,
    tools: Sequence[str],
    centre: tuple[float, float],
    t: float,
    size: tuple[int, int],
    turn_deg: float = 0.0,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(entry, tip) of a painted instrument in pixels: the port turned about the view's centre, the tip near the
    organ's centre (fractions of the frame) on the turned approach. The painter and the box writer both use it."""
    (w, h), (ex, ey), (ox, oy) = size, *TOOL_ENTRY[tool]
    painted = [n for n in TOOL_NAMES if n in tools and n in TOOL_ENTRY]
    wiggle = 0.02 * math.sin(2 * math.pi * t / 3.0 + painted.index(tool))
    entry = _turned((ex * w, ey * h), (w / 2, h / 2), turn_deg)
    organ = (centre[0] * w, centre[1] * h)
    tip = _turned(((centre[0] + ox + wiggle) * w, (centre[1] + oy - wiggle) * h), organ, turn_deg)
    return entry, tip


def paint_tools(
    img: np.ndarray,
    tools: Sequence[str],
    centre: tuple[float, float],
    t: float,
    turn_deg: float = 0.0,
) -> None:
    """Instruments from their entry ports to tips near the organ (synthetic/formats.py boxes them)."""
    h, w, _ = img.shape
    if "SpecimenBag" in tools:  # a pale translucent bag in the lower left, turned with the ports
        x, y, _ = grid(w, h)
        bx, by = _turned_fraction((0.27, 0.74), turn_deg, (w, h))
        bag = np.clip(1.0 - (((x - bx) / 0.13) ** 2 + ((y - by) / 0.1) ** 2), 0, 1) ** 0.5 * 0.5
        img[:] = img * (1 - bag[..., None]) + np.float32(0.86) * bag[..., None]
    for name in (n for n in TOOL_NAMES if n in tools and n in TOOL_ENTRY):
        entry, tip = tool_geometry(name, tools, centre, t, (w, h), turn_deg)
        paint_segment(img, entry, tip, 0.045 * w, _METAL)
        _paint_tip(img, name, entry, tip, w)


def _paint_tip(img: np.ndarray, name: str, entry: tuple[float, float], tip: tuple[float, float], w: int) -> None:
    dx, dy = tip[0] - entry[0], tip[1] - entry[1]
    n = math.hypot(dx, dy) or 1.0
    ux, uy = dx / n, dy / n  # along the shaft
    px, py = -uy, ux  # across the shaft
    s = 0.05 * w
    if name in ("Grasper", "Scissors", "Clipper"):  # two jaws opening at the tip
        spread = 0.5 if name == "Grasper" else 0.25
        for sign in (-1, 1):
            end = (tip[0] + s * (ux + sign * spread * px), tip[1] + s * (uy + sign * spread * py))
            paint_segment(img, tip, end, 0.015 * w, _DARK)
        if name == "Clipper":
            paint_segment(img, tip, (tip[0] + s * ux, tip[1] + s * uy), 0.02 * w, _CLIP)
    elif name == "Hook":  # an L-shaped electrode
        bend = (tip[0] + s * ux, tip[1] + s * uy)
        paint_segment(img, tip, bend, 0.012 * w, _DARK)
        paint_segment(img, bend, (bend[0] + 0.6 * s * px, bend[1] + 0.6 * s * py), 0.012 * w, _DARK)
    elif name == "Bipolar":  # blue insulated forceps
        paint_segment(img, (tip[0] - s * ux, tip[1] - s * uy), tip, 0.04 * w, _INSULATION)
    elif name == "Irrigator":  # open tube end
        paint_segment(img, (tip[0] - 0.3 * s * ux, tip[1] - 0.3 * s * uy), tip, 0.05 * w, _DARK)
