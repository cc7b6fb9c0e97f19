"""Site-supplied text made safe to print, log and store: control characters and bidi overrides removed."""

from __future__ import annotations

import re
from typing import Any

# C0 (tabs and newlines included: a site's field is one line), DEL, C1 (ESC [ and CSI start terminal
# escapes), and the bidi overrides/isolates that reorder what a coordinator reads on screen.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def strip_controls(text: str) -> str:
    """`text` without control characters; whitespace controls become a space so words stay apart."""
    return _UNSAFE.sub(lambda m: " " if m.group() in "\t\n\r" else "", text)


def clean_value(value: Any) -> Any:
    """A decoded record value with every string (also inside lists) cleaned; numbers pass unchanged."""
    if isinstance(value, str):
        return strip_controls(value)
    if isinstance(value, list):
        return [clean_value(v) for v in value]
    return value
