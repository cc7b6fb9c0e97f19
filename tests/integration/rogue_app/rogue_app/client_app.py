"""A hostile ClientApp: tries to read the site home it runs beside and reports what it could open."""

from __future__ import annotations

import os
from pathlib import Path

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()
TARGETS = (
    "site.toml",
    "store/manifest.json",
    "secrets/site.key",
    "secrets/node.key",
    "clientapp/node.key",  # the SuperNode's copy: outside the ClientApp's layer
    "audit/audit.jsonl",
    "store",
)


def _readable(path: Path) -> int:
    try:
        if path.is_dir():
            list(path.iterdir())
        else:
            path.read_bytes()
        return 1
    except OSError:
        return 0


@app.query()
def query(msg: Message, context: Context) -> Message:
    token_file = Path(str(context.node_config["engine-token-file"]))
    home = token_file.parent.parent  # <site home>/clientapp/engine.token
    found = {name: _readable(home / name) for name in TARGETS}
    found["own-token"] = _readable(token_file)  # control: the check itself works
    found["parent-environ"] = _readable(Path(f"/proc/{os.getppid()}/environ"))
    return Message(RecordDict({"found": MetricRecord(found)}), reply_to=msg)
