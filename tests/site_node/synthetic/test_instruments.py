"""Instruments in the synthetic frames: a site's ports turn with shift; the box writer encloses what the painter
drew; the source domain the tiny model is warmed up on is drawn as before."""

from __future__ import annotations

import numpy as np
import pytest

from site_node.synthetic import instruments, render
from site_node.synthetic.formats import scene_box

SIZE = (320, 240)


def _layout(seed: int) -> render._Layout:
    return render._Layout.draw(np.random.default_rng(seed))


def test_the_source_domain_is_not_turned() -> None:
    assert all(instruments.port_turn(t, render.SOURCE_SHIFT, 1.3) == 0.0 for t in np.linspace(0, 30, 50))


@pytest.mark.parametrize("shift", [0.2, 0.5, 0.8])
def test_ports_turn_with_shift(shift: float) -> None:
    turns = [instruments.port_turn(t, shift, 0.4) for t in np.arange(0, instruments.PORT_SWAY_PERIOD_S, 0.01)]
    assert np.mean(turns) == pytest.approx(shift * instruments.PORT_TURN_DEG, abs=0.1)
    assert max(turns) - min(turns) == pytest.approx(2 * shift * instruments.PORT_SWAY_DEG, rel=0.01)


@pytest.mark.parametrize("tool", [n for n in instruments.TOOL_NAMES if n in instruments.TOOL_ENTRY])
@pytest.mark.parametrize(("shift", "t"), [(0.0, 1.0), (0.5, 4.0), (0.8, 9.5)])
def test_the_box_encloses_the_painted_instrument(tool: str, shift: float, t: float) -> None:
    layout = _layout(3)
    tools = (tool,)
    draw = render._Renderer(layout, render.Camera(noise_std=0.0), SIZE, np.random.default_rng(0), shift=shift)
    with_tool, without = (draw(1, 0.0, 0.0, shown, t, np.random.default_rng(1)).astype(int) for shown in (tools, ()))
    drawn = np.abs(with_tool - without).sum(-1) > 30
    ys, xs = np.nonzero(drawn)
    x1, y1, x2, y2 = scene_box(layout, t, tools, tool, SIZE, shift)
    w, h = SIZE
    assert xs.min() >= x1 * w - 1 and xs.max() <= x2 * w + 1, (xs.min(), xs.max(), x1 * w, x2 * w)
    assert ys.min() >= y1 * h - 1 and ys.max() <= y2 * h + 1, (ys.min(), ys.max(), y1 * h, y2 * h)
    assert (x2 - x1) * (y2 - y1) < 0.5  # the instrument's box, not the frame's


def test_a_shifted_site_draws_its_instruments_elsewhere() -> None:
    layout, tools = _layout(5), ("Grasper", "Hook")
    boxes = {s: scene_box(layout, 2.0, tools, "Hook", SIZE, s) for s in (0.0, 0.2, 0.8)}
    assert boxes[0.0] != boxes[0.2] != boxes[0.8]
