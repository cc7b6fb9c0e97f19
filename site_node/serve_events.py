"""What `site_node serve` tells its operator about its SuperNode: when it has connected to the hub."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)
# Flower's SuperNode logs its node id once the hub has accepted (activated) its key.
_CONNECTED = "SuperNode ID:"


class SupernodeWatch:
    """Reads the SuperNode's log as it grows (from where it stood at start) and logs the connection once."""

    def __init__(self, log_file: Path, hub: str) -> None:
        self.log_file, self.hub, self.connected = log_file, hub, False
        self._offset = log_file.stat().st_size if log_file.exists() else 0
        self._partial = b""

    def poll(self) -> None:
        if self.connected:
            return
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except OSError:
            return
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        if any(_CONNECTED.encode() in line for line in lines):
            self.connected = True
            log.info("connected to the hub at %s; waiting for jobs", self.hub)
