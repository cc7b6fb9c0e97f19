"""Synthetic laparoscopic-style frames: phase scenes, site cameras and the instrument renderer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from protocols.errors import ConfigError
from protocols.tasks import load_task
from site_node.synthetic.instruments import (
    TOOL_NAMES,
    grid,
    paint_segment,
    paint_tools,
    port_turn,
)

W, H = 320, 240
TOOL_EVERY = 25  # Cholec80 tool files carry one row every 25 frames
SOURCE_SHIFT = 0.0  # the domain the tiny model is warmed up on; demo sites use shift > 0

# The phase signature: the dominant organ colour sits at its own angle on the chroma wheel, so
# neighbouring phases look alike. A site's camera adds a colour cast (a chroma rotation): a fixed part
# that grows with shift (the camera's white balance, the same in every video of the center: what
# fine-tuning on a center's own frames can learn), plus auto-white-balance drift whose spread also grows
# with shift, pushing single frames towards the neighbouring phases on either side (what no model can
# undo from one frame). The drift makes the accuracy of a source-trained model fall smoothly with shift
# and depend little on where exactly it drew its class boundaries, so the calibration holds across
# warm-up seeds.
HUE_JITTER_DEG = 21.0  # per-frame spread of the organ hue within a phase
CAST_MEAN_DEG = 55.0  # fixed colour cast at shift 1
# Spread of the white-balance drift: a mild part that appears quickly with shift, and a severe part
# only the most shifted sites show (the instrument cues would otherwise hold accuracy up there).
CAST_DRIFT_MILD_DEG, CAST_DRIFT_MILD_POWER = 20.0, 0.7
CAST_DRIFT_SEVERE_DEG, CAST_DRIFT_SEVERE_POWER = 30.0, 4.0
_ORGAN_CHROMA = 0.16
_FIRST_ANGLE_DEG = 15.0

# BT.601 full-range RGB <-> YCbCr (Cb, Cr centred on 0).
_RGB2YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCC2RGB = np.linalg.inv(_RGB2YCC)


@dataclass(frozen=True)
class PhaseScene:
    """What a phase shows (tool presence probabilities) and how long it lasts."""

    tools: dict[str, float]
    duration: float  # relative length (Cholec80's long and short phases, flattened)


# Keyed by phase NAME; the order comes from the phase task definition.
_SCENES: dict[str, PhaseScene] = {
    "Preparation": PhaseScene({"Grasper": 0.9, "Hook": 0.4}, 0.8),
    "CalotTriangleDissection": PhaseScene({"Grasper": 0.9, "Hook": 0.95}, 1.6),
    "ClippingCutting": PhaseScene({"Grasper": 0.8, "Clipper": 0.7, "Scissors": 0.4}, 1.0),
    "GallbladderDissection": PhaseScene({"Grasper": 0.9, "Hook": 0.9}, 1.6),
    "GallbladderPackaging": PhaseScene({"Grasper": 0.9, "SpecimenBag": 0.9}, 0.9),
    "CleaningCoagulation": PhaseScene({"Grasper": 0.6, "Bipolar": 0.5, "Irrigator": 0.6}, 1.0),
    "GallbladderRetraction": PhaseScene({"Grasper": 0.8, "SpecimenBag": 0.8}, 0.9),
}


@cache
def phase_names() -> tuple[str, ...]:
    """The phase vocabulary in canonical order, checked against this module's scene table."""
    names = load_task("phase").label_names
    if set(names) != set(_SCENES):
        raise ConfigError(f"synthetic scenes cover {sorted(_SCENES)}, but the phase task has {sorted(names)}")
    return names


def phase_scene(name: str) -> PhaseScene:
    """The scene table entry of a phase, by name."""
    if name not in _SCENES:
        raise ConfigError(f"unknown phase {name!r}; expected one of {phase_names()}")
    return _SCENES[name]


@dataclass(frozen=True)
class Camera:
    """Colour response and sensor of one recording set-up."""

    gain: float = 1.0
    saturation: float = 1.0
    noise_std: float = 2.0 / 255.0
    cast_mean_deg: float = 0.0  # fixed colour cast
    cast_drift_deg: float = 0.0  # spread of the white-balance drift around it

    def matrix(self, cast_deg: float) -> np.ndarray:
        """RGB -> RGB matrix: chroma rotation by the cast, desaturation, gain."""
        a = math.radians(cast_deg)
        rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
        scale = np.diag([self.gain, self.gain * self.saturation, self.gain * self.saturation])
        return (_YCC2RGB @ scale @ rot @ _RGB2YCC).astype(np.float32)

    def varied(self, rng: np.random.Generator) -> Camera:
        """Another set-up with the same colour cast but its own exposure, saturation and sensor noise."""
        return Camera(
            self.gain * rng.uniform(0.7, 1.1),
            self.saturation * rng.uniform(0.75, 1.1),
            rng.uniform(1.0, 12.0) / 255.0,
            self.cast_mean_deg,
            self.cast_drift_deg,
        )


@dataclass(frozen=True)
class SiteDomain:
    """How a site's camera and recorder differ from the source domain; everything grows with `shift`."""

    shift: float

    def __post_init__(self) -> None:
        if not (isinstance(self.shift, (int, float)) and 0.0 <= self.shift <= 1.0):
            raise ConfigError(f"shift must be a number in [0, 1], got {self.shift!r}")

    @property
    def fps(self) -> int:
        return int(round(25 - 15 * self.shift))

    @property
    def size(self) -> tuple[int, int]:
        width = int(16 * round((W - 64 * self.shift) / 16))  # multiples of 16 keep H.264 happy
        return width, width * 3 // 4

    @property
    def crf(self) -> int:
        return int(round(20 + 10 * self.shift))

    @property
    def camera(self) -> Camera:
        s = self.shift
        return Camera(
            gain=1.0 - 0.3 * s,
            saturation=1.0 - 0.25 * s,
            noise_std=(2.0 + 10.0 * s) / 255.0,
            cast_mean_deg=CAST_MEAN_DEG * s,
            cast_drift_deg=CAST_DRIFT_MILD_DEG * s**CAST_DRIFT_MILD_POWER
            + CAST_DRIFT_SEVERE_DEG * s**CAST_DRIFT_SEVERE_POWER,
        )


@dataclass(frozen=True)
class _Layout:
    """Per-video scene geometry and texture (drawn once, animated over time)."""

    organ: tuple[float, float, float, float]  # centre x, y, semi-axes a, b (fractions of the frame)
    motion: tuple[float, float, float]  # phases of the slow camera drift
    texture: tuple[tuple[float, float, float, float], ...]  # (fx, fy, phase, amplitude)
    tissue: tuple[float, float, float]  # Y, Cb, Cr of the background tissue

    @staticmethod
    def draw(rng: np.random.Generator) -> _Layout:
        organ = (rng.uniform(0.42, 0.58), rng.uniform(0.42, 0.58), rng.uniform(0.28, 0.32), rng.uniform(0.33, 0.37))
        texture = tuple(
            (rng.uniform(2, 9), rng.uniform(2, 9), rng.uniform(0, 2 * math.pi), rng.uniform(0.02, 0.05))
            for _ in range(4)
        )
        # tissue varies in brightness only: a per-video chroma would bias every frame of a video alike
        tissue = (rng.uniform(0.45, 0.55), -0.035, 0.11)
        return _Layout(organ, tuple(rng.uniform(0, 2 * math.pi, 3)), texture, tissue)


def _ycc(y: float, cb: float, cr: float) -> np.ndarray:
    return np.clip(_YCC2RGB @ np.array([y, cb, cr]), 0.0, 1.0).astype(np.float32)


def _organ_colour(phase_index: int, jitter_deg: float) -> np.ndarray:
    angle = math.radians(_FIRST_ANGLE_DEG + phase_index * 360.0 / len(phase_names()) + jitter_deg)
    return _ycc(0.5, _ORGAN_CHROMA * math.cos(angle), _ORGAN_CHROMA * math.sin(angle))


def _background(layout: _Layout, width: int, height: int) -> np.ndarray:
    x, y, _ = grid(width, height)
    tex = np.zeros_like(x)
    for fx, fy, ph, amp in layout.texture:
        tex += amp * np.sin(2 * math.pi * (fx * x + fy * y) + ph)
    base = _ycc(*layout.tissue)
    return base[None, None, :] * (1.0 + tex)[..., None]


class _Renderer:
    """Draws the frames of one video: tissue, phase-coloured organ, instruments, then the site's camera."""

    def __init__(
        self,
        layout: _Layout,
        camera: Camera,
        size: tuple[int, int],
        rng: np.random.Generator,
        noise_bank: int = 8,
        shift: float = SOURCE_SHIFT,
    ) -> None:
        self.layout, self.size, self.camera, self.shift = layout, size, camera, shift
        x, y, self.vignette = grid(*size)
        self.background = _background(layout, *size)
        # A small bank of sensor-noise fields, reused with random offsets: fresh Gaussian noise for every
        # frame would cost more than drawing the frame itself.
        self.noise = rng.standard_normal((noise_bank, size[1], size[0], 3), dtype=np.float32)
        self.noise *= np.float32(camera.noise_std)

    def __call__(
        self,
        phase_index: int,
        jitter_deg: float,
        cast_deg: float,
        tools: Sequence[str],
        t: float,
        rng: np.random.Generator,
    ) -> np.ndarray:
        width, height = self.size
        x, y, _ = grid(width, height)
        img = self.background.copy()
        lay, m = self.layout, self.layout.motion
        cx = lay.organ[0] + 0.05 * math.sin(2 * math.pi * t / 7.0 + m[0])
        cy = lay.organ[1] + 0.04 * math.sin(2 * math.pi * t / 5.0 + m[1])
        # only the organ's bounding box is blended
        x0, x1 = max(0, int((cx - lay.organ[2]) * width)), min(width, int((cx + lay.organ[2]) * width) + 1)
        y0, y1 = max(0, int((cy - lay.organ[3]) * height)), min(height, int((cy + lay.organ[3]) * height) + 1)
        bx, by = x[y0:y1, x0:x1], y[y0:y1, x0:x1]
        organ = np.clip((1.0 - ((bx - cx) / lay.organ[2]) ** 2 - ((by - cy) / lay.organ[3]) ** 2) * 4.0, 0.0, 1.0)
        shade = 1.1 - 0.25 * (by - cy + 0.5 * (bx - cx))
        box = img[y0:y1, x0:x1]
        box += organ[..., None] * (_organ_colour(phase_index, jitter_deg) * shade[..., None] - box)
        paint_tools(img, tools, (cx, cy), t, port_turn(t, self.shift, lay.motion[2]))
        for k in range(2):  # specular highlights of the wet surface
            hx = (cx + 0.1 * math.cos(m[2] + 2.5 * k)) * width
            hy = (cy + 0.08 * math.sin(m[2] + 2.5 * k)) * height
            paint_segment(img, (hx, hy), (hx + 3, hy + 1), 0.015 * width + 2, np.ones(3, np.float32), 0.8)
        img *= self.vignette[..., None]
        img = (img.reshape(-1, 3) @ self.camera.matrix(cast_deg).T).reshape(img.shape)
        shift = (int(rng.integers(height)), int(rng.integers(width)))
        img += np.roll(self.noise[int(rng.integers(len(self.noise)))], shift, axis=(0, 1))
        np.clip(img, 0.0, 1.0, out=img)
        return (img * 255.0 + 0.5).astype(np.uint8)


def _sample_tools(name: str, rng: np.random.Generator) -> tuple[str, ...]:
    probs = phase_scene(name).tools
    return tuple(t for t in TOOL_NAMES if t in probs and rng.random() < probs[t])


def _check_phase_index(phase_index: int) -> str:
    names = phase_names()
    if not (isinstance(phase_index, (int, np.integer)) and 0 <= phase_index < len(names)):
        raise ConfigError(f"phase_index must be an integer in 0..{len(names) - 1}, got {phase_index!r}")
    return names[int(phase_index)]


def render_frame(
    phase_index: int, shift: float, rng: np.random.Generator, size: tuple[int, int] = (W, H)
) -> np.ndarray:
    """One independent frame (HxWx3 uint8) of the given phase, seen through a site at `shift`."""
    name = _check_phase_index(phase_index)
    camera = SiteDomain(shift).camera
    layout = _Layout.draw(rng)
    jitter = float(rng.normal(0.0, HUE_JITTER_DEG))
    cast = float(rng.normal(camera.cast_mean_deg, camera.cast_drift_deg))
    render = _Renderer(layout, camera, size, rng, noise_bank=1, shift=shift)
    return render(int(phase_index), jitter, cast, _sample_tools(name, rng), float(rng.uniform(0, 60)), rng)


def render_batch(
    phase_indices: Sequence[int],
    shift: float,
    rng: np.random.Generator,
    size: tuple[int, int] = (W, H),
    frames_per_scene: int = 16,
    vary_camera: bool = False,
) -> tuple[list[np.ndarray], list[tuple[str, ...]]]:
    """Independent frames like render_frame, and the tools present in each (as a tool file would list
    them), but `frames_per_scene` frames share one scene layout (as frames of one video do), which is
    several times faster for training sets. With `vary_camera`, each scene has its own exposure,
    saturation and noise (the cast stays the shift's)."""
    names = [_check_phase_index(k) for k in phase_indices]
    nominal = SiteDomain(shift).camera
    frames: list[np.ndarray] = []
    present: list[tuple[str, ...]] = []
    for start in range(0, len(names), frames_per_scene):
        camera = nominal.varied(rng) if vary_camera else nominal
        render = _Renderer(_Layout.draw(rng), camera, size, rng, noise_bank=4, shift=shift)
        for k in range(start, min(start + frames_per_scene, len(names))):
            jitter = float(rng.normal(0.0, HUE_JITTER_DEG))
            cast = float(rng.normal(camera.cast_mean_deg, camera.cast_drift_deg))
            tools = _sample_tools(names[k], rng)
            frames.append(render(int(phase_indices[k]), jitter, cast, tools, float(rng.uniform(0, 60)), rng))
            present.append(tools)
    return frames, present
